//! Dequantization of float and "legacy" (32-element block) ggml types to f32.
//!
//! Written from the block layouts in ggml's `ggml-common.h` (the `block_q4_0` etc. structs): each
//! block starts with f16 scale(s) and packs 32 weights; weight `j` of a block lives in the low
//! nibble of byte `j` for `j < 16` and in the high nibble of byte `j - 16` otherwise. Arithmetic
//! is done in f32 in the same order as ggml (`d * q + m`), so results match the reference
//! bit-for-bit. K-quants (256-element super-blocks) live in `kquants.rs`; this module does not
//! read files.

use crate::kquants;
use crate::types::GgmlType;

/// Elements per block of the legacy quantisation types.
pub(crate) const QK: usize = 32;

/// Reads the little-endian f16 at `b[i..i + 2]` as f32.
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes `bytes` of type `ty` into `out`. Fails (with a reason, never a panic) when the byte
/// count does not match `out.len()` elements or the type is not dequantizable.
pub(crate) fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let expected = ty.byte_size(out.len() as u64);
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "{} elements of type {} need {expected:?} bytes, got {}",
            out.len(),
            ty.name(),
            bytes.len()
        ));
    }
    let block_bytes = ty.type_size() as usize;
    let block_len = ty.block_size() as usize;
    let decode: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        // bf16 is the upper half of an f32.
        GgmlType::BF16 => {
            |b, y| y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q2_K => kquants::q2_k,
        GgmlType::Q3_K => kquants::q3_k,
        GgmlType::Q4_K => kquants::q4_k,
        GgmlType::Q5_K => kquants::q5_k,
        GgmlType::Q6_K => kquants::q6_k,
        other => return Err(format!("type {} cannot be dequantized", other.name())),
    };
    for (block, y) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block_len))
    {
        decode(block, y);
    }
    Ok(())
}

/// `block_q8_0`: f16 scale `d`, 32 × i8. `y = d * q`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..2 + QK]) {
        *yj = d * f32::from(q as i8);
    }
}

/// `block_q4_0`: f16 scale `d`, 16 bytes of nibbles. `y = d * (q - 8)`.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..2 + QK / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = d * f32::from((q & 0x0F) as i8 - 8);
        y[j + QK / 2] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// `block_q4_1`: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles. `y = d * q + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..4 + QK / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = d * f32::from(q & 0x0F) + m;
        y[j + QK / 2] = d * f32::from(q >> 4) + m;
    }
}

/// The 5-bit values of a q5 block: nibble from `qs`, fifth bit `j` of the little-endian u32 `qh`.
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let high = |j: usize| (((qh >> j) & 1) as u8) << 4;
    let mut v = [0u8; QK];
    for (j, &q) in qs.iter().enumerate() {
        v[j] = (q & 0x0F) | high(j);
        v[j + QK / 2] = (q >> 4) | high(j + QK / 2);
    }
    v
}

/// `block_q5_0`: f16 `d`, u32 of high bits, 16 bytes of nibbles. `y = d * (q - 16)`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let v = q5_values(&b[2..6], &b[6..6 + QK / 2]);
    for (yj, &q) in y.iter_mut().zip(&v) {
        *yj = d * f32::from(q as i8 - 16);
    }
}

/// `block_q5_1`: f16 `d`, f16 `m`, u32 of high bits, 16 bytes of nibbles. `y = d * q + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let v = q5_values(&b[4..8], &b[8..8 + QK / 2]);
    for (yj, &q) in y.iter_mut().zip(&v) {
        *yj = d * f32::from(q) + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_hand_computed() {
        // d = 0.5; byte j holds low nibble j and high nibble 15 - j.
        let mut b = f16(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0f32; 32];
        dequantize_into(GgmlType::Q4_0, &b, &mut y).unwrap();
        assert_eq!(y[0], -4.0); // 0.5 * (0 - 8)
        assert_eq!(y[15], 3.5); // 0.5 * (15 - 8)
        assert_eq!(y[16], 3.5); // high nibble of byte 0 = 15
        assert_eq!(y[31], -4.0);
    }

    #[test]
    fn q5_1_uses_the_fifth_bit() {
        // d = 1, m = -1, all nibbles 0, high bits set for elements 1 and 17.
        let mut b = [f16(1.0), f16(-1.0)].concat();
        b.extend(((1u32 << 1) | (1u32 << 17)).to_le_bytes());
        b.extend([0u8; 16]);
        let mut y = [0f32; 32];
        dequantize_into(GgmlType::Q5_1, &b, &mut y).unwrap();
        assert_eq!((y[0], y[1], y[16], y[17]), (-1.0, 15.0, -1.0, 15.0));
    }

    #[test]
    fn wrong_byte_count_is_an_error_not_a_panic() {
        let mut y = [0f32; 32];
        let err = dequantize_into(GgmlType::Q8_0, &[0u8; 33], &mut y).unwrap_err();
        assert!(err.contains("need Some(34) bytes, got 33"), "{err}");
        assert!(dequantize_into(GgmlType::IQ2_XS, &[0u8; 74], &mut [0f32; 256]).is_err());
    }

    #[test]
    fn bf16_is_the_upper_half_of_f32() {
        let mut y = [0f32; 2];
        let b = [0x80, 0x3F, 0x00, 0xC0]; // 1.0, -2.0
        dequantize_into(GgmlType::BF16, &b, &mut y).unwrap();
        assert_eq!(y, [1.0, -2.0]);
    }
}
