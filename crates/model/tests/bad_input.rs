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
        msg.contains("model.safetensors") && msg.contains("mlp.gate_proj.weight"),
        "{msg}"
    );
    // The first mismatch in model order, found from the header before allocating.
    assert!(
        msg.contains("[64, 32]") && msg.contains("config.json implies [48, 32]"),
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

/// `num_hidden_layers: 1000000000` used to abort the process ("memory allocation of
/// 328000000000 bytes failed"); now it and every other absurd size is an error naming the file
/// and the key, found from the config alone in well under a second.
#[test]
fn absurd_sizes_name_the_file_and_key() {
    let cases: [(&str, serde_json::Value); 8] = [
        ("num_hidden_layers", 1_000_000_000.into()),
        ("hidden_size", (1i64 << 40).into()),
        ("vocab_size", 1_000_000_000_000i64.into()),
        ("intermediate_size", (1i64 << 50).into()),
        ("max_position_embeddings", 1_000_000_000_000_000i64.into()),
        ("num_attention_heads", 1_000_000_000.into()),
        ("head_dim", 1_000_000_000.into()),
        ("num_key_value_heads", 1_000_000_000.into()),
    ];
    for (key, value) in cases {
        let dir = broken_copy();
        edit_config(dir.path(), |v| v[key] = value.clone());
        let t0 = std::time::Instant::now();
        let msg = load_err(dir.path());
        assert!(
            t0.elapsed().as_secs_f64() < 1.0,
            "{key}: {:?}",
            t0.elapsed()
        );
        assert!(
            msg.contains("config.json") && msg.contains(&format!("{key} = {value}")),
            "{key}: {msg}"
        );
        assert!(msg.contains("more than the"), "{key}: {msg}");
    }
    let dir = broken_copy();
    edit_config(dir.path(), |v| v["num_hidden_layers"] = (-3).into());
    let msg = load_err(dir.path());
    assert!(
        msg.contains("num_hidden_layers must be positive, got -3"),
        "{msg}"
    );
    edit_config(dir.path(), |v| {
        v["num_hidden_layers"] = 2.into();
        v["rms_norm_eps"] = (-1.0).into();
    });
    let msg = load_err(dir.path());
    assert!(
        msg.contains("rms_norm_eps must be in [0, 1), got -1"),
        "{msg}"
    );
}

/// A config that implies tensors the checkpoint lacks fails on the first one, from the
/// safetensors header, before the model is allocated.
#[test]
fn more_layers_than_the_weights_name_the_first_missing_tensor() {
    let dir = broken_copy();
    edit_config(dir.path(), |v| v["num_hidden_layers"] = 4000.into());
    let t0 = std::time::Instant::now();
    let msg = load_err(dir.path());
    assert!(t0.elapsed().as_secs_f64() < 1.0, "{:?}", t0.elapsed());
    assert!(
        msg.contains("model.safetensors")
            && msg.contains("'model.layers.2.input_layernorm.weight'")
            && msg.contains("missing from the checkpoint, but")
            && msg.contains("config.json implies it"),
        "{msg}"
    );
    // GPT-2: a context longer than the position table is a shape error on `wpe`.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2").join(f), dir.path().join(f)).unwrap();
    }
    edit_config(dir.path(), |v| v["n_positions"] = 100_000.into());
    let msg = load_err(dir.path());
    assert!(
        msg.contains("wpe.weight") && msg.contains("config.json implies [100000, 32]"),
        "{msg}"
    );
}

/// A model that fits no machine is refused with its size before anything is allocated.
#[test]
fn a_model_larger_than_memory_is_refused_up_front() {
    let mut cfg =
        rlhf_model::ModelConfig::from_file(&fixture("llama").join("config.json")).unwrap();
    assert!(rlhf_model::footprint::check_within(&cfg, Head::Lm, None).is_ok());
    let small = Some((1 << 20, "a 1 MiB test ceiling".to_string()));
    assert!(rlhf_model::footprint::check_within(&cfg, Head::Lm, small.clone()).is_ok());
    cfg.num_layers = 4096;
    cfg.hidden_size = 1 << 16;
    cfg.intermediate_size = 1 << 18;
    let msg = rlhf_model::footprint::check_within(&cfg, Head::Lm, small).unwrap_err();
    assert!(
        msg.contains("needs") && msg.contains("GiB") && msg.contains("a 1 MiB test ceiling"),
        "{msg}"
    );
    // On this machine too: ~1.3 PB.
    let msg = rlhf_model::footprint::check_fits(&cfg, Head::Lm, Device::Cpu).unwrap_err();
    assert!(msg.contains("4096 layers"), "{msg}");
}

/// The tensors a config implies, computed without allocating, are exactly the variables the
/// model registers: same names, same shapes, for every family and head.
#[test]
fn expected_tensors_are_the_models_variables() {
    for family in common::FAMILIES {
        let base =
            rlhf_model::ModelConfig::from_file(&fixture(family).join("config.json")).unwrap();
        for tied in [false, true] {
            let cfg = rlhf_model::ModelConfig {
                tie_word_embeddings: tied,
                ..base.clone()
            };
            for head in [Head::Lm, Head::Scalar] {
                let gpt = Gpt::new(&cfg, head, Device::Cpu);
                let mut have: Vec<(String, Vec<i64>)> = gpt
                    .vs
                    .variables()
                    .into_iter()
                    .map(|(n, t)| (n, t.size()))
                    .collect();
                have.sort();
                let mut want: Vec<(String, Vec<i64>)> =
                    rlhf_model::footprint::expected_tensors(&cfg, head).collect();
                want.sort();
                assert_eq!(have, want, "{family} tied={tied} {head:?}");
            }
        }
    }
}

#[test]
fn oversized_json_and_escaping_shards_are_refused() {
    let dir = broken_copy();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(17 << 20));
    std::fs::write(dir.path().join("config.json"), big).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("config.json") && msg.contains("larger than 16 MiB"),
        "{msg}"
    );
    let dir = broken_copy();
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("a.safetensors"),
    )
    .unwrap();
    let index = r#"{"weight_map": {"model.norm.weight": "../../etc/passwd"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.safetensors.index.json")
            && msg.contains("weight_map['model.norm.weight']"),
        "{msg}"
    );
}
