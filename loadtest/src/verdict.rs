//! Whether a sale was clean: every seat a buyer was told they hold is theirs
//! alone, the seat map shows it held, their bookings list it, and nobody holds
//! more than the limit.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The seats one buyer's successful hold named.
#[derive(Clone, Debug)]
pub struct Claim {
    pub buyer: usize,
    pub seats: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Seats named by successful holds, counted once per claim.
    pub claimed_seats: usize,
    /// Claimed seats that more than one buyer was told they hold (each seat
    /// counted once per extra owner): a seat sold twice.
    pub oversold: usize,
    /// Claimed seats the seat map does not show HELD or SOLD.
    pub missing_from_map: usize,
    /// Seats the map shows HELD or SOLD that nobody claimed.
    pub unclaimed_in_map: usize,
    /// Claimed seats absent from the buyer's PENDING bookings.
    pub missing_bookings: usize,
    /// Buyers holding more seats than allowed.
    pub over_limit: usize,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.oversold == 0
            && self.missing_from_map == 0
            && self.unclaimed_in_map == 0
            && self.missing_bookings == 0
            && self.over_limit == 0
    }
}

pub fn judge(
    claims: &[Claim],
    map: &[(u64, u64, String)],
    pending_by_buyer: &BTreeMap<usize, Vec<(u64, u64)>>,
    limit: usize,
) -> Verdict {
    let mut v = Verdict::default();
    let mut owners: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut per_buyer: BTreeMap<usize, usize> = BTreeMap::new();
    for claim in claims {
        for seat in &claim.seats {
            v.claimed_seats += 1;
            *owners.entry(*seat).or_default() += 1;
        }
        *per_buyer.entry(claim.buyer).or_default() += claim.seats.len();
        let pending: BTreeSet<_> = pending_by_buyer
            .get(&claim.buyer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.missing_bookings += claim.seats.iter().filter(|s| !pending.contains(s)).count();
    }
    v.oversold = owners.values().map(|n| n - 1).sum();
    v.over_limit = per_buyer.values().filter(|n| **n > limit).count();
    let taken: BTreeSet<(u64, u64)> = map
        .iter()
        .filter(|s| s.2 == "HELD" || s.2 == "SOLD")
        .map(|s| (s.0, s.1))
        .collect();
    v.missing_from_map = owners.keys().filter(|s| !taken.contains(s)).count();
    v.unclaimed_in_map = taken.iter().filter(|s| !owners.contains_key(s)).count();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(taken: &[(u64, u64)]) -> Vec<(u64, u64, String)> {
        (1..=2)
            .flat_map(|r| (1..=3).map(move |c| (r, c)))
            .map(|s| {
                let status = if taken.contains(&s) {
                    "HELD"
                } else {
                    "AVAILABLE"
                };
                (s.0, s.1, status.to_string())
            })
            .collect()
    }

    fn claim(buyer: usize, seats: &[(u64, u64)]) -> Claim {
        Claim {
            buyer,
            seats: seats.to_vec(),
        }
    }

    #[test]
    fn a_clean_sale_is_clean() {
        let claims = [claim(0, &[(1, 1), (1, 2)]), claim(1, &[(2, 3)])];
        let pending = BTreeMap::from([(0, vec![(1, 2), (1, 1)]), (1, vec![(2, 3)])]);
        let v = judge(&claims, &map(&[(1, 1), (1, 2), (2, 3)]), &pending, 2);
        assert!(v.is_clean(), "{v:?}");
        assert_eq!(v.claimed_seats, 3);
    }

    #[test]
    fn every_kind_of_dirt_is_counted() {
        // Seat (1,1) told to two buyers; (2,1) claimed but free on the map;
        // (2,2) held on the map but claimed by nobody; buyer 1 has no booking
        // for (1,1); buyer 2 holds three seats with a limit of two.
        let claims = [
            claim(0, &[(1, 1)]),
            claim(1, &[(1, 1), (2, 1)]),
            claim(2, &[(1, 2), (1, 3), (2, 3)]),
        ];
        let pending = BTreeMap::from([
            (0, vec![(1, 1)]),
            (1, vec![(2, 1)]),
            (2, vec![(1, 2), (1, 3), (2, 3)]),
        ]);
        let v = judge(
            &claims,
            &map(&[(1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]),
            &pending,
            2,
        );
        assert_eq!(
            v,
            Verdict {
                claimed_seats: 6,
                oversold: 1,
                missing_from_map: 1,
                unclaimed_in_map: 1,
                missing_bookings: 1,
                over_limit: 1,
            }
        );
        assert!(!v.is_clean());
    }
}
