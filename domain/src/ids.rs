//! Typed identifiers, so a stage id can never be passed where a schedule id is
//! expected. They are minted at the edge (UUIDv7, time-ordered, which keeps CQL
//! partitions and Kafka keys well spread) and passed into the core.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// An account: buyer, seller or manager.
    UserId
);
id_type!(
    /// A venue layout (rows x cols).
    StageId
);
id_type!(
    /// A show sold by a seller, played on one stage.
    ConcertId
);
id_type!(
    /// One performance of a concert; the unit that owns a waiting room and a seat map,
    /// and the Kafka key of everything about it.
    ScheduleId
);
id_type!(
    /// The identity of one event, used to deduplicate deliveries.
    EventId
);
id_type!(
    /// One seat of one hold: the product spec's booking row.
    BookingId
);
id_type!(
    /// The identity of one client command, minted by the ingress (or sent by the
    /// client to retry safely); processors answer a repeated id with the first
    /// answer instead of acting twice.
    CommandId
);
id_type!(
    /// One payment for some of a buyer's bookings: the product spec's payment
    /// row, and the order id the payment provider knows it by.
    PaymentId
);
id_type!(
    /// One refund of some of a payment's bookings; the idempotency key the
    /// payment provider sees for its cancellation.
    RefundId
);

/// A UUID derived from parts by hashing, stamped as a version-8 UUID: the same
/// parts always give the same id (a retried request names the same command, a
/// change published twice gets the same event id), and no derived id collides
/// with a minted v7.
pub fn derived_uuid(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

impl RefundId {
    /// The refund of a charge that landed after its payment window: one per
    /// payment, so its provider call and its record are named alike on every
    /// attempt.
    pub fn of_late_charge(payment: PaymentId) -> Self {
        Self(derived_uuid(&[
            b"refund-late",
            payment.as_uuid().as_bytes(),
        ]))
    }
}

#[cfg(test)]
mod derived_tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_tell_their_parts_apart() {
        let a = derived_uuid(&[b"ab", b"c"]);
        assert_eq!(a, derived_uuid(&[b"ab", b"c"]));
        // Length prefixes keep part boundaries: "ab"+"c" is not "a"+"bc".
        assert_ne!(a, derived_uuid(&[b"a", b"bc"]));
        assert_eq!(a.get_version_num(), 8);
    }
}
