//! Seed files and what is done to them: truncation, bit flips, known length fields and any other
//! bytes set to huge values, decimal numbers replaced by huge or odd ones, deep nesting, invalid
//! UTF-8, repeated and deleted slices. Each case applies a short list of these in order; proptest
//! shrinks a failing list to the smallest that still fails.

use proptest::prelude::*;
use proptest::sample::{Index, select};

/// A valid file a suite starts from, with the offsets of its binary length and count fields
/// (little-endian, 4 or 8 bytes wide), which [`Mutation::HugeField`] targets.
#[derive(Clone, Debug)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub fields: Vec<(usize, u8)>,
}

impl Seed {
    /// A seed without binary fields (text formats).
    pub fn text(name: impl Into<String>, text: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: text.into(),
            fields: Vec::new(),
        }
    }

    /// The seed with every mutation of `list` applied in order.
    pub fn mutated(&self, list: &[Mutation]) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        for m in list {
            m.apply(&self.fields, &mut bytes);
        }
        bytes
    }
}

/// Values a length, count or size field is set to: the largest integers, powers of two just past
/// 32-bit limits, a billion, and zero.
const HUGE: [u64; 10] = [
    u64::MAX,
    u64::MAX / 2,
    1 << 63,
    1 << 40,
    1 << 32,
    u32::MAX as u64,
    (1 << 31) - 1,
    1_000_000_000,
    1 << 20,
    0,
];

/// What a decimal number in a text file is replaced with.
const NUMBERS: [&str; 14] = [
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1000000000",
    "-1",
    "0",
    "1e308",
    "1e999",
    "-0.0",
    "0.5",
    "NaN",
];

/// Byte sequences that are not UTF-8: a stray byte, a bad continuation, a surrogate, a code
/// point past U+10FFFF, an overlong NUL, a truncated sequence.
const BAD_UTF8: [&[u8]; 6] = [
    &[0xff],
    &[0xc3, 0x28],
    &[0xed, 0xa0, 0x80],
    &[0xf4, 0x90, 0x80, 0x80],
    &[0xc0, 0x80],
    &[0xe2, 0x82],
];

/// One change to a file.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Cut the file here.
    Truncate(Index),
    /// Flip these bits.
    Flip(Vec<(Index, u8)>),
    /// Set one of the seed's length or count fields to a huge value.
    HugeField(Index, u64),
    /// Set 4 or 8 bytes anywhere to a huge little-endian value.
    HugeBytes(Index, u64, bool),
    /// Replace the n-th decimal number (a run of ASCII digits) with this text.
    Number(Index, &'static str),
    /// Insert `depth` opening brackets (or `{"a":` objects) and their closers here.
    Nest(Index, usize, bool),
    /// Insert bytes that are not UTF-8.
    BadUtf8(Index, &'static [u8]),
    /// Repeat a slice of up to 64 bytes this many times (long lines, big files).
    Repeat(Index, usize, usize),
    /// Remove up to 64 bytes.
    Delete(Index, usize),
}

impl Mutation {
    /// Applies the change to `bytes`; `fields` are the seed's binary fields.
    pub fn apply(&self, fields: &[(usize, u8)], bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Flip(flips) if len > 0 => {
                for (i, bit) in flips {
                    bytes[i.index(len)] ^= 1 << (bit % 8);
                }
            }
            Mutation::Flip(_) => {}
            Mutation::HugeField(i, v) if !fields.is_empty() => {
                let (at, width) = fields[i.index(fields.len())];
                put(bytes, at, *v, width == 8);
            }
            Mutation::HugeField(..) => {}
            Mutation::HugeBytes(i, v, wide) => put(bytes, i.index(len + 1), *v, *wide),
            Mutation::Number(i, text) => {
                let starts: Vec<usize> = (0..len)
                    .filter(|&j| {
                        bytes[j].is_ascii_digit() && (j == 0 || !bytes[j - 1].is_ascii_digit())
                    })
                    .collect();
                if !starts.is_empty() {
                    let s = starts[i.index(starts.len())];
                    let e = (s..len)
                        .find(|&k| !bytes[k].is_ascii_digit())
                        .unwrap_or(len);
                    bytes.splice(s..e, text.bytes());
                }
            }
            Mutation::Nest(i, depth, object) => {
                let at = i.index(len + 1);
                let (open, close): (&[u8], &[u8]) = if *object {
                    (b"{\"a\":", b"}")
                } else {
                    (b"[", b"]")
                };
                let mut nest = open.repeat(*depth);
                nest.extend_from_slice(b"1");
                nest.extend(close.repeat(*depth));
                bytes.splice(at..at, nest);
            }
            Mutation::BadUtf8(i, seq) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, seq.iter().copied());
            }
            Mutation::Repeat(i, n, times) if len > 0 => {
                let at = i.index(len);
                let end = (at + n).min(len);
                let piece = bytes[at..end].to_vec();
                bytes.splice(end..end, piece.repeat(*times));
            }
            Mutation::Repeat(..) => {}
            Mutation::Delete(i, n) => {
                let at = i.index(len + 1);
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
        }
    }
}

/// Writes `v` little-endian at `at`, as far as the file reaches.
fn put(bytes: &mut [u8], at: usize, v: u64, wide: bool) {
    let le = v.to_le_bytes();
    let w = if wide { 8 } else { 4 };
    for (k, b) in le[..w].iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + k) {
            *slot = *b;
        }
    }
}

/// One to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec((any::<Index>(), 0u8..8), 1..8).prop_map(Mutation::Flip),
        2 => (any::<Index>(), select(HUGE.to_vec())).prop_map(|(i, v)| Mutation::HugeField(i, v)),
        1 => (any::<Index>(), select(HUGE.to_vec()), any::<bool>())
            .prop_map(|(i, v, w)| Mutation::HugeBytes(i, v, w)),
        2 => (any::<Index>(), select(NUMBERS.to_vec())).prop_map(|(i, n)| Mutation::Number(i, n)),
        1 => (any::<Index>(), prop_oneof![1usize..200, 200usize..20_000], any::<bool>())
            .prop_map(|(i, d, o)| Mutation::Nest(i, d, o)),
        1 => (any::<Index>(), select(BAD_UTF8.to_vec())).prop_map(|(i, s)| Mutation::BadUtf8(i, s)),
        1 => (any::<Index>(), 1usize..64, prop_oneof![1usize..100, 100usize..20_000])
            .prop_map(|(i, n, t)| Mutation::Repeat(i, n, t)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ];
    prop::collection::vec(one, 1..=max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn at(runner: &mut TestRunner) -> Index {
        any::<Index>().new_tree(runner).unwrap().current()
    }

    #[test]
    fn numbers_nesting_and_fields() {
        let mut r = TestRunner::deterministic();
        let seed = Seed {
            name: "s".into(),
            bytes: b"ab 12 cd 345".to_vec(),
            fields: vec![(0, 4)],
        };
        let i = at(&mut r);
        let out = seed.mutated(&[Mutation::Number(i, "-1")]);
        let s = String::from_utf8(out).unwrap();
        assert!(s == "ab -1 cd 345" || s == "ab 12 cd -1", "{s}");
        let out = seed.mutated(&[Mutation::HugeField(i, u64::MAX)]);
        assert_eq!(&out[..4], &[0xff; 4]);
        assert_eq!(&out[4..], b"2 cd 345");
        let mut b = Vec::new();
        Mutation::Nest(i, 3, false).apply(&[], &mut b);
        assert_eq!(b, b"[[[1]]]");
        Mutation::Truncate(i).apply(&[], &mut b);
        assert!(b.len() <= 7);
    }
}
