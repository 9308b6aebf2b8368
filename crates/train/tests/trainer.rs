//! The loop end to end on a tiny Llama: exact resume, gradient-accumulation equivalence (plain
//! and token-weighted), NaN stop, checkpoint atomicity, wrong-model resume, the run folder's
//! files, and clear errors for unusable run directories.

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use common::{Batches, Lm, VOCAB, config, data, recorder, run};
use rlhf_train::checkpoint::{self, INFO_FILE};
use rlhf_train::{
    Event, LossWeighting, RandomTokens, Resume, RunOptions, TrainError, Trainer, TrainerConfig,
    run_steps,
};
use tch::{Device, Kind, Tensor};

fn same_params(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.equal(&y.1))
}

#[test]
fn resume_continues_bit_for_bit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let straight_dir = tmp.path().join("straight");
    let mut lm = Lm::new(0, 32);
    let mut trainer = Trainer::new(config(), run(&straight_dir, Resume::No)).expect("trainer");
    let straight = recorder(&mut trainer, None);
    trainer.fit(&mut lm, &mut data()).expect("straight run");
    let final_params = lm.snapshot();

    // Interrupted at step 6, after the step-4 checkpoint: steps 5 and 6 are lost and redone.
    let dir = tmp.path().join("resumed");
    let mut lm = Lm::new(0, 32);
    let mut trainer = Trainer::new(config(), run(&dir, Resume::No)).expect("trainer");
    let first = recorder(&mut trainer, Some(6));
    assert!(trainer.fit(&mut lm, &mut data()).is_err());
    // Another initialisation and data seed: everything must come from the checkpoint.
    let mut lm = Lm::new(99, 32);
    let mut data = RandomTokens::new(VOCAB, 4, 16, 12345);
    let mut trainer = Trainer::new(config(), run(&dir, Resume::Latest)).expect("trainer");
    let second = recorder(&mut trainer, None);
    let summary = trainer.fit(&mut lm, &mut data).expect("resumed run");

    let straight = straight.borrow().clone();
    assert_eq!(straight.len(), 8);
    assert_eq!(first.borrow()[..], straight[..6]);
    assert_eq!(
        second.borrow()[..],
        straight[4..],
        "losses after resume, bitwise"
    );
    assert!(
        same_params(&lm.snapshot(), &final_params),
        "final weights, bitwise"
    );
    assert_eq!(summary.step, 8);

    // metrics.jsonl holds steps 1..=8 once each: the lost steps 5 and 6 were dropped on resume.
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["step"].as_u64())
        .map(|s| s.expect("step"))
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[test]
fn accumulation_equals_one_big_batch() {
    let mut gen_data = RandomTokens::new(VOCAB, 8, 16, 3);
    let big = rlhf_train::DataSource::next_batch(&mut gen_data)
        .expect("batch")
        .expect("some");
    let micro: Vec<Tensor> = (0..4).map(|i| big.narrow(0, 2 * i, 2)).collect();
    let cfg = |grad_accum| TrainerConfig {
        lr: 1e-3,
        warmup_steps: 0,
        grad_accum,
        ..Default::default()
    };
    let one = step_once(&cfg(1), vec![big.shallow_clone()]);
    let four = step_once(&cfg(4), micro);
    let init = Lm::new(0, 32).snapshot();
    let (mut diff, mut moved) = (0f64, 0f64);
    for ((a, b), c) in one.iter().zip(&four).zip(&init) {
        diff = diff.max(max_abs(&a.1, &b.1));
        moved = moved.max(max_abs(&a.1, &c.1));
    }
    assert!(diff < 1e-5, "batch 8 vs 4 x 2: max param difference {diff}");
    assert!(moved > 1e-4, "the step must move the parameters ({moved})");
}

/// Micro-batches with different numbers of counted tokens (id 0 targets are ignored): token
/// weighting reproduces the big batch's per-token mean; a plain mean of micro-batch means does not.
#[test]
fn token_weighting_is_exact_for_uneven_micro_batches() {
    let mut gen_data = RandomTokens::new(VOCAB, 8, 16, 4);
    let big = rlhf_train::DataSource::next_batch(&mut gen_data)
        .expect("batch")
        .expect("some");
    // Rows 0-1 keep 3 targets, rows 2-3 keep 15, the rest all of theirs.
    let _ = big.narrow(0, 0, 2).narrow(1, 4, 12).fill_(0);
    let _ = big.narrow(0, 2, 2).narrow(1, 15, 1).fill_(0);
    let micro = || (0..4).map(|i| big.narrow(0, 2 * i, 2)).collect::<Vec<_>>();
    let cfg = |grad_accum, loss_weighting| TrainerConfig {
        lr: 1e-3,
        warmup_steps: 0,
        grad_accum,
        loss_weighting,
        ..Default::default()
    };
    let one = step_once(&cfg(1, LossWeighting::Tokens), vec![big.shallow_clone()]);
    let tokens = step_once(&cfg(4, LossWeighting::Tokens), micro());
    let plain = step_once(&cfg(4, LossWeighting::MicroBatch), micro());
    let worst = |x: &[(String, Tensor)]| {
        x.iter()
            .zip(&one)
            .map(|(a, b)| max_abs(&a.1, &b.1))
            .fold(0.0, f64::max)
    };
    assert!(worst(&tokens) < 1e-5, "token weighting: {}", worst(&tokens));
    assert!(
        worst(&plain) > 1e-4,
        "micro-batch mean should differ: {}",
        worst(&plain)
    );
}

fn step_once(cfg: &TrainerConfig, batches: Vec<Tensor>) -> Vec<(String, Tensor)> {
    let mut lm = Lm::new(0, 32);
    let mut data = Batches { batches, next: 0 };
    let records = run_steps(cfg, &mut lm, &mut data, 1).expect("one step");
    assert_eq!(records.len(), 1);
    lm.snapshot()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).expect("scalar")
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = TrainerConfig {
        checkpoint_every: 2,
        grad_accum: 1,
        keep_checkpoints: 2,
        ..config()
    };
    let mut lm = Lm::new(0, 32);
    lm.nan_at_call = Some(5);
    let mut trainer = Trainer::new(cfg, run(tmp.path(), Resume::No)).expect("trainer");
    let snapshot = Rc::new(RefCell::new(Vec::new()));
    let sink = snapshot.clone();
    trainer.add_callback(move |event: &Event<'_>| {
        if let Event::Checkpoint { dir, .. } = event {
            *sink.borrow_mut() = std::fs::read(dir.join("model.safetensors")).expect("model");
        }
        Ok(())
    });
    let err = trainer
        .fit(&mut lm, &mut data())
        .expect_err("NaN must stop training");
    let msg = err.to_string();
    assert!(
        matches!(err, TrainError::NonFinite { step: 5, .. }),
        "{msg}"
    );
    assert!(msg.starts_with("step 5: the loss is NaN"), "{msg}");
    assert!(msg.contains("step-00000004"), "{msg}");

    let latest = checkpoint::latest(tmp.path())
        .expect("list")
        .expect("a checkpoint");
    assert!(latest.ends_with("step-00000004"));
    assert_eq!(checkpoint::read_info(&latest).expect("rlhf.json").step, 4);
    let on_disk = std::fs::read(latest.join("model.safetensors")).expect("model");
    assert_eq!(
        on_disk,
        *snapshot.borrow(),
        "the last good checkpoint is untouched"
    );
    // The NaN step updated nothing: the model still equals the step-4 checkpoint.
    let reloaded = Lm::new(1, 32);
    checkpoint::load_gpt(&reloaded.gpt, &latest).expect("loadable");
    assert!(same_params(&reloaded.snapshot(), &lm.snapshot()));
}

#[test]
fn interrupted_checkpoint_write_leaves_the_previous_one_loadable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = TrainerConfig {
        checkpoint_every: 2,
        max_steps: 6,
        ..config()
    };
    let mut lm = Lm::new(0, 32);
    lm.fail_save_at = Some(2); // step 4's save dies after writing the model files
    let mut trainer = Trainer::new(cfg.clone(), run(tmp.path(), Resume::No)).expect("trainer");
    let err = trainer.fit(&mut lm, &mut data()).expect_err("save fails");
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let ckpts = checkpoint::checkpoints_dir(tmp.path());
    assert!(!ckpts.join("step-00000004").exists());
    // What a real crash at that moment leaves behind: a temporary directory. Ignored.
    let junk = ckpts.join(".tmp-step-00000004");
    std::fs::create_dir_all(&junk).expect("mkdir");
    std::fs::write(junk.join(INFO_FILE), "{\"step\": 4, trunc").expect("write");
    let latest = checkpoint::latest(tmp.path()).expect("list").expect("some");
    assert!(latest.ends_with("step-00000002"));

    let mut lm = Lm::new(5, 32);
    let mut trainer = Trainer::new(cfg, run(tmp.path(), Resume::Latest)).expect("trainer");
    let summary = trainer
        .fit(&mut lm, &mut data())
        .expect("resume from step 2");
    assert_eq!(summary.step, 6);
    assert!(
        !junk.exists(),
        "stale temporaries are cleaned up by the next write"
    );
    let steps: Vec<u64> = checkpoint::list(tmp.path())
        .expect("list")
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![2, 4, 6]);
}

#[test]
fn resuming_another_model_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = TrainerConfig {
        max_steps: 2,
        ..config()
    };
    let mut trainer = Trainer::new(cfg.clone(), run(tmp.path(), Resume::No)).expect("trainer");
    trainer.fit(&mut Lm::new(0, 32), &mut data()).expect("run");
    let mut bigger = Lm::new(0, 48);
    let mut trainer = Trainer::new(cfg.clone(), run(tmp.path(), Resume::Latest)).expect("ok");
    let err = trainer
        .fit(&mut bigger, &mut data())
        .expect_err("other model");
    let msg = err.to_string();
    assert!(
        msg.contains("different model") && msg.contains("hidden_size 32 vs 48"),
        "{msg}"
    );

    let other_stage = RunOptions {
        stage: "sft".into(),
        ..run(tmp.path(), Resume::Latest)
    };
    let err = Trainer::new(cfg.clone(), other_stage)
        .expect("trainer")
        .fit(&mut Lm::new(0, 32), &mut data())
        .expect_err("other stage");
    assert!(err.to_string().contains("stage 'pretrain'"), "{err}");

    let err = Trainer::new(cfg, run(tmp.path(), Resume::No))
        .err()
        .expect("fresh run");
    assert!(
        err.to_string().contains("already holds checkpoints"),
        "{err}"
    );
}

#[test]
fn unusable_run_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let dir: PathBuf = file.join("run");
    let err = Trainer::new(config(), run(&dir, Resume::No))
        .err()
        .expect("error");
    let msg = err.to_string();
    assert!(msg.starts_with("cannot create the run directory"), "{msg}");
    assert!(msg.contains("not-a-dir/run"), "{msg}");

    let empty = tmp.path().join("empty");
    let err = Trainer::new(config(), run(&empty, Resume::Latest))
        .expect("trainer")
        .fit(&mut Lm::new(0, 32), &mut data())
        .expect_err("nothing to resume");
    assert!(
        err.to_string().contains("no checkpoint to resume from"),
        "{err}"
    );
}

/// The run folder: config.toml, metrics.jsonl (steps and evaluations), checkpoints that describe
/// themselves and load as plain models; the loss falls on the learnable synthetic data.
#[test]
fn run_folder_contents_and_learning() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = TrainerConfig {
        max_steps: 30,
        eval_every: 10,
        checkpoint_every: 10,
        keep_checkpoints: 2,
        warmup_steps: 3,
        ..config()
    };
    let mut options = run(tmp.path(), Resume::No);
    options.config = rlhf_train::config::to_table(&cfg).expect("table");
    let mut lm = Lm::new(0, 32);
    let summary = Trainer::new(cfg.clone(), options)
        .expect("trainer")
        .fit(&mut lm, &mut data())
        .expect("run");
    assert_eq!(summary.step, 30);

    let toml_text = std::fs::read_to_string(tmp.path().join("config.toml")).expect("config");
    let back: TrainerConfig = rlhf_train::config::from_str(&toml_text, "c", &[]).expect("parse");
    assert_eq!(back, cfg);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(tmp.path().join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 30 + 3);
    for key in [
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_s",
        "elapsed_s",
    ] {
        assert!(lines[0].get(key).is_some(), "{key} missing: {}", lines[0]);
    }
    assert_eq!(
        lines[0]["half"].as_f64(),
        Some(0.5),
        "step metrics are averaged"
    );
    let tokens: u64 = lines.iter().filter_map(|l| l["tokens"].as_u64()).sum();
    assert_eq!(tokens, summary.tokens_seen);
    // 2 micro-batches of 4 rows, 15 targets each, less the ignored id-0 targets.
    assert!(
        tokens <= 30 * 2 * 4 * 15 && tokens > 30 * 2 * 4 * 13,
        "{tokens}"
    );
    assert_eq!(lines[10]["step"].as_u64(), Some(10));
    assert!(lines[10]["eval/loss"].as_f64().is_some(), "{}", lines[10]);
    let first = lines[0]["loss"].as_f64().expect("loss");
    let last = summary.last.expect("record").loss;
    assert!(last < first - 0.5, "loss should fall: {first} -> {last}");

    let kept: Vec<u64> = checkpoint::list(tmp.path())
        .expect("list")
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, vec![20, 30], "keep_checkpoints = 2");
    let dir = summary.checkpoint.expect("final checkpoint");
    let info = checkpoint::read_info(&dir).expect("rlhf.json");
    assert_eq!(
        (info.format_version, info.step),
        (checkpoint::FORMAT_VERSION, 30)
    );
    assert_eq!(info.stage, "pretrain");
    assert_eq!(info.config["max_steps"].as_u64(), Some(30));
    assert!(info.metrics.contains_key("eval/loss") && info.metrics.contains_key("loss"));
    // A checkpoint is also a plain Hugging Face model directory.
    let gpt = rlhf_model::Gpt::load(&dir, rlhf_model::Head::Lm, Device::Cpu).expect("load");
    assert_eq!(gpt.kind(), Kind::Float);
}

/// A resume must come from the same configuration (up to how long to run and how often to
/// checkpoint) and the same inputs, compared by content; a refused resume leaves `config.toml`
/// as the run wrote it.
#[test]
fn resuming_with_another_configuration_or_input_is_refused() {
    use rlhf_train::RunInput;
    let tmp = tempfile::tempdir().expect("tmp");
    let data_file = tmp.path().join("data.jsonl");
    std::fs::write(&data_file, "{\"text\": \"a\"}\n").expect("write");
    let table = |lr: f64, max_steps: i64| {
        let mut t = toml::Table::new();
        t.insert("lr".into(), lr.into());
        t.insert("max_steps".into(), max_steps.into());
        t
    };
    let dir = tmp.path().join("run");
    let options = |resume, lr, max_steps| RunOptions {
        config: table(lr, max_steps),
        inputs: vec![RunInput::new("data", &data_file).expect("fingerprint")],
        ..run(&dir, resume)
    };
    let cfg = TrainerConfig {
        max_steps: 2,
        ..config()
    };
    let mut trainer = Trainer::new(cfg.clone(), options(Resume::No, 1e-2, 2)).expect("trainer");
    trainer.fit(&mut Lm::new(0, 32), &mut data()).expect("run");
    let written = std::fs::read_to_string(dir.join("config.toml")).expect("config.toml");
    assert!(written.contains("lr = 0.01"), "{written}");

    let err = Trainer::new(cfg.clone(), options(Resume::Latest, 3e-3, 2))
        .expect("trainer")
        .fit(&mut Lm::new(0, 32), &mut data())
        .expect_err("another lr");
    let msg = err.to_string();
    assert!(
        msg.contains("another configuration") && msg.contains("lr 0.01 vs 0.003"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("config.toml")).expect("read"),
        written
    );

    std::fs::write(&data_file, "{\"text\": \"b\"}\n").expect("write");
    let err = Trainer::new(cfg.clone(), options(Resume::Latest, 1e-2, 2))
        .expect("trainer")
        .fit(&mut Lm::new(0, 32), &mut data())
        .expect_err("other data");
    assert!(err.to_string().contains("another data"), "{err}");

    // Running longer is a legitimate change.
    std::fs::write(&data_file, "{\"text\": \"a\"}\n").expect("write");
    let longer = TrainerConfig {
        max_steps: 4,
        ..config()
    };
    let summary = Trainer::new(longer, options(Resume::Latest, 1e-2, 4))
        .expect("trainer")
        .fit(&mut Lm::new(0, 32), &mut data())
        .expect("resume with more steps");
    assert_eq!(summary.step, 4);
}
