//! Ids the ingress derives instead of minting, so a retried request names the
//! same command, bookings and payment steps as the first attempt.

pub(crate) use ticketing_domain::ids::derived_uuid;
