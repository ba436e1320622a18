//! The vocabulary of the schedule processor: its inputs (commands), its outputs
//! (facts and replies), and the states of seats and queue entries.

use crate::ids::{BookingId, CommandId, PaymentId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Knobs that shape decisions. They are inputs of `decide`, like time: replaying
/// with the same settings gives the same decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Buyers of one schedule ADMITTED at once.
    pub max_active: u32,
    /// How long an admission lasts.
    pub admission_ttl_secs: i64,
    /// How long a hold lasts before its seats go back on sale.
    pub hold_ttl_secs: i64,
    /// How long a started payment keeps its bookings from expiring.
    pub payment_ttl_secs: i64,
    /// Seats one buyer may hold or own in one schedule.
    pub max_seats_per_user: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_active: 500,
            admission_ttl_secs: 600,
            hold_ttl_secs: 300,
            payment_ttl_secs: 120,
            max_seats_per_user: 4,
        }
    }
}

/// A seat, 1-based, as buyers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeatRef {
    pub row: u16,
    pub col: u16,
}

/// What a buyer (through the ingress) or the clock asks of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Join {
        user: UserId,
    },
    Leave {
        user: UserId,
    },
    /// `booking_ids` are minted by the ingress, one per seat, so a retried
    /// command names the same bookings.
    Hold {
        user: UserId,
        seats: Vec<SeatRef>,
        booking_ids: Vec<BookingId>,
    },
    Release {
        user: UserId,
        booking_id: BookingId,
    },
    /// The clock's pulse: fires due timers (and opens the sale) on an otherwise
    /// idle schedule.
    Tick,
    /// A payment is about to charge for these held bookings: they can neither
    /// expire nor be released until it completes, aborts, or its window
    /// (`Settings::payment_ttl_secs`) runs out.
    StartPayment {
        user: UserId,
        payment_id: PaymentId,
        booking_ids: Vec<BookingId>,
    },
    /// The charge went through: the seats are SOLD.
    CompletePayment {
        payment_id: PaymentId,
    },
    /// The charge did not happen (declined): the bookings are held again until
    /// their hold runs out.
    AbortPayment {
        payment_id: PaymentId,
    },
    /// Money was returned for these sold bookings: their seats are on sale again.
    Refund {
        payment_id: PaymentId,
        booking_ids: Vec<BookingId>,
    },
}

/// A command with what the core needs from the outside world: its identity, the
/// time, and a random seed (used only if this command opens the sale).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub command_id: CommandId,
    pub at: DateTime<Utc>,
    pub seed: u64,
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSeat {
    pub booking_id: BookingId,
    pub seat: SeatRef,
}

/// Why a started payment ended without a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// The provider declined or failed the charge.
    NotCharged,
    /// No outcome came within the payment window.
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReason {
    /// The buyer released the hold.
    Released,
    /// The hold ran out.
    Expired,
}

/// What happened. Facts are the processor's output and its changelog: applying
/// a schedule's facts in order to its initial state rebuilds its state exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// The command that caused it (a tick's id for timer-driven facts).
    pub command_id: CommandId,
    pub at: DateTime<Utc>,
    pub kind: FactKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactKind {
    /// `position` is `None` for a buyer who joined before the sale opened: their
    /// place is drawn at the opening.
    QueueJoined {
        user: UserId,
        position: Option<u64>,
    },
    /// The sale opened; everyone who joined before was placed in the order that
    /// `seed` shuffles them into.
    QueueOpened {
        seed: u64,
    },
    Admitted {
        user: UserId,
        position: u64,
        until: DateTime<Utc>,
    },
    AdmissionExpired {
        user: UserId,
    },
    QueueLeft {
        user: UserId,
    },
    SeatsHeld {
        user: UserId,
        seats: Vec<HeldSeat>,
        until: DateTime<Utc>,
    },
    BookingsCancelled {
        user: UserId,
        seats: Vec<HeldSeat>,
        reason: CancelReason,
    },
    PaymentStarted {
        user: UserId,
        payment_id: PaymentId,
        seats: Vec<HeldSeat>,
        until: DateTime<Utc>,
    },
    /// The payment's bookings are CONFIRMED and their seats SOLD.
    SeatsSold {
        user: UserId,
        payment_id: PaymentId,
        seats: Vec<HeldSeat>,
    },
    PaymentAborted {
        user: UserId,
        payment_id: PaymentId,
        reason: AbortReason,
    },
    /// Sold bookings refunded: CANCELLED, their seats AVAILABLE again.
    SeatsRefunded {
        user: UserId,
        payment_id: PaymentId,
        seats: Vec<HeldSeat>,
    },
    /// The command was decided and changed nothing (a rejection, a repeated
    /// join). Recorded so that a redelivery of it, after the state has moved
    /// on, is still recognised and not acted on.
    Unchanged,
}

/// Why a command changed nothing. Each maps to one HTTP status and code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// Not ADMITTED now (never joined, still waiting, expired or left).
    NotAdmitted,
    /// Some seats are held or sold by someone else.
    SeatUnavailable {
        seats: Vec<SeatRef>,
    },
    /// The hold would take the buyer over the per-buyer limit.
    SeatLimit {
        limit: u32,
        already: u32,
    },
    /// A seat outside the stage.
    InvalidSeat {
        seat: SeatRef,
    },
    /// The same seat twice in one request.
    DuplicateSeat {
        seat: SeatRef,
    },
    /// An empty seat list, or booking ids that don't match the seats.
    EmptyHold,
    BookingNotFound,
    NotOwner,
    /// A booking that is being paid for, or is paid already.
    BookingNotPending,
    /// No payment in progress with this id (never started, already ended, or
    /// its window ran out): a charge that completes now must be refunded.
    PaymentNotInProgress,
    /// A refund of bookings that this payment did not buy, or no longer owns.
    NotRefundable,
    /// The show has started: nobody joins, holds or starts paying any more.
    SaleClosed,
}

/// A buyer's place in the waiting room, as they are told it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueStatus {
    /// `position` is `None` until the sale opens (the order is drawn then).
    Waiting {
        position: Option<u64>,
        ahead: Option<u64>,
        eta_seconds: Option<u64>,
    },
    Admitted {
        position: u64,
        until: DateTime<Utc>,
    },
    Expired,
    Left,
    SoldOut,
    NotInQueue,
}

/// The answer to the command's sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// This command put the buyer in line; their place now.
    Joined(QueueStatus),
    /// The buyer was in line already (or the answer to a command that did not
    /// join): their place now.
    Queue(QueueStatus),
    Left,
    Held {
        booking_ids: Vec<BookingId>,
        until: DateTime<Utc>,
    },
    Released,
    Rejected(Rejection),
    /// The payment may charge `total_price` for these bookings.
    PaymentStarted {
        seats: Vec<HeldSeat>,
        total_price: i64,
        until: DateTime<Utc>,
    },
    Sold {
        booking_ids: Vec<BookingId>,
    },
    PaymentAborted,
    Refunded {
        booking_ids: Vec<BookingId>,
        amount: i64,
    },
    /// No such schedule on this partition (never created, or not yet).
    UnknownSchedule,
    /// Ticks answer nobody.
    None,
}

/// What one command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub facts: Vec<Fact>,
    pub reply: Reply,
}

/// A buyer's entry in a schedule's waiting room, as the read models store it.
/// Time-dependent answers (an admission that has run out) are worked out when
/// it is read, by [`QueueEntry::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEntry {
    /// Joined before the opening; the position is drawn at the opening.
    PreQueue,
    Waiting {
        position: u64,
    },
    Admitted {
        position: u64,
        until: DateTime<Utc>,
    },
    Expired,
    Left,
}

/// The oldest and newest of a schedule's recent admission samples (time,
/// admissions so far): the measured admission rate behind a waiting buyer's ETA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub first: Option<(DateTime<Utc>, u64)>,
    pub last: Option<(DateTime<Utc>, u64)>,
}

impl RateWindow {
    /// Seconds until `ahead` more buyers are admitted, at the measured rate;
    /// before any measurement (or when the measurement is slower), the slowest
    /// rate the settings allow: every slot turning over once per admission
    /// window.
    pub fn eta_seconds(&self, settings: &Settings, ahead: u64) -> u64 {
        let floor_rate =
            f64::from(settings.max_active.max(1)) / settings.admission_ttl_secs.max(1) as f64;
        let measured = match (self.first, self.last) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 && n1 > n0 => {
                let secs = (t1 - t0).num_milliseconds() as f64 / 1000.0;
                Some((n1 - n0) as f64 / secs)
            }
            _ => None,
        };
        let rate = measured.map_or(floor_rate, |r| r.max(floor_rate));
        ((ahead + 1) as f64 / rate).ceil() as u64
    }
}

impl QueueEntry {
    /// What the buyer is told at `now`; `ahead` (waiting buyers with a smaller
    /// position) matters only to a waiting entry. Once every seat is sold
    /// (`sold_out`), a buyer still in line is told so.
    pub fn status(
        &self,
        settings: &Settings,
        ahead: u64,
        rate: &RateWindow,
        sold_out: bool,
        now: DateTime<Utc>,
    ) -> QueueStatus {
        if sold_out
            && matches!(
                self,
                QueueEntry::PreQueue | QueueEntry::Waiting { .. } | QueueEntry::Admitted { .. }
            )
        {
            return QueueStatus::SoldOut;
        }
        match *self {
            QueueEntry::PreQueue => QueueStatus::Waiting {
                position: None,
                ahead: None,
                eta_seconds: None,
            },
            QueueEntry::Waiting { position } => QueueStatus::Waiting {
                position: Some(position),
                ahead: Some(ahead),
                eta_seconds: Some(rate.eta_seconds(settings, ahead)),
            },
            QueueEntry::Admitted { position, until } if until > now => {
                QueueStatus::Admitted { position, until }
            }
            QueueEntry::Admitted { .. } | QueueEntry::Expired => QueueStatus::Expired,
            QueueEntry::Left => QueueStatus::Left,
        }
    }
}
