//! Bad checkpoints give clear errors naming the file and tensor, never a panic.

mod common;

use std::path::Path;

use common::fixture;
use rlhf_model::{Gpt, Head};
use tch::Device;

/// Copies the llama fixture into a temp dir so a test can break it.
fn broken_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    let err = Gpt::load(dir, Head::Lm, Device::Cpu).expect_err("loading must fail");
    err.to_string()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn missing_config() {
    let dir = broken_copy();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("config.json") && msg.contains("No such file"),
        "{msg}"
    );
}

#[test]
fn corrupt_config() {
    let dir = broken_copy();
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llama\",",
    )
    .unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("config.json") && msg.contains("invalid JSON"),
        "{msg}"
    );
}

#[test]
fn wrong_field_type_and_missing_field() {
    let dir = broken_copy();
    edit_config(dir.path(), |v| v["hidden_size"] = "thirty-two".into());
    let msg = load_err(dir.path());
    assert!(
        msg.contains("'hidden_size'") && msg.contains("wrong type"),
        "{msg}"
    );
    edit_config(dir.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let msg = load_err(dir.path());
    assert!(
        msg.contains("missing required field 'hidden_size'"),
        "{msg}"
    );
}

#[test]
fn unknown_model_type() {
    let dir = broken_copy();
    edit_config(dir.path(), |v| v["model_type"] = "mamba".into());
    let msg = load_err(dir.path());
    assert!(
        msg.contains("unknown model_type 'mamba'") && msg.contains("gpt2, llama, qwen2"),
        "{msg}"
    );
}

#[test]
fn tensor_of_the_wrong_shape() {
    let dir = broken_copy();
    edit_config(dir.path(), |v| v["intermediate_size"] = 48.into());
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.safetensors") && msg.contains("mlp.down_proj.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("[32, 64]") && msg.contains("[32, 48]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor() {
    let dir = broken_copy();
    let path = dir.path().join("model.safetensors");
    let tensors: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.norm.weight")
        .collect();
    rlhf_model::checkpoint::save_tensors(&tensors, &path).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("'model.norm.weight'") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = broken_copy();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn out_of_vocabulary_ids_are_an_error_not_an_abort() {
    let model = Gpt::load(&fixture("gpt2"), Head::Lm, Device::Cpu).unwrap();
    let ids = tch::Tensor::from_slice(&[1i64, 500]).view([1, 2]);
    let err = model.forward(
        rlhf_model::Batch {
            input_ids: &ids,
            attention_mask: None,
        },
        None,
    );
    let msg = err
        .expect_err("id 500 is outside a vocab of 96")
        .to_string();
    assert!(msg.contains("token id 500") && msg.contains("96"), "{msg}");
}
