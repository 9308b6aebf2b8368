//! Strict configuration: overrides apply, and unknown keys, wrong types, malformed TOML, bad
//! `--set` syntax and out-of-range values are errors naming the file and the key path.

use rlhf_train::config::{self, to_table};
use rlhf_train::{LossWeighting, TrainerConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Command {
    trainer: TrainerConfig,
    name: String,
}

fn load(text: &str, set: &[&str]) -> Result<Command, String> {
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    config::from_str(text, "run.toml", &set).map_err(|e| e.to_string())
}

#[test]
fn file_then_overrides() {
    let text = "name = \"a\"\n[trainer]\nlr = 1e-3\nmax_steps = 10\n";
    let cfg = load(
        text,
        &[
            "trainer.max_steps=20",
            "trainer.betas=[0.8, 0.9]",
            "trainer.loss_weighting=micro_batch",
            "name=run-2",
        ],
    )
    .expect("valid config");
    assert_eq!(cfg.trainer.lr, 1e-3, "from the file");
    assert_eq!(cfg.trainer.max_steps, 20, "--set wins");
    assert_eq!(cfg.trainer.betas, [0.8, 0.9]);
    assert_eq!(cfg.trainer.loss_weighting, LossWeighting::MicroBatch);
    assert_eq!(cfg.name, "run-2", "a bare word is a string");
    assert_eq!(
        cfg.trainer.warmup_steps, 100,
        "absent keys keep their defaults"
    );
    // The resolved config written to the run folder reads back identically.
    let table = to_table(&cfg).expect("table");
    let back = load(&toml::to_string(&table).expect("toml"), &[]).expect("round trip");
    assert_eq!(back, cfg);
    // No file: defaults plus overrides.
    let cfg = load("", &["trainer.seed=5"]).expect("defaults");
    assert_eq!(cfg.trainer.seed, 5);
}

/// A command whose trainer defaults differ from `TrainerConfig::default()` (as SFT's do).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Finetune {
    trainer: TrainerConfig,
    sizes: Vec<usize>,
}

impl Default for Finetune {
    fn default() -> Self {
        Self {
            trainer: TrainerConfig {
                lr: 5e-4,
                batch_size: 16,
                ..Default::default()
            },
            sizes: vec![1, 2, 3],
        }
    }
}

#[test]
fn a_partial_table_keeps_the_commands_own_defaults() {
    let set = vec!["trainer.max_steps=7".to_string(), "sizes=[5]".to_string()];
    let cfg: Finetune = config::from_str("[trainer]\nseed = 3\n", "ft.toml", &set).expect("valid");
    assert_eq!(cfg.trainer.max_steps, 7);
    assert_eq!(cfg.trainer.seed, 3);
    assert_eq!(
        cfg.trainer.batch_size, 16,
        "the command's default, not TrainerConfig's 8"
    );
    assert_eq!(cfg.trainer.lr, 5e-4);
    assert_eq!(cfg.sizes, vec![5], "arrays are replaced, not merged");
    let err = config::from_str::<Finetune>("[trainer]\nbatch = 3\n", "ft.toml", &[])
        .expect_err("unknown keys still fail");
    assert!(err.to_string().contains("'trainer.batch'"), "{err}");
}

#[test]
fn unknown_key_names_its_path_and_suggests() {
    let err = load("[trainer]\nlrr = 0.1\n", &[]).expect_err("unknown key");
    assert!(
        err.starts_with("run.toml: unknown key 'trainer.lrr'"),
        "{err}"
    );
    assert!(err.contains("did you mean 'lr'?"), "{err}");
    let err = load("", &["trainer.max_step=3"]).expect_err("unknown key via --set");
    assert!(err.contains("'trainer.max_step'"), "{err}");
    assert!(err.contains("did you mean 'max_steps'?"), "{err}");
    assert!(err.contains("(from --set trainer.max_step=3)"), "{err}");
    let err = load("[optimiser]\nlr = 1\n", &[]).expect_err("unknown table");
    assert!(err.contains("unknown key 'optimiser'"), "{err}");
}

#[test]
fn wrong_type_names_its_path() {
    let err = load("", &["trainer.lr=fast"]).expect_err("string for a float");
    assert!(err.contains("trainer.lr"), "{err}");
    assert!(err.contains("string \"fast\""), "{err}");
    assert!(err.contains("(from --set trainer.lr=fast)"), "{err}");
    let err = load("[trainer]\nmax_steps = 1.5\n", &[]).expect_err("float for an integer");
    assert!(err.starts_with("run.toml: trainer.max_steps:"), "{err}");
    let err = load("trainer = 3\n", &[]).expect_err("value for a table");
    assert!(err.contains("trainer"), "{err}");
}

#[test]
fn malformed_toml_reports_line_and_column() {
    let err = load("name = \"a\"\n[trainer]\nlr = = 3\n", &[]).expect_err("malformed");
    assert!(
        err.starts_with("run.toml: TOML parse error at line 3, column"),
        "{err}"
    );
    let err = load("[trainer]\nlr = 1\nlr = 2\n", &[]).expect_err("duplicate key");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn bad_overrides() {
    let err = load("", &["trainer.lr"]).expect_err("no '='");
    assert!(
        err.contains("--set trainer.lr: expected key.path=value"),
        "{err}"
    );
    let err = load("", &["trainer..lr=1"]).expect_err("empty part");
    assert!(err.contains("empty part"), "{err}");
    let err = load("[trainer]\nlr = 1.0\n", &["trainer.lr.x=1"]).expect_err("through a value");
    assert!(
        err.contains("'trainer.lr' is a value, not a table"),
        "{err}"
    );
    // Without a file the defaults are there, so the same override meets the default value.
    let err = load("", &["trainer.lr.x=1"]).expect_err("a table where a float belongs");
    assert!(
        err.contains("'trainer.lr' is a value, not a table"),
        "{err}"
    );
    let err = load("[trainer]\nlr = { x = 1 }\n", &[]).expect_err("a table where a float belongs");
    assert!(err.contains("trainer.lr: invalid type: map"), "{err}");
    let err = load("", &["name.x=1"]).expect_err("through a default string");
    assert!(
        err.contains("(from --set name.x=1)") || err.contains("'name' is a value"),
        "{err}"
    );
}

#[test]
fn missing_file_names_it() {
    let path = std::path::Path::new("/nonexistent/run.toml");
    let err = config::load::<Command>(Some(path), &[]).expect_err("missing file");
    let msg = err.to_string();
    assert!(
        msg.contains("read the config file /nonexistent/run.toml"),
        "{msg}"
    );
}

#[test]
fn out_of_range_values_are_rejected() {
    let cases = [
        ("trainer.lr=-1.0", "trainer.lr must be > 0"),
        ("trainer.grad_accum=0", "trainer.grad_accum must be > 0"),
        (
            "trainer.betas=[0.9, 1.0]",
            "trainer.betas must be in [0, 1)",
        ),
        (
            "trainer.min_lr_ratio=2.0",
            "trainer.min_lr_ratio must be in [0, 1]",
        ),
    ];
    for (set, want) in cases {
        let cfg = load("", &[set]).expect("parses");
        let err = cfg.trainer.validate().expect_err(set).to_string();
        assert!(err.contains(want), "{set}: {err}");
    }
    assert!(TrainerConfig::default().validate().is_ok());
}
