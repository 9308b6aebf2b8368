//! Hostile checkpoints: whatever the bytes of `config.json`, `model.safetensors`, its shard index,
//! `adapter_config.json` or `adapter_model.safetensors`, loading answers within bounded time and
//! memory with a model or an error naming the file, never a panic or an abort.
//!
//! Seeds: the checked-in GPT-2, Llama and Qwen2 fixtures with their LoRA adapters, and a shard
//! index written here for each. Mutations (`rlhf_fuzz`): truncation, bit flips, the safetensors
//! header length and any other bytes set to huge values, numbers in the JSON (sizes, shapes,
//! offsets) set to huge or odd values, deep nesting, invalid UTF-8, repeated and deleted slices.
//! The memory ceiling is lowered to 256 MiB (`RLHF_MAX_MODEL_BYTES`), so a config that would be
//! valid but large on this machine is refused rather than allocated.
//!
//! One test in this binary: it sets the environment before any other thread reads it.
//! Cases: PROPTEST_CASES (default 192); `scripts/fuzz.sh --cases N` runs the long campaign.

mod common;

use std::path::Path;

use rlhf_fuzz::{Bounds, Outcome, Seed, mutations};
use rlhf_model::{Gpt, Head};
use tch::Device;

#[global_allocator]
static ALLOC: rlhf_fuzz::CountingAlloc = rlhf_fuzz::CountingAlloc;

/// The file a case mutates.
const TARGETS: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
];
const SHARD: &str = "model-00001-of-00001.safetensors";

/// The seed files of one family, in `TARGETS` order.
fn family_seeds(family: &str) -> Vec<Seed> {
    let dir = common::fixture(family);
    let read = |p: &Path| std::fs::read(p).unwrap();
    let weights = read(&dir.join("model.safetensors"));
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = (header.as_object().unwrap().keys())
        .filter(|k| *k != "__metadata__")
        .map(|k| (k.clone(), SHARD.into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map}).to_string();
    let adapter_weights = read(&dir.join("lora/adapter_model.safetensors"));
    vec![
        Seed::text("config.json", read(&dir.join("config.json"))),
        Seed {
            name: "model.safetensors".into(),
            bytes: weights,
            fields: vec![(0, 8)],
        },
        Seed::text("model.safetensors.index.json", index),
        Seed::text(
            "adapter_config.json",
            read(&dir.join("lora/adapter_config.json")),
        ),
        Seed {
            name: "adapter_model.safetensors".into(),
            bytes: adapter_weights,
            fields: vec![(0, 8)],
        },
    ]
}

fn seeds() -> &'static [Vec<Seed>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<Seed>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| common::FAMILIES.iter().map(|f| family_seeds(f)).collect())
}

/// Writes a checkpoint directory (`base/`, with its adapter in `base/lora/`) whose `target` file
/// holds `bytes`; returns the directory to load.
fn write_case(root: &Path, family: usize, target: usize, bytes: &[u8]) -> std::path::PathBuf {
    let base = root.join("base");
    let lora = base.join("lora");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&lora).unwrap();
    let s = &seeds()[family];
    let file = |i: usize| -> &[u8] { if i == target { bytes } else { &s[i].bytes } };
    std::fs::write(base.join("config.json"), file(0)).unwrap();
    if target == 2 {
        std::fs::write(base.join("model.safetensors.index.json"), file(2)).unwrap();
        std::fs::write(base.join(SHARD), file(1)).unwrap();
    } else {
        std::fs::write(base.join("model.safetensors"), file(1)).unwrap();
    }
    std::fs::write(lora.join("adapter_config.json"), file(3)).unwrap();
    std::fs::write(lora.join("adapter_model.safetensors"), file(4)).unwrap();
    if target >= 3 { lora } else { base }
}

/// Loads `dir` as an LM, or as a reward model's body; `Ok` when it loads or the error names a
/// file of the checkpoint.
fn load(dir: &Path, root: &Path, scalar: bool) -> Result<Outcome, String> {
    let result = match scalar {
        false => Gpt::load(dir, Head::Lm, Device::Cpu),
        true => Gpt::load_with_head(dir, Head::Scalar, Device::Cpu),
    };
    match result {
        Ok(_) => Ok(Outcome::Accepted),
        Err(e) => {
            let msg = e.to_string();
            // A path under the checkpoint directory (a mutated index names other shards).
            match msg.contains(&root.display().to_string()) {
                true => Ok(Outcome::Refused),
                false => Err(format!("error does not name the file: {msg}")),
            }
        }
    }
}

#[test]
fn mutated_checkpoints_load_or_name_the_file() {
    // SAFETY: the only test of this binary, run before anything reads the environment.
    unsafe { std::env::set_var(rlhf_model::footprint::MAX_MODEL_BYTES_ENV, "268435456") };
    let root = tempfile::tempdir().unwrap();
    for family in 0..seeds().len() {
        for target in [0, 2, 3] {
            let dir = write_case(root.path(), family, target, &seeds()[family][target].bytes);
            for scalar in [false, true] {
                let outcome = load(&dir, root.path(), scalar);
                assert_eq!(
                    outcome,
                    Ok(Outcome::Accepted),
                    "seed {family}/{target}/{scalar}"
                );
            }
        }
    }
    let strategy = (
        0..seeds().len(),
        0..TARGETS.len(),
        mutations(3),
        rlhf_fuzz::proptest::bool::ANY,
    );
    rlhf_fuzz::run(
        "checkpoint",
        192,
        Bounds::default(),
        strategy,
        |(family, target, list, scalar)| {
            let bytes = seeds()[*family][*target].mutated(list);
            let dir = write_case(root.path(), *family, *target, &bytes);
            load(&dir, root.path(), *scalar)
        },
    );
}
