//! Seeded randomness and stable hashing for the task world: a ChaCha8 stream per output file,
//! small sampling helpers built only on `next_u64`, and FNV-1a for splits and labeler noise.
//!
//! Why not `rand`'s distributions: their algorithms may change between minor releases, while
//! `ChaCha8Rng::next_u64` is value-stable, so building on it alone keeps "same seed → byte-identical
//! files" true across dependency updates. This module knows nothing about tasks.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator behind every world file and every simulated labeler.
pub type WorldRng = ChaCha8Rng;

/// A generator for `seed` on an independent `stream`: each output file has its own stream, so
/// resizing one file leaves the others byte-identical.
pub fn world_rng(seed: u64, stream: u64) -> WorldRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Uniform in `0..n` by rejection (no modulo bias). `n` must be positive.
pub fn below<R: RngCore + ?Sized>(rng: &mut R, n: usize) -> usize {
    debug_assert!(n > 0, "below(0)");
    let n = n.max(1) as u64;
    // Largest multiple of n that fits; values above it would favour small results.
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

/// Uniform in `lo..=hi` (requires `lo <= hi`).
pub fn range<R: RngCore + ?Sized>(rng: &mut R, lo: i64, hi: i64) -> i64 {
    debug_assert!(lo <= hi, "range({lo}, {hi})");
    lo + below(rng, (hi - lo).max(0) as usize + 1) as i64
}

/// Uniform in `[0, 1)` with 53 bits of precision.
pub fn unit<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// True with probability `p`.
pub fn chance<R: RngCore + ?Sized>(rng: &mut R, p: f64) -> bool {
    unit(rng) < p
}

/// A uniformly chosen element of a non-empty slice.
pub fn pick<'a, T, R: RngCore + ?Sized>(rng: &mut R, items: &'a [T]) -> &'a T {
    &items[below(rng, items.len())]
}

/// A capitalised invented word of `syllables` syllables drawn from `from`, different from every
/// word in `seen` (and then added to it): names that no pretrained model can know.
pub fn invented_word<R: RngCore + ?Sized>(
    rng: &mut R,
    from: &[&str],
    syllables: usize,
    seen: &mut std::collections::HashSet<String>,
) -> String {
    loop {
        let mut w: String = (0..syllables).map(|_| *pick(rng, from)).collect();
        if seen.insert(w.to_lowercase()) {
            w[..1].make_ascii_uppercase();
            return w;
        }
    }
}

/// Fisher–Yates shuffle.
pub fn shuffle<T, R: RngCore + ?Sized>(rng: &mut R, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

/// FNV-1a over several byte strings, with a separator byte between them so that `("ab", "c")`
/// and `("a", "bc")` differ. Stable across platforms and Rust versions, unlike `DefaultHasher`.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h
}

/// Spreads the bits of an FNV hash (SplitMix64 finaliser): FNV's low bits are weak, and splits
/// compare the hash against a threshold.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable hash of `key` mapped to `[0, 1)`.
pub fn hash_unit(key: &str) -> f64 {
    (mix(fnv1a(&[key.as_bytes()])) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_covers_the_range_and_is_deterministic() {
        let mut a = world_rng(7, 1);
        let mut b = world_rng(7, 1);
        let xs: Vec<usize> = (0..200).map(|_| below(&mut a, 5)).collect();
        let ys: Vec<usize> = (0..200).map(|_| below(&mut b, 5)).collect();
        assert_eq!(xs, ys);
        for v in 0..5 {
            assert!(xs.contains(&v));
        }
        assert!(xs.iter().all(|&x| x < 5));
    }

    #[test]
    fn streams_differ() {
        let mut a = world_rng(7, 1);
        let mut b = world_rng(7, 2);
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn fnv_separates_parts() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        // FNV-1a of "a" followed by the 0xff separator, computed by hand from the spec constants.
        let h = (0xcbf2_9ce4_8422_2325u64 ^ 0x61).wrapping_mul(0x0000_0100_0000_01b3);
        assert_eq!(
            fnv1a(&[b"a"]),
            (h ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3)
        );
    }
}
