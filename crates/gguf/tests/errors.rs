//! Bad input must produce an error that names the file and says what was expected, never a panic:
//! truncation at every byte, bad magic, unsupported versions, unknown and unsupported types,
//! offsets outside the file, forged counts.

mod common;

use common::GgufBuilder;
use rlhf_gguf::{GgufError, GgufFile};

fn open(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes("model.gguf", bytes)
}

fn err(bytes: Vec<u8>) -> String {
    open(bytes).expect_err("expected an error").to_string()
}

/// One 256-element IQ2_XS tensor (74 bytes), a type rlhf does not dequantize.
fn iq2_xs_file() -> GgufBuilder {
    GgufBuilder::new()
        .str("general.architecture", "llama")
        .tensor_raw("blk.0.attn_q.weight", &[256, 1], 17, vec![0; 74])
}

/// End of the last tensor's data; gguf-py pads the file beyond it, and cutting padding is fine.
fn data_end(bytes: &[u8]) -> usize {
    let gguf = open(bytes.to_vec()).unwrap();
    gguf.tensor_infos()
        .iter()
        .map(|t| t.file_range.end)
        .max()
        .unwrap() as usize
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    let bytes = std::fs::read(common::fixture("quants.gguf")).unwrap();
    let end = data_end(&bytes);
    for len in 0..end {
        let e = open(bytes[..len].to_vec());
        assert!(e.is_err(), "prefix of {len} bytes parsed");
    }
    assert!(open(bytes[..end].to_vec()).is_ok());
}

#[test]
fn truncation_messages_say_what_and_where() {
    let bytes = std::fs::read(common::fixture("quants.gguf")).unwrap();
    let e = err(bytes[..10].to_vec());
    assert_eq!(
        e,
        "model.gguf: file is truncated: reading the tensor count needs bytes 8..16 but the file \
         has 10 bytes (incomplete download?)"
    );
    // Cut inside the last tensor's data.
    let end = data_end(&bytes);
    let e = err(bytes[..end - 1].to_vec());
    assert!(
        e.starts_with("model.gguf: tensor 'q6_k': data at offset"),
        "{e}"
    );
    assert!(
        e.contains(&format!("outside the file of {} bytes", end - 1)),
        "{e}"
    );
}

#[test]
fn empty_file_on_disk() {
    let dir = common::temp_dir("empty");
    let path = dir.join("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: file is truncated", path.display())),
        "{e}"
    );
    let e = GgufFile::open(dir.join("absent.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.gguf: cannot open"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_magic() {
    let mut bytes = GgufBuilder::new().build();
    bytes[..4].copy_from_slice(b"GGML");
    assert_eq!(
        err(bytes),
        "model.gguf: not a GGUF file: expected magic bytes \"GGUF\", found [71, 71, 77, 76]"
    );
}

#[test]
fn unsupported_versions_explain_themselves() {
    let mut b = GgufBuilder::new();
    b.version = 1;
    let e = err(b.build());
    assert!(
        e.starts_with("model.gguf: unsupported GGUF version 1; rlhf reads"),
        "{e}"
    );
    assert!(e.contains("re-convert with a current llama.cpp"), "{e}");
    b.version = 3u32.swap_bytes();
    assert!(err(b.build()).contains("big-endian"));
    b.version = 4;
    assert!(err(b.build()).contains("unsupported GGUF version 4"));
}

#[test]
fn unsupported_quantisation_type_is_named() {
    let gguf = open(iq2_xs_file().build()).expect("file itself is valid");
    let e = gguf
        .dequantize("blk.0.attn_q.weight")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "model.gguf: tensor 'blk.0.attn_q.weight' has ggml type IQ2_XS (17), which rlhf cannot \
         dequantize; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, \
         Q5_K, Q6_K"
    );
    let e = gguf.dequantize("nope").unwrap_err().to_string();
    assert_eq!(e, "model.gguf: no tensor named 'nope' in the file");
}

#[test]
fn unknown_type_id_is_rejected_at_open() {
    let b = GgufBuilder::new().tensor_raw("t", &[4], 99, vec![0; 16]);
    let e = err(b.build());
    assert!(
        e.starts_with("model.gguf: tensor 't': has ggml type id 99, unknown"),
        "{e}"
    );
}

#[test]
fn tensor_geometry_is_checked() {
    // Q8_0 rows must be whole 32-element blocks.
    let e = err(GgufBuilder::new()
        .tensor_raw("t", &[30, 2], 8, vec![0; 68])
        .build());
    assert!(
        e.contains("row length 30 (ne[0]) is not a multiple of the Q8_0 block size"),
        "{e}"
    );
    let e = err(GgufBuilder::new()
        .tensor_raw("t", &[1, 1, 1, 1, 1], 0, vec![0; 4])
        .build());
    assert!(e.contains("has 5 dimensions; ggml allows at most 4"), "{e}");
    let e = err(GgufBuilder::new()
        .tensor_raw("t", &[u64::MAX, 4], 0, vec![])
        .build());
    assert!(e.contains("overflow"), "{e}");
    let dup = GgufBuilder::new()
        .tensor_f32("t", &[1], &[1.0])
        .tensor_f32("t", &[1], &[2.0]);
    assert!(err(dup.build()).contains("appears twice"));
}

#[test]
fn offsets_outside_the_file_or_misaligned() {
    let mut bytes = GgufBuilder::new().tensor_f32("t", &[4], &[0.0; 4]).build();
    // Header (24) + name "t" (8 + 1) + n_dims (4) + one dim (8) + type (4), then the offset.
    let offset_pos = 24 + 9 + 4 + 8 + 4;
    assert_eq!(bytes[offset_pos..offset_pos + 8], 0u64.to_le_bytes());
    bytes[offset_pos..offset_pos + 8].copy_from_slice(&4096u64.to_le_bytes());
    let e = err(bytes.clone());
    assert!(
        e.contains("tensor 't': data at offset 4096 + 16 bytes"),
        "{e}"
    );
    bytes[offset_pos..offset_pos + 8].copy_from_slice(&8u64.to_le_bytes());
    assert!(err(bytes).contains("offset 8 is not a multiple of the alignment 32"));
}

#[test]
fn forged_counts_do_not_allocate_or_panic() {
    let mut bytes = GgufBuilder::new().str_array("k", &["a"]).build();
    // Array length sits after magic(4) version(4) counts(16) key(8+1) type(4) elem type(4).
    let len_pos = 4 + 4 + 16 + 9 + 4 + 4;
    assert_eq!(bytes[len_pos..len_pos + 8], 1u64.to_le_bytes());
    bytes[len_pos..len_pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(bytes).contains("truncated"));

    let mut bytes = GgufBuilder::new().build();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(err(bytes).contains("truncated"));
}

#[test]
fn bad_metadata_values() {
    let mut bytes = GgufBuilder::new().str("key", "\u{e9}").build();
    let last = bytes.len() - 1;
    bytes[last] = 0xFF; // break the UTF-8
    let e = err(bytes);
    assert!(
        e.contains("the value of metadata key 'key': string is not valid UTF-8"),
        "{e}"
    );

    let mut bytes = GgufBuilder::new().u32("key", 1).build();
    let ty_pos = 4 + 4 + 16 + 8 + 3;
    bytes[ty_pos..ty_pos + 4].copy_from_slice(&13u32.to_le_bytes());
    assert!(err(bytes).contains("unknown value type 13"));

    let twice = GgufBuilder::new().u32("key", 1).u32("key", 2);
    assert!(err(twice.build()).contains("metadata key 'key': appears twice"));

    let b = GgufBuilder::new().u32("general.alignment", 48);
    assert!(err(b.build()).contains("'general.alignment'"));
}
