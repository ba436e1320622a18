//! A booking's life: one seat of one schedule, from the hold to payment or
//! cancellation. The states are an enum and every move between them is a
//! function, so no code path can, say, confirm a cancelled booking.

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BookingStatus {
    /// The seat is held and waits for payment.
    Pending,
    /// Paid: the seat is the buyer's.
    Confirmed,
    /// Released, expired, or refunded: the seat is no longer the buyer's.
    Cancelled,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("a {from:?} booking cannot be {to}")]
pub struct IllegalTransition {
    pub from: BookingStatus,
    pub to: &'static str,
}

impl BookingStatus {
    /// The wire name used by the HTTP API and the read models.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "PENDING",
            BookingStatus::Confirmed => "CONFIRMED",
            BookingStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(BookingStatus::Pending),
            "CONFIRMED" => Some(BookingStatus::Confirmed),
            "CANCELLED" => Some(BookingStatus::Cancelled),
            _ => None,
        }
    }

    /// Payment succeeded for a held seat.
    pub fn confirm(self) -> Result<Self, IllegalTransition> {
        match self {
            BookingStatus::Pending => Ok(BookingStatus::Confirmed),
            from => Err(IllegalTransition {
                from,
                to: "confirmed",
            }),
        }
    }

    /// A hold released or expired, or a paid booking refunded. Cancelling twice
    /// is an error so that a refund is never counted twice.
    pub fn cancel(self) -> Result<Self, IllegalTransition> {
        match self {
            BookingStatus::Pending | BookingStatus::Confirmed => Ok(BookingStatus::Cancelled),
            from => Err(IllegalTransition {
                from,
                to: "cancelled",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BookingStatus::*;
    use super::*;

    #[test]
    fn only_pending_bookings_are_confirmed() {
        assert_eq!(Pending.confirm(), Ok(Confirmed));
        assert!(Confirmed.confirm().is_err());
        assert!(Cancelled.confirm().is_err());
    }

    #[test]
    fn a_booking_is_cancelled_once() {
        assert_eq!(Pending.cancel(), Ok(Cancelled));
        assert_eq!(Confirmed.cancel(), Ok(Cancelled));
        assert!(Cancelled.cancel().is_err());
    }

    #[test]
    fn wire_names_round_trip() {
        for s in [Pending, Confirmed, Cancelled] {
            assert_eq!(BookingStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BookingStatus::parse("pending"), None);
    }
}
