//! Dequantization of the ggml "K-quants" (Q2_K..Q6_K): 256-element super-blocks split into
//! sub-blocks of 16 or 32 weights, each sub-block with its own quantised scale (and minimum).
//!
//! Written from the `block_qN_K` structs in ggml's `ggml-common.h`. The recurring layout detail is
//! that low bits of 128 consecutive weights are spread over 32 bytes, with weight `32 * k + l` of
//! that half-block in bit-field `k` of byte `l`. Each function documents its block's byte layout.
//! Scales are combined exactly as ggml does (`(d * scale) * q - (dmin * min)`) so results are
//! bit-identical to the reference. Legacy and float types are in `dequant.rs`.

use crate::dequant::f16_at;

/// `block_q2_K` (84 bytes): scales[16] (low nibble scale, high nibble min, one per 16 weights),
/// qs[64] (2-bit weights), f16 `d`, f16 `dmin`.
pub(crate) fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (sub, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[sub] & 0x0F);
        let ml = dmin * f32::from(scales[sub] >> 4);
        for (i, yi) in ys.iter_mut().enumerate() {
            let e = sub * 16 + i;
            let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let q = (qs[32 * half + l] >> (2 * k)) & 3;
            *yi = dl * f32::from(q) - ml;
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block: low nibbles in bytes 0..8 (sub-blocks 0..8
/// in the low nibble, 8..16 in the high nibble), the top two bits in bytes 8..12 (sub-block `i` in
/// bits `2 * (i / 4)` of byte `8 + i % 4`), biased by 32.
fn q3_k_scales(sc: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, s) in out.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// `block_q3_K` (110 bytes): hmask[32] (third bit of weight `32 * j + l` in bit `j` of byte `l`),
/// qs[64] (low two bits), scales[12] (packed 6-bit, see `q3_k_scales`), f16 `d`.
/// A weight is `low - 4` when its hmask bit is clear and `low` when it is set.
pub(crate) fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (sub, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[sub]);
        for (i, yi) in ys.iter_mut().enumerate() {
            let e = sub * 16 + i;
            let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let low = ((qs[32 * half + l] >> (2 * k)) & 3) as i8;
            let high_set = (hmask[l] >> (e / 32)) & 1 == 1;
            let q = if high_set { low } else { low - 4 };
            *yi = dl * f32::from(q);
        }
    }
}

/// Scale and minimum (6 bits each) of sub-block `j` in the 12-byte packing shared by Q4_K and
/// Q5_K: for `j < 4` the low six bits of bytes `j` and `j + 4`; for `j >= 4` a nibble of byte
/// `j + 4` plus the top two bits of bytes `j - 4` and `j`.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc, m)
    }
}

/// `block_q4_K` (144 bytes): f16 `d`, f16 `dmin`, scales[12], qs[128]. Eight sub-blocks of 32;
/// sub-block `2c` is the low nibbles of `qs[32c..32c + 32]`, sub-block `2c + 1` the high ones.
pub(crate) fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (sub, ys) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(sub, scales);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let bytes = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
        let shift = 4 * (sub % 2);
        for (yi, &q) in ys.iter_mut().zip(bytes) {
            *yi = dl * f32::from((q >> shift) & 0x0F) - ml;
        }
    }
}

/// `block_q5_K` (176 bytes): f16 `d`, f16 `dmin`, scales[12], qh[32], qs[128]. As Q4_K, plus a
/// fifth bit for weight `l` of sub-block `s` in bit `s` of `qh[l]`.
pub(crate) fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (sub, ys) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(sub, scales);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let bytes = &qs[32 * (sub / 2)..32 * (sub / 2) + 32];
        let shift = 4 * (sub % 2);
        for (l, yi) in ys.iter_mut().enumerate() {
            let q = ((bytes[l] >> shift) & 0x0F) | (((qh[l] >> sub) & 1) << 4);
            *yi = dl * f32::from(q) - ml;
        }
    }
}

/// `block_q6_K` (210 bytes): ql[128] (low nibbles), qh[64] (top two bits), scales[16] (i8, one per
/// 16 weights), f16 `d`. Within each half of 128 weights, quarter `k` (32 weights, index `l`)
/// takes nibble `k / 2` of `ql[64 * half + 32 * (k % 2) + l]` and bits `2k..2k + 2` of
/// `qh[32 * half + l]`; values are biased by 32.
pub(crate) fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (sub, ys) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[sub] as i8);
        for (i, yi) in ys.iter_mut().enumerate() {
            let e = sub * 16 + i;
            let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let low = (ql[64 * half + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
            let high = (qh[32 * half + l] >> (2 * k)) & 3;
            let q = (low | (high << 4)) as i8 - 32;
            *yi = dl * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements per K-quant super-block (`QK_K`).
    const QK_K: usize = 256;

    fn f16(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_k_scale_unpacking_hand_computed() {
        // Sub-block 5: scale = low nibble of byte 9 | top bits of byte 1 << 4,
        //              min   = high nibble of byte 9 | top bits of byte 5 << 4.
        let mut s = [0u8; 12];
        s[1] = 0b1100_0000; // scale high bits = 3
        s[5] = 0b0100_0000; // min high bits = 1
        s[9] = 0x72; // scale low = 2, min low = 7
        assert_eq!(scale_min_k4(5, &s), (2 | (3 << 4), 7 | (1 << 4)));
        s[2] = 0xFF;
        s[6] = 0x41;
        assert_eq!(scale_min_k4(2, &s), (63, 1));
    }

    #[test]
    fn q6_k_constant_block() {
        // All bits zero: q = -32 everywhere; d = 0.5, scale of sub-block i = i + 1.
        let mut b = vec![0u8; 192];
        b.extend((1..=16).map(|i: i8| i as u8));
        b.extend(f16(0.5));
        let mut y = [0f32; QK_K];
        q6_k(&b, &mut y);
        assert_eq!(y[0], 0.5 * 1.0 * -32.0);
        assert_eq!(y[255], 0.5 * 16.0 * -32.0);
    }
}
