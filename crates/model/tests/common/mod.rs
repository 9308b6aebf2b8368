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

/// Turns at libtorch's global generator, held for a whole test by every test of a binary that
/// builds a model (`Gpt::load` draws its initial values before reading the file) or samples
/// from it: a seeded `generate` on one thread would otherwise draw after another thread's draws.
pub fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}
