//! Helpers shared by the model crate's integration tests: fixture paths and reference tensors.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use tch::Tensor;

pub const FAMILIES: [&str; 3] = ["gpt2", "llama", "qwen2"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Tensors written by `scripts/reference/model_fixtures.py`.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixture(name).join("reference.safetensors");
    Tensor::read_safetensors(&path)
        .expect("reference fixture")
        .into_iter()
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    f64::try_from((a - b).abs().max()).unwrap()
}
