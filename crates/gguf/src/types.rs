//! The ggml tensor element types: their numeric ids, names and block geometry.
//!
//! The table below is the single source of truth for how many bytes a tensor of a given type
//! occupies, which the reader needs to bounds-check every tensor, including types we cannot
//! dequantize. This module does no decoding; see `dequant.rs` and `kquants.rs` for that.

/// A ggml element type as stored in a GGUF tensor info (`ggml_type` in ggml.h).
///
/// Variant names follow ggml's spelling so that error messages match what users see in llama.cpp.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// (type, ggml id, elements per block, bytes per block). Ids 4, 5 and 31..=33, 36..=38 were
/// removed from ggml and never appear in current files.
const TABLE: &[(GgmlType, u32, u64, u64)] = &[
    (GgmlType::F32, 0, 1, 4),
    (GgmlType::F16, 1, 1, 2),
    (GgmlType::Q4_0, 2, 32, 18),
    (GgmlType::Q4_1, 3, 32, 20),
    (GgmlType::Q5_0, 6, 32, 22),
    (GgmlType::Q5_1, 7, 32, 24),
    (GgmlType::Q8_0, 8, 32, 34),
    (GgmlType::Q8_1, 9, 32, 40),
    (GgmlType::Q2_K, 10, 256, 84),
    (GgmlType::Q3_K, 11, 256, 110),
    (GgmlType::Q4_K, 12, 256, 144),
    (GgmlType::Q5_K, 13, 256, 176),
    (GgmlType::Q6_K, 14, 256, 210),
    (GgmlType::Q8_K, 15, 256, 292),
    (GgmlType::IQ2_XXS, 16, 256, 66),
    (GgmlType::IQ2_XS, 17, 256, 74),
    (GgmlType::IQ3_XXS, 18, 256, 98),
    (GgmlType::IQ1_S, 19, 256, 50),
    (GgmlType::IQ4_NL, 20, 32, 18),
    (GgmlType::IQ3_S, 21, 256, 110),
    (GgmlType::IQ2_S, 22, 256, 82),
    (GgmlType::IQ4_XS, 23, 256, 136),
    (GgmlType::I8, 24, 1, 1),
    (GgmlType::I16, 25, 1, 2),
    (GgmlType::I32, 26, 1, 4),
    (GgmlType::I64, 27, 1, 8),
    (GgmlType::F64, 28, 1, 8),
    (GgmlType::IQ1_M, 29, 256, 56),
    (GgmlType::BF16, 30, 1, 2),
    (GgmlType::TQ1_0, 34, 256, 54),
    (GgmlType::TQ2_0, 35, 256, 66),
    (GgmlType::MXFP4, 39, 32, 17),
];

/// The types `dequantize` understands, in the order error messages list them.
pub const DEQUANTIZABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

impl GgmlType {
    fn row(self) -> (GgmlType, u32, u64, u64) {
        // Every variant has exactly one table row; the fallback is unreachable but keeps this
        // function panic-free.
        TABLE
            .iter()
            .copied()
            .find(|r| r.0 == self)
            .unwrap_or((self, u32::MAX, 1, 1))
    }

    /// Looks up a type by its ggml id; `None` for ids this crate does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The numeric id stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type, e.g. `"Q4_K"`.
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// Number of elements one block encodes (1 for plain float/int types).
    pub fn block_size(self) -> u64 {
        self.row().2
    }

    /// Number of bytes one block occupies.
    pub fn type_size(self) -> u64 {
        self.row().3
    }

    /// Whether `dequantize` can turn this type into f32.
    pub fn is_dequantizable(self) -> bool {
        DEQUANTIZABLE.contains(&self)
    }

    /// Byte size of `n_elements` values, or `None` when `n_elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn byte_size(self, n_elements: u64) -> Option<u64> {
        if n_elements % self.block_size() != 0 {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

/// Comma-separated names of the dequantizable types, for error messages.
pub fn supported_list() -> String {
    DEQUANTIZABLE
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for &(ty, id, _, _) in TABLE {
            assert_eq!(GgmlType::from_id(id), Some(ty));
            assert_eq!(ty.id(), id);
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::IQ2_XS.name(), "IQ2_XS");
    }

    #[test]
    fn byte_size_requires_whole_blocks() {
        assert_eq!(GgmlType::Q4_K.byte_size(512), Some(288));
        assert_eq!(GgmlType::Q4_K.byte_size(100), None);
        assert_eq!(GgmlType::F16.byte_size(3), Some(6));
        assert_eq!(GgmlType::F32.byte_size(u64::MAX), None);
    }
}
