//! Money: cards as buyers type them, and a payment's life from the charge to
//! its refunds. Card values never print their digits (`Debug` masks them), and
//! every move of a payment is a function that refuses what would make the
//! amounts disagree: a refund larger than what is left, a refund of a payment
//! never completed.

use crate::error::ValidationError;
use crate::ids::{BookingId, ConcertId, PaymentId, ScheduleId, UserId};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
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

    proptest! {
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
