//! Money: cards as buyers type them, and a payment's life from the charge to
//! its refunds. Card values never print their digits (`Debug` masks them), and
//! every move of a payment is a function that refuses what would make the
//! amounts disagree: a refund larger than what is left, a refund of a payment
//! never completed.

use crate::error::ValidationError;
use crate::events::PaymentChange;
use crate::ids::{BookingId, ConcertId, PaymentId, RefundId, ScheduleId, UserId};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use thiserror::Error;

/// A card number: 12 to 19 digits passing the Luhn check. Spaces and dashes
/// as people type them are accepted and dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid =
            |message: &str| ValidationError::new("INVALID_CARD_NUMBER", "card.number", message);
        let mut digits = String::with_capacity(raw.len());
        for c in raw.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => return Err(invalid("a card number has digits only")),
            }
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(invalid("a card number has 12 to 19 digits"));
        }
        if !luhn_valid(&digits) {
            return Err(invalid("the card number is mistyped (check digit)"));
        }
        Ok(Self(digits))
    }

    /// The last four digits, the only part ever shown or stored in clear.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    /// The digits, for the payment provider and for encryption only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(****{})", self.last4())
    }
}

/// The Luhn (mod 10) check of a string of ASCII digits.
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card's expiry month, `MM/YY` or `MM/YYYY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardExpiry {
    pub month: u32,
    pub year: i32,
}

impl CardExpiry {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "INVALID_CARD_EXPIRY",
                "card.expiry",
                "the expiry is MM/YY or MM/YYYY",
            )
        };
        let (m, y) = raw.trim().split_once('/').ok_or_else(invalid)?;
        if m.len() != 2 || !(y.len() == 2 || y.len() == 4) {
            return Err(invalid());
        }
        if !m.bytes().chain(y.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let month: u32 = m.parse().map_err(|_| invalid())?;
        let mut year: i32 = y.parse().map_err(|_| invalid())?;
        if y.len() == 2 {
            year += 2000;
        }
        if !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(Self { month, year })
    }

    /// A card is valid through the last day of its expiry month.
    pub fn is_expired_on(&self, today: NaiveDate) -> bool {
        (today.year(), today.month()) > (self.year, self.month)
    }
}

/// A card security code: 3 or 4 digits. Never stored, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvc(String);

impl Cvc {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if (3..=4).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_string()))
        } else {
            Err(ValidationError::new(
                "INVALID_CVC",
                "card.cvc",
                "the security code has 3 or 4 digits",
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

/// A card as a buyer submits it, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    pub number: CardNumber,
    pub expiry: CardExpiry,
    pub cvc: Cvc,
}

impl Card {
    /// Checks every field; an expired card is refused here, before any
    /// provider is asked.
    pub fn parse(
        number: &str,
        expiry: &str,
        cvc: &str,
        today: NaiveDate,
    ) -> Result<Self, ValidationError> {
        let card = Self {
            number: CardNumber::parse(number)?,
            expiry: CardExpiry::parse(expiry)?,
            cvc: Cvc::parse(cvc)?,
        };
        if card.expiry.is_expired_on(today) {
            return Err(ValidationError::new(
                "CARD_EXPIRED",
                "card.expiry",
                "the card has expired",
            ));
        }
        Ok(card)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// The charge is under way (or its outcome is not known yet).
    Waiting,
    Completed,
    /// Declined or failed: nothing was charged.
    Failed,
    /// Refunded in full.
    Canceled,
    /// Refunded in part.
    PartCanceled,
}

impl PaymentStatus {
    /// The wire name of the HTTP API and the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Waiting => "WAITING",
            PaymentStatus::Completed => "COMPLETED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Canceled => "CANCELED",
            PaymentStatus::PartCanceled => "PART_CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            PaymentStatus::Waiting,
            PaymentStatus::Completed,
            PaymentStatus::Failed,
            PaymentStatus::Canceled,
            PaymentStatus::PartCanceled,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PaymentError {
    #[error("a {0:?} payment cannot be {1}")]
    IllegalTransition(PaymentStatus, &'static str),
    #[error("a refund must be positive (got {0})")]
    NonPositiveRefund(i64),
    #[error("a refund of {asked} exceeds the {left} left to refund")]
    RefundTooLarge { asked: i64, left: i64 },
}

/// The amounts of one payment and where it stands. Amounts are whole currency
/// units (KRW has no minor unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentLedger {
    pub status: PaymentStatus,
    pub total_price: i64,
    pub refund_price: i64,
}

impl PaymentLedger {
    pub fn new(total_price: i64) -> Self {
        Self {
            status: PaymentStatus::Waiting,
            total_price,
            refund_price: 0,
        }
    }

    /// The provider confirmed the charge.
    pub fn complete(self) -> Result<Self, PaymentError> {
        match self.status {
            PaymentStatus::Waiting => Ok(Self {
                status: PaymentStatus::Completed,
                ..self
            }),
            s => Err(PaymentError::IllegalTransition(s, "completed")),
        }
    }

    /// The provider declined, or the charge failed without taking money.
    pub fn fail(self) -> Result<Self, PaymentError> {
        match self.status {
            PaymentStatus::Waiting => Ok(Self {
                status: PaymentStatus::Failed,
                ..self
            }),
            s => Err(PaymentError::IllegalTransition(s, "failed")),
        }
    }

    /// What is left to refund.
    pub fn refundable(&self) -> i64 {
        match self.status {
            PaymentStatus::Completed | PaymentStatus::PartCanceled => {
                self.total_price - self.refund_price
            }
            _ => 0,
        }
    }

    /// Refunds `amount`: PART_CANCELED while something is left, CANCELED once
    /// everything is refunded.
    pub fn refund(self, amount: i64) -> Result<Self, PaymentError> {
        if !matches!(
            self.status,
            PaymentStatus::Completed | PaymentStatus::PartCanceled
        ) {
            return Err(PaymentError::IllegalTransition(self.status, "refunded"));
        }
        if amount <= 0 {
            return Err(PaymentError::NonPositiveRefund(amount));
        }
        let left = self.refundable();
        if amount > left {
            return Err(PaymentError::RefundTooLarge {
                asked: amount,
                left,
            });
        }
        let refund_price = self.refund_price + amount;
        Ok(Self {
            status: if refund_price == self.total_price {
                PaymentStatus::Canceled
            } else {
                PaymentStatus::PartCanceled
            },
            refund_price,
            ..self
        })
    }
}

/// A payment as the platform records it: the product spec's payment row. The
/// store is its system of record; it changes only through [`PaymentLedger`]
/// transitions, compare-and-set on the ledger it was read with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub schedule_id: ScheduleId,
    pub concert_id: ConcertId,
    pub booking_ids: Vec<BookingId>,
    pub ledger: PaymentLedger,
    /// The only digits kept in clear.
    pub card_last4: String,
    /// The card number, encrypted and bound to this payment.
    pub card_cipher: String,
    /// The provider's key for the charge, once it is known.
    pub payment_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every change: the store changes a record only if it still
    /// has the revision the change was computed from.
    #[serde(default)]
    pub revision: u64,
    /// Refunds in the order they were asked for. At most one is in flight
    /// (`refunded_at` unset): it is finished before another may start.
    #[serde(default)]
    pub refunds: Vec<Refund>,
}

/// Some bookings of a payment, refunded or being refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: RefundId,
    pub booking_ids: Vec<BookingId>,
    pub amount: i64,
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// When the provider gave the money back; `None` while in flight.
    pub refunded_at: Option<DateTime<Utc>>,
}

/// Why a refund cannot be asked for.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefundError {
    #[error("the payment is {0:?}; only a completed payment can be refunded")]
    NotPaid(PaymentStatus),
    #[error("the payment is cancelled already")]
    AlreadyCanceled,
    #[error("booking {0} is cancelled already")]
    BookingAlreadyCancelled(BookingId),
    #[error("booking {0} is not part of this payment")]
    NotInPayment(BookingId),
    #[error("name at least one booking, each once")]
    InvalidBookings,
    #[error("refund {0} of this payment is still in flight")]
    InFlight(RefundId),
}

impl PaymentRecord {
    /// Every booking of a payment costs the same (one price per schedule), so a
    /// refund's amount follows from how many bookings it names.
    pub fn unit_price(&self) -> i64 {
        match self.booking_ids.len() as i64 {
            0 => 0,
            n => self.ledger.total_price / n,
        }
    }

    pub fn refund(&self, id: RefundId) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == id)
    }

    pub fn refund_in_flight(&self) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refunded_at.is_none())
    }

    /// Bookings refunded or being refunded.
    pub fn cancelled_bookings(&self) -> BTreeSet<BookingId> {
        self.refunds
            .iter()
            .flat_map(|r| r.booking_ids.iter().copied())
            .collect()
    }

    /// Since when the payment needs finishing (a charge or a refund whose
    /// outcome is not recorded yet), for the sweeper.
    pub fn in_flight_since(&self) -> Option<DateTime<Utc>> {
        if self.ledger.status == PaymentStatus::Waiting {
            return Some(self.created_at);
        }
        self.refund_in_flight().map(|r| r.requested_at)
    }

    /// The same record one change later.
    fn next(&self, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        next.revision += 1;
        next.updated_at = now.max(self.updated_at);
        next
    }

    /// Moves the ledger (charge outcomes).
    pub fn with_ledger(
        &self,
        ledger: PaymentLedger,
        payment_key: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut next = self.next(now);
        next.ledger = ledger;
        next.payment_key = payment_key;
        next
    }

    /// Asks for a refund of `bookings` (all not yet cancelled when `None`).
    /// The money has not moved yet: the refund is in flight until
    /// [`finish_refund`](Self::finish_refund).
    pub fn request_refund(
        &self,
        refund_id: RefundId,
        bookings: Option<&[BookingId]>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, RefundError> {
        match self.ledger.status {
            PaymentStatus::Completed | PaymentStatus::PartCanceled => {}
            PaymentStatus::Canceled => return Err(RefundError::AlreadyCanceled),
            s => return Err(RefundError::NotPaid(s)),
        }
        if let Some(r) = self.refund_in_flight() {
            return Err(RefundError::InFlight(r.refund_id));
        }
        let cancelled = self.cancelled_bookings();
        let booking_ids: Vec<BookingId> = match bookings {
            None => self
                .booking_ids
                .iter()
                .filter(|b| !cancelled.contains(b))
                .copied()
                .collect(),
            Some(named) => {
                let unique: BTreeSet<_> = named.iter().collect();
                if named.is_empty() || unique.len() != named.len() {
                    return Err(RefundError::InvalidBookings);
                }
                for b in named {
                    if !self.booking_ids.contains(b) {
                        return Err(RefundError::NotInPayment(*b));
                    }
                    if cancelled.contains(b) {
                        return Err(RefundError::BookingAlreadyCancelled(*b));
                    }
                }
                named.to_vec()
            }
        };
        if booking_ids.is_empty() {
            return Err(RefundError::AlreadyCanceled);
        }
        // The last refund takes what is left, so rounding can never leave a
        // remainder unrefunded.
        let amount = if cancelled.len() + booking_ids.len() == self.booking_ids.len() {
            self.ledger.refundable()
        } else {
            self.unit_price() * booking_ids.len() as i64
        };
        let mut next = self.next(now);
        next.refunds.push(Refund {
            refund_id,
            booking_ids,
            amount,
            reason: reason.to_string(),
            requested_at: now,
            refunded_at: None,
        });
        Ok(next)
    }

    /// The provider gave the money back: the ledger moves by the refund's
    /// amount.
    pub fn finish_refund(&self, id: RefundId, now: DateTime<Utc>) -> Result<Self, PaymentError> {
        let Some(i) = self
            .refunds
            .iter()
            .position(|r| r.refund_id == id && r.refunded_at.is_none())
        else {
            return Err(PaymentError::IllegalTransition(
                self.ledger.status,
                "refunded twice",
            ));
        };
        let mut next = self.next(now);
        next.ledger = self.ledger.refund(self.refunds[i].amount)?;
        next.refunds[i].refunded_at = Some(now);
        Ok(next)
    }

    /// The charge landed after the payment window and the seats went back on
    /// sale: the money is given back at once, as a refund of every booking
    /// (so the books show the charge and its refund, not nothing).
    pub fn charged_too_late(
        &self,
        payment_key: String,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, PaymentError> {
        let completed = self.ledger.complete()?;
        let mut next = self.with_ledger(
            completed.refund(completed.total_price)?,
            Some(payment_key),
            now,
        );
        next.refunds.push(Refund {
            refund_id: RefundId::of_late_charge(self.payment_id),
            booking_ids: self.booking_ids.clone(),
            amount: completed.total_price,
            reason: reason.to_string(),
            requested_at: now,
            refunded_at: Some(now),
        });
        Ok(next)
    }

    /// What happened between `before` (the record as it was; `None` for one
    /// not recorded before) and this record, in the order it happened. With
    /// `None` it is the payment's whole history, for publishing it again.
    pub fn changes_since(&self, before: Option<&PaymentRecord>) -> Vec<PaymentChange> {
        let mut out = Vec::new();
        if before.is_none() {
            out.push(PaymentChange::Started);
        }
        let was_waiting = before.is_none_or(|b| b.ledger.status == PaymentStatus::Waiting);
        match self.ledger.status {
            PaymentStatus::Waiting => {}
            PaymentStatus::Failed if was_waiting => out.push(PaymentChange::Failed),
            PaymentStatus::Failed => {}
            _ if was_waiting => out.push(PaymentChange::Completed),
            _ => {}
        }
        for r in self.refunds.iter().filter(|r| r.refunded_at.is_some()) {
            let known = before
                .and_then(|b| b.refund(r.refund_id))
                .is_some_and(|old| old.refunded_at.is_some());
            if !known {
                out.push(PaymentChange::Refunded(r.clone()));
            }
        }
        out
    }

    /// The refund could not happen (the seats were not refundable): it is
    /// forgotten, and nothing was paid back.
    pub fn drop_refund(&self, id: RefundId, now: DateTime<Utc>) -> Self {
        let mut next = self.next(now);
        next.refunds
            .retain(|r| !(r.refund_id == id && r.refunded_at.is_none()));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEST_CARDS: [&str; 4] = [
        "4242424242424242",
        "4000000000000002",
        "4000000000009995",
        "4000000000000119",
    ];

    #[test]
    fn the_test_cards_are_valid_and_never_printed() {
        for n in TEST_CARDS {
            let card = CardNumber::parse(n).unwrap();
            assert_eq!(card.expose(), n);
            let shown = format!("{card:?}");
            assert!(!shown.contains(&n[..12]), "{shown}");
            assert!(shown.ends_with(&format!("{})", &n[12..])), "{shown}");
        }
        let spaced = CardNumber::parse("4242 4242-4242 4242").unwrap();
        assert_eq!(spaced.expose(), "4242424242424242");
        assert_eq!(spaced.last4(), "4242");
    }

    #[test]
    fn mistyped_numbers_are_refused() {
        for bad in [
            "4242424242424241",
            "42424242",
            "4242a24242424242",
            "",
            "42424242424242424242",
        ] {
            let e = CardNumber::parse(bad).unwrap_err();
            assert_eq!(e.code, "INVALID_CARD_NUMBER", "{bad}");
            assert!(
                !e.message.contains("4242"),
                "no digits echoed: {}",
                e.message
            );
        }
    }

    #[test]
    fn expiry_and_cvc() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert_eq!(
            CardExpiry::parse("12/29").unwrap(),
            CardExpiry {
                month: 12,
                year: 2029
            }
        );
        assert_eq!(CardExpiry::parse("01/2031").unwrap().year, 2031);
        for bad in ["13/29", "00/29", "1/29", "12-29", "ab/cd", "12/295"] {
            assert_eq!(
                CardExpiry::parse(bad).unwrap_err().code,
                "INVALID_CARD_EXPIRY"
            );
        }
        assert!(!CardExpiry::parse("11/26").unwrap().is_expired_on(today));
        assert!(CardExpiry::parse("10/26").unwrap().is_expired_on(today));
        assert_eq!(
            Card::parse("4242424242424242", "10/26", "123", today)
                .unwrap_err()
                .code,
            "CARD_EXPIRED"
        );
        assert!(Card::parse("4242424242424242", "11/26", "1234", today).is_ok());
        for bad in ["12", "12345", "12a"] {
            assert_eq!(Cvc::parse(bad).unwrap_err().code, "INVALID_CVC");
        }
        assert_eq!(format!("{:?}", Cvc::parse("987").unwrap()), "Cvc(***)");
    }

    #[test]
    fn a_payment_moves_only_forward() {
        let p = PaymentLedger::new(300);
        assert_eq!(
            p.refund(100),
            Err(PaymentError::IllegalTransition(
                PaymentStatus::Waiting,
                "refunded"
            ))
        );
        let failed = p.fail().unwrap();
        assert_eq!(failed.status, PaymentStatus::Failed);
        assert!(failed.complete().is_err());
        assert!(failed.refund(1).is_err());
        let done = p.complete().unwrap();
        assert!(done.complete().is_err());
        assert!(done.fail().is_err());
        let part = done.refund(100).unwrap();
        assert_eq!(
            (part.status, part.refund_price),
            (PaymentStatus::PartCanceled, 100)
        );
        assert_eq!(
            part.refund(201),
            Err(PaymentError::RefundTooLarge {
                asked: 201,
                left: 200
            })
        );
        assert_eq!(part.refund(0), Err(PaymentError::NonPositiveRefund(0)));
        let all = part.refund(200).unwrap();
        assert_eq!(
            (all.status, all.refund_price),
            (PaymentStatus::Canceled, 300)
        );
        assert_eq!(all.refundable(), 0);
        assert!(
            all.refund(1).is_err(),
            "a cancelled payment refunds nothing more"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            PaymentStatus::Waiting,
            PaymentStatus::Completed,
            PaymentStatus::Failed,
            PaymentStatus::Canceled,
            PaymentStatus::PartCanceled,
        ] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PaymentStatus::parse("DONE"), None);
    }

    fn paid(bookings: usize, total: i64) -> PaymentRecord {
        let at = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).unwrap();
        PaymentRecord {
            payment_id: PaymentId::from_uuid(uuid::Uuid::from_u128(1)),
            user_id: UserId::from_uuid(uuid::Uuid::from_u128(2)),
            schedule_id: ScheduleId::from_uuid(uuid::Uuid::from_u128(3)),
            concert_id: ConcertId::from_uuid(uuid::Uuid::from_u128(4)),
            booking_ids: (0..bookings as u128)
                .map(|i| BookingId::from_uuid(uuid::Uuid::from_u128(100 + i)))
                .collect(),
            ledger: PaymentLedger::new(total).complete().unwrap(),
            card_last4: "4242".into(),
            card_cipher: String::new(),
            payment_key: Some("pk".into()),
            created_at: at,
            updated_at: at,
            revision: 1,
            refunds: vec![],
        }
    }

    fn rid(n: u128) -> RefundId {
        RefundId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_partial_then_a_full_refund() {
        let p = paid(3, 150_000);
        let now = p.created_at;
        let b = p.booking_ids.clone();
        let asked = p
            .request_refund(rid(1), Some(&b[..1]), "cannot come", now)
            .unwrap();
        assert_eq!(asked.revision, 2);
        assert_eq!(asked.ledger, p.ledger, "no money moved yet");
        assert_eq!(asked.refund_in_flight().unwrap().amount, 50_000);
        assert_eq!(asked.in_flight_since(), Some(now));
        // One refund at a time.
        assert_eq!(
            asked.request_refund(rid(2), None, "x", now),
            Err(RefundError::InFlight(rid(1)))
        );
        let part = asked.finish_refund(rid(1), now).unwrap();
        assert_eq!(part.ledger.status, PaymentStatus::PartCanceled);
        assert_eq!(part.ledger.refund_price, 50_000);
        assert_eq!(part.in_flight_since(), None);
        assert!(part.finish_refund(rid(1), now).is_err(), "never twice");
        assert_eq!(
            part.request_refund(rid(2), Some(&b[..1]), "again", now),
            Err(RefundError::BookingAlreadyCancelled(b[0]))
        );
        let rest = part.request_refund(rid(3), None, "all", now).unwrap();
        assert_eq!(rest.refund(rid(3)).unwrap().booking_ids, b[1..].to_vec());
        let all = rest.finish_refund(rid(3), now).unwrap();
        assert_eq!(all.ledger.status, PaymentStatus::Canceled);
        assert_eq!(all.ledger.refund_price, 150_000);
        assert_eq!(
            all.request_refund(rid(4), None, "x", now),
            Err(RefundError::AlreadyCanceled)
        );
    }

    #[test]
    fn refunds_are_refused_for_what_is_not_refundable() {
        let p = paid(2, 100);
        let now = p.created_at;
        let stranger = BookingId::from_uuid(uuid::Uuid::from_u128(999));
        assert_eq!(
            p.request_refund(rid(1), Some(&[stranger]), "x", now),
            Err(RefundError::NotInPayment(stranger))
        );
        let b = p.booking_ids[0];
        assert_eq!(
            p.request_refund(rid(1), Some(&[b, b]), "x", now),
            Err(RefundError::InvalidBookings)
        );
        assert_eq!(
            p.request_refund(rid(1), Some(&[]), "x", now),
            Err(RefundError::InvalidBookings)
        );
        let mut waiting = p.clone();
        waiting.ledger = PaymentLedger::new(100);
        assert_eq!(
            waiting.request_refund(rid(1), None, "x", now),
            Err(RefundError::NotPaid(PaymentStatus::Waiting))
        );
        // A refund the seats refused is forgotten; the next one may go.
        let asked = p.request_refund(rid(1), None, "x", now).unwrap();
        let dropped = asked.drop_refund(rid(1), now);
        assert!(dropped.refunds.is_empty());
        assert_eq!(dropped.revision, asked.revision + 1);
        assert!(dropped.request_refund(rid(2), None, "x", now).is_ok());
    }

    fn kinds(changes: &[PaymentChange]) -> Vec<String> {
        changes.iter().map(PaymentChange::key).collect()
    }

    #[test]
    fn each_change_is_published_once_and_the_whole_history_replays() {
        let p = paid(2, 100);
        let now = p.created_at;
        let mut waiting = p.clone();
        waiting.ledger = PaymentLedger::new(100);
        waiting.revision = 0;
        assert_eq!(kinds(&waiting.changes_since(None)), ["started"]);
        assert_eq!(kinds(&p.changes_since(Some(&waiting))), ["completed"]);
        let failed = waiting.with_ledger(waiting.ledger.fail().unwrap(), None, now);
        assert_eq!(kinds(&failed.changes_since(Some(&waiting))), ["failed"]);
        assert_eq!(kinds(&failed.changes_since(None)), ["started", "failed"]);
        let asked = p
            .request_refund(rid(7), Some(&p.booking_ids[..1]), "x", now)
            .unwrap();
        assert!(
            asked.changes_since(Some(&p)).is_empty(),
            "nothing moved yet"
        );
        let part = asked.finish_refund(rid(7), now).unwrap();
        let refund = part.refund(rid(7)).unwrap().clone();
        assert_eq!(
            part.changes_since(Some(&asked)),
            vec![PaymentChange::Refunded(refund)]
        );
        assert_eq!(
            kinds(&part.changes_since(None)),
            ["started", "completed", &format!("refunded-{}", rid(7))]
        );
        // A refund the seats refused moved no money and says nothing.
        let dropped = asked.drop_refund(rid(7), now);
        assert!(dropped.changes_since(Some(&asked)).is_empty());
    }

    #[test]
    fn a_late_charge_is_completed_and_refunded_in_one_change() {
        let mut waiting = paid(3, 100);
        waiting.ledger = PaymentLedger::new(100);
        let now = waiting.created_at;
        let late = waiting
            .charged_too_late("pk".into(), "too late", now)
            .unwrap();
        assert_eq!(late.ledger.status, PaymentStatus::Canceled);
        assert_eq!(late.ledger.refund_price, 100);
        assert_eq!(late.cancelled_bookings().len(), 3);
        assert_eq!(late.in_flight_since(), None);
        let refund_id = RefundId::of_late_charge(late.payment_id);
        assert_eq!(
            kinds(&late.changes_since(Some(&waiting))),
            ["completed", &format!("refunded-{refund_id}")]
        );
        assert!(
            late.charged_too_late("pk".into(), "x", now).is_err(),
            "only from WAITING"
        );
    }

    proptest! {
        /// Refunding bookings in any grouping refunds exactly the total once
        /// every booking is cancelled, even when the total does not divide
        /// evenly.
        #[test]
        fn refunds_in_any_grouping_add_up_to_the_total(
            n in 1usize..8, total in 1i64..1_000_000, groups in prop::collection::vec(1usize..4, 1..10),
        ) {
            let mut p = paid(n, total);
            let now = p.created_at;
            let mut k = 0u128;
            for g in groups {
                let left: Vec<BookingId> = p.booking_ids.iter()
                    .filter(|b| !p.cancelled_bookings().contains(b)).copied().take(g).collect();
                if left.is_empty() {
                    break;
                }
                k += 1;
                p = p.request_refund(rid(k), Some(&left), "r", now).unwrap()
                    .finish_refund(rid(k), now).unwrap();
                prop_assert!(p.ledger.refund_price <= total);
            }
            let all_cancelled = p.cancelled_bookings().len() == n;
            prop_assert_eq!(all_cancelled, p.ledger.refund_price == total);
            prop_assert_eq!(all_cancelled, p.ledger.status == PaymentStatus::Canceled);
        }

        /// Publishing each change as it happens and replaying the whole
        /// history tell the same story, and the money in it adds up: the
        /// charge minus the refunds is what the payment keeps.
        #[test]
        fn published_changes_match_the_history_and_add_up(
            n in 1usize..6, total in 1i64..100_000, groups in prop::collection::vec(1usize..3, 0..6),
        ) {
            let mut p = paid(n, total);
            let now = p.created_at;
            let mut waiting = p.clone();
            waiting.ledger = PaymentLedger::new(total);
            let mut published = waiting.changes_since(None);
            published.extend(p.changes_since(Some(&waiting)));
            for (k, g) in groups.into_iter().enumerate() {
                let left: Vec<BookingId> = p.booking_ids.iter()
                    .filter(|b| !p.cancelled_bookings().contains(b)).copied().take(g).collect();
                if left.is_empty() {
                    break;
                }
                let asked = p.request_refund(rid(k as u128), Some(&left), "r", now).unwrap();
                published.extend(asked.changes_since(Some(&p)));
                let done = asked.finish_refund(rid(k as u128), now).unwrap();
                published.extend(done.changes_since(Some(&asked)));
                p = done;
            }
            prop_assert_eq!(&published, &p.changes_since(None));
            let refunded: i64 = published.iter().map(|c| match c {
                PaymentChange::Refunded(r) => r.amount,
                _ => 0,
            }).sum();
            prop_assert_eq!(refunded, p.ledger.refund_price);
        }

        /// Whatever refunds are asked, the refunded amount never exceeds the
        /// total, and the status says CANCELED exactly when all is refunded.
        #[test]
        fn refunds_never_exceed_the_total(total in 1i64..10_000, asks in prop::collection::vec(-5i64..4_000, 0..20)) {
            let mut p = PaymentLedger::new(total).complete().unwrap();
            for a in asks {
                let before = p;
                match p.refund(a) {
                    Ok(next) => {
                        prop_assert_eq!(next.refund_price, before.refund_price + a);
                        p = next;
                    }
                    Err(_) => prop_assert_eq!(p, before),
                }
                prop_assert!(p.refund_price <= p.total_price);
                prop_assert_eq!(p.status == PaymentStatus::Canceled, p.refund_price == p.total_price);
                prop_assert_eq!(p.refundable(), p.total_price - p.refund_price);
            }
        }

        /// Any number with a correct check digit parses; changing one digit
        /// breaks the check.
        #[test]
        fn luhn_catches_a_changed_digit(body in prop::collection::vec(0u8..10, 11..18), at in 0usize..18, delta in 1u8..10) {
            let mut digits: String = body.iter().map(|d| char::from(b'0' + d)).collect();
            let check = (0..10).find(|c| luhn_valid(&format!("{digits}{c}"))).unwrap();
            digits.push(char::from(b'0' + check));
            prop_assert!(CardNumber::parse(&digits).is_ok());
            let i = at % digits.len();
            let mut bytes = digits.into_bytes();
            bytes[i] = b'0' + (bytes[i] - b'0' + delta) % 10;
            prop_assert!(CardNumber::parse(&String::from_utf8(bytes).unwrap()).is_err());
        }
    }
}
