//! Key → partition, the way Kafka's Java clients do it (`murmur2_random` in
//! librdkafka). Both adapters use it: the Kafka producer is configured with
//! `partitioner=murmur2_random`, so a schedule lands on the same partition
//! number in `ticketing dev` and on the real stack, and a partition number seen
//! in one can be looked for in the other.

/// MurmurHash2 (32-bit) with the seed Kafka uses, over the key's bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java hashes the length as an int; keys are far below 2^31 bytes.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (which must be positive).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    // Kafka clears the sign bit rather than taking abs(), so i32::MIN is no special case.
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known outputs of the Java client's `Utils.murmur2`, as librdkafka's own
    /// unit test (rdmurmur2.c) records them: aligned, unaligned and empty keys.
    #[test]
    fn matches_the_java_client() {
        let short = "1234";
        let unaligned = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: &[(&str, u32)] = &[
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            (short, 0x9fc9_7b14),
            (&short[1..], 0xe7c0_09ca),
            (&short[2..], 0x8739_30da),
            (&short[3..], 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key.as_bytes()),
                *expected as i32,
                "murmur2({key:?})"
            );
        }
    }

    /// Values from Kafka's own UtilsTest, including negative hashes (where a
    /// sign mistake in the partition step would show).
    #[test]
    fn matches_kafka_utils_test() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
        // toPositive(-973932308) = 1173551340, and 1173551340 % 12 = 0.
        assert_eq!(partition_for_key(b"21", 12), 1_173_551_340 % 12);
    }

    #[test]
    fn is_deterministic_and_in_range() {
        for partitions in [1, 2, 3, 6, 12, 64] {
            for i in 0..500 {
                let key = format!("schedule-{i}");
                let p = partition_for_key(key.as_bytes(), partitions);
                assert!((0..partitions).contains(&p));
                assert_eq!(p, partition_for_key(key.as_bytes(), partitions));
            }
        }
    }

    #[test]
    fn spreads_keys_evenly() {
        let partitions = 12;
        let keys = 12_000;
        let mut counts = vec![0u32; partitions as usize];
        for i in 0..keys {
            // UUID-like keys, as schedule ids are.
            let key = format!("0190f3c2-7b1e-7c3a-9d2e-{i:012x}");
            counts[partition_for_key(key.as_bytes(), partitions) as usize] += 1;
        }
        let expected = keys / partitions as u32;
        for (p, n) in counts.iter().enumerate() {
            // ±15 % of the mean: a binomial spread this wide is beyond 5 sigma.
            assert!(
                n.abs_diff(expected) * 100 < expected * 15,
                "partition {p} got {n} of {keys} keys: {counts:?}"
            );
        }
    }
}
