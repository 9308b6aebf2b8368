//! Dequantization parity with llama.cpp's reference (`gguf.quants.dequantize` in gguf-py 0.19).
//!
//! Fixtures come from `scripts/reference/gguf_fixtures.py`: `quants.gguf` holds one tensor per
//! supported ggml type and `quants_reference.safetensors` the f32 values numpy decodes for each.
//! This file also checks the reader's metadata decoding on that llama.cpp-written file.

mod common;

use rlhf_gguf::{GgmlType, GgufFile, MetaValue};
use safetensors::SafeTensors;

fn reference() -> Vec<u8> {
    std::fs::read(common::fixture("quants_reference.safetensors")).expect("reference fixture")
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn every_type_matches_gguf_py() {
    let gguf = GgufFile::open(common::fixture("quants.gguf")).expect("open fixture");
    let ref_bytes = reference();
    let refs = SafeTensors::deserialize(&ref_bytes).expect("parse reference");
    let mut seen = Vec::new();
    for info in gguf.tensor_infos() {
        let expected = refs.tensor(&info.name).expect("reference tensor");
        let (shape, values) = gguf.dequantize(&info.name).expect("dequantize");
        assert_eq!(shape, expected.shape(), "{}: shape", info.name);
        let want = to_f32(expected.data());
        assert_eq!(values.len(), want.len());
        for (i, (&got, &want)) in values.iter().zip(&want).enumerate() {
            // Same f32 operations in the same order as ggml and numpy: the bits must match.
            assert!(
                got.to_bits() == want.to_bits(),
                "{} ({:?}) element {i}: got {got}, want {want}",
                info.name,
                info.ggml_type
            );
        }
        seen.push(info.ggml_type);
    }
    for ty in rlhf_gguf::DEQUANTIZABLE {
        assert!(seen.contains(ty), "fixture lacks a {ty:?} tensor");
    }
}

#[test]
fn shapes_come_back_in_pytorch_order() {
    let gguf = GgufFile::open(common::fixture("quants.gguf")).unwrap();
    let info = gguf.tensor_info("f32").unwrap();
    assert_eq!(info.ggml_dims, [32, 3, 2]);
    assert_eq!(info.shape(), [2, 3, 32]);
    assert_eq!(gguf.tensor_info("q4_k").unwrap().ggml_type, GgmlType::Q4_K);
}

#[test]
fn metadata_of_every_value_type_and_custom_alignment() {
    let gguf = GgufFile::open(common::fixture("quants.gguf")).unwrap();
    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.alignment(), 64);
    assert_eq!(gguf.data_offset() % 64, 0);
    let md = gguf.metadata();
    let expect = [
        ("general.architecture", MetaValue::String("fixture".into())),
        ("general.alignment", MetaValue::U32(64)),
        ("test.u8", MetaValue::U8(200)),
        ("test.i8", MetaValue::I8(-100)),
        ("test.u16", MetaValue::U16(60000)),
        ("test.i16", MetaValue::I16(-30000)),
        ("test.u32", MetaValue::U32(4_000_000_000)),
        ("test.i32", MetaValue::I32(-2_000_000_000)),
        ("test.f32", MetaValue::F32(0.125)),
        ("test.bool", MetaValue::Bool(true)),
        ("test.string", MetaValue::String("héllo".into())),
        ("test.u64", MetaValue::U64(1 << 40)),
        ("test.i64", MetaValue::I64(-(1 << 40))),
        ("test.f64", MetaValue::F64(-2.5)),
        (
            "test.array_i32",
            MetaValue::Array(vec![
                MetaValue::I32(1),
                MetaValue::I32(-2),
                MetaValue::I32(3),
            ]),
        ),
    ];
    for (key, value) in expect {
        assert_eq!(md.get(key), Some(&value), "{key}");
    }
    assert_eq!(
        md.str_array("test.array_str", "strings").unwrap(),
        ["a", "bc", ""]
    );
    // File order is preserved.
    assert_eq!(md.entries()[0].0, "general.architecture");
}
