//! Hostile configurations: whatever the bytes of a `--config` TOML file and whatever the
//! `--set` overrides, every stage's configuration loads (and then validates) within bounded time
//! and memory, or fails with an error naming the file or the `--set`, never a panic or an abort.
//!
//! Seeds: each stage's default configuration written as TOML (what `--print-config` shows), and
//! a hand-written file with comments, dotted keys and inline tables. Mutations (`rlhf_fuzz`):
//! truncation, bit flips, numbers set to huge or odd values (`1e999`, `NaN`, `-1`, 2^64), deep
//! nesting, invalid UTF-8, repeated and deleted slices; overrides are mutated the same way.
//!
//! Cases: PROPTEST_CASES (default 256); `scripts/fuzz.sh --cases N` runs the long campaign.

use std::path::Path;

use rlhf_fuzz::proptest::prelude::*;
use rlhf_fuzz::{Bounds, Outcome, Seed, mutations};
use rlhf_train::config::{load, to_table};
use rlhf_train::{
    DpoConfig, PpoConfig, PretrainConfig, RewardConfig, SftConfig, TrainError, TrainerConfig,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[global_allocator]
static ALLOC: rlhf_fuzz::CountingAlloc = rlhf_fuzz::CountingAlloc;

const STAGES: [&str; 8] = [
    "sft", "reward", "ppo", "dpo", "grpo", "pretrain", "lmsi", "trainer",
];

/// The default configuration of a stage as TOML.
fn default_toml(stage: &str) -> String {
    fn t<T: Serialize + Default>() -> String {
        toml::to_string(&to_table(&T::default()).unwrap()).unwrap()
    }
    match stage {
        "sft" => t::<SftConfig>(),
        "reward" => t::<RewardConfig>(),
        "ppo" => t::<PpoConfig>(),
        "dpo" => t::<DpoConfig>(),
        "grpo" => t::<rlhf_train::grpo::GrpoConfig>(),
        "pretrain" => t::<PretrainConfig>(),
        "lmsi" => t::<rlhf_train::lmsi::LmsiConfig>(),
        _ => t::<TrainerConfig>(),
    }
}

/// Where a configuration was refused.
#[derive(Debug)]
enum Refused {
    /// Reading or parsing the file, or applying a `--set`.
    Load(TrainError),
    /// The values' checks.
    Validate(TrainError),
}

/// Loads `path` with `sets` as `stage`'s configuration and validates it.
fn load_stage(stage: &str, path: &Path, sets: &[String]) -> Result<(), Refused> {
    fn go<T: DeserializeOwned + Serialize + Default>(
        p: &Path,
        s: &[String],
        validate: fn(&T) -> Result<(), TrainError>,
    ) -> Result<(), Refused> {
        validate(&load::<T>(Some(p), s).map_err(Refused::Load)?).map_err(Refused::Validate)
    }
    match stage {
        "sft" => go::<SftConfig>(path, sets, SftConfig::validate),
        "reward" => go::<RewardConfig>(path, sets, RewardConfig::validate),
        "ppo" => go::<PpoConfig>(path, sets, PpoConfig::validate),
        "dpo" => go::<DpoConfig>(path, sets, DpoConfig::validate),
        "grpo" => go(path, sets, rlhf_train::grpo::GrpoConfig::validate),
        "pretrain" => go::<PretrainConfig>(path, sets, PretrainConfig::validate),
        "lmsi" => go(path, sets, rlhf_train::lmsi::LmsiConfig::validate),
        _ => go::<TrainerConfig>(path, sets, TrainerConfig::validate),
    }
}

/// Every key name of a stage's configuration, nested tables included.
fn key_names(stage: &str) -> Vec<String> {
    fn walk(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            out.push(k.clone());
            if let toml::Value::Table(inner) = v {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&default_toml(stage).parse().unwrap(), &mut out);
    out
}

const HAND_WRITTEN: &str = r#"# A hand-written SFT configuration.
eval_fraction = 0.1   # a tenth held out
trainer.lr = 3e-4
trainer.betas = [0.9, 0.95]
trainer.max_steps = 1_000
lora = { enabled = true, r = 8, targets = ["q_proj", "v_proj"] }
"#;

fn seeds() -> &'static [(usize, Seed)] {
    static SEEDS: std::sync::OnceLock<Vec<(usize, Seed)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<(usize, Seed)> = (STAGES.iter().enumerate())
            .map(|(i, s)| (i, Seed::text(*s, default_toml(s))))
            .collect();
        seeds.push((0, Seed::text("hand-written", HAND_WRITTEN)));
        seeds
    })
}

/// `--set` overrides to mutate.
const SETS: [&str; 5] = [
    "trainer.lr=3e-4",
    "trainer.betas=[0.9, 0.95]",
    "lora.targets=[\"q_proj\"]",
    "trainer.max_steps=10",
    "name=run1",
];

/// A load error must name the file or the `--set`; a validation error, a key of the stage.
fn check(path: &Path, stage: &str, loaded: Result<(), Refused>) -> Result<Outcome, String> {
    let (msg, named) = match loaded {
        Ok(()) => return Ok(Outcome::Accepted),
        Err(Refused::Load(e)) => {
            let msg = e.to_string();
            let named = msg.contains(&path.display().to_string()) || msg.contains("--set ");
            (msg, named)
        }
        Err(Refused::Validate(e)) => {
            let msg = e.to_string();
            let named = key_names(stage).iter().any(|k| msg.contains(k.as_str()));
            (msg, named)
        }
    };
    match named {
        true => Ok(Outcome::Refused),
        false => Err(format!("error names neither the file nor a key: {msg}")),
    }
}

#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for (stage, seed) in seeds() {
        let path = dir.path().join("seed.toml");
        std::fs::write(&path, &seed.bytes).unwrap();
        let result = load_stage(STAGES[*stage], &path, &[]);
        assert!(result.is_ok(), "{}: {result:?}", seed.name);
    }
}

#[test]
fn mutated_configs_load_or_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.toml");
    let set_seeds: Vec<Seed> = SETS.iter().map(|s| Seed::text(*s, *s)).collect();
    let sets = prop::collection::vec((0..SETS.len(), prop::option::of(mutations(2))), 0..3);
    let strategy = (0..seeds().len(), mutations(4), sets);
    rlhf_fuzz::run(
        "toml",
        256,
        Bounds::default(),
        strategy,
        |(seed, list, sets)| {
            let (stage, seed) = &seeds()[*seed];
            std::fs::write(&path, seed.mutated(list)).unwrap();
            let sets: Vec<String> = (sets.iter())
                .map(|(i, m)| {
                    let bytes = set_seeds[*i].mutated(m.as_deref().unwrap_or(&[]));
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .collect();
            check(
                &path,
                STAGES[*stage],
                load_stage(STAGES[*stage], &path, &sets),
            )
        },
    );
}

/// Found by this suite: `--set` with a 20,000-part key path built tables nested so deep that
/// dropping them overflowed the stack (an abort). Key paths are now at most 16 parts.
#[test]
fn a_deep_set_path_is_an_error_not_a_stack_overflow() {
    let set = format!("{}=1", vec!["trainer"; 20_000].join("."));
    let e = rlhf_train::config::from_str::<SftConfig>("", "defaults", &[set]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("--set trainer.trainer.")
            && msg
                .ends_with("the key path has 20000 parts; configuration keys are at most 16 deep"),
        "{}",
        &msg[msg.len().saturating_sub(200)..]
    );
}
