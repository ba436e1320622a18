//! Ids the ingress derives instead of minting, so a retried request names the
//! same command, bookings and payment steps as the first attempt.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A UUID derived from parts by hashing, stamped as a version-8 UUID: the same
/// parts always give the same id, and no derived id collides with a minted v7.
pub(crate) fn derived_uuid(parts: &[&[u8]]) -> Uuid {
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
