//! `rlhf self-improve`: LMSI — fine-tune a model on its own majority-vote reasoning paths.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlhf_data::{EvalRecord, read_jsonl, write_jsonl};
use rlhf_model::{Head, Pretrained};
use rlhf_train::lmsi::{self, LmsiConfig};
use rlhf_train::{Resume, SftConfig};
use serde::{Deserialize, Serialize};

use crate::common::ConfigArgs;

/// Self-improvement without labels (Huang et al. 2022): sample --paths reasoning paths per
/// unlabelled question at --temperature, keep every path that reaches the majority answer (the
/// vote share may be required to reach `lmsi.min_share`), fine-tune on them in four mixed
/// formats (few-shot and zero-shot, with and without the reasoning; `lmsi.formats = "cot"` keeps
/// only the two with the reasoning, which tiny models need), and report greedy and
/// self-consistency accuracy before and after on --eval (task-world word problems), with the
/// vote share's calibration. `lmsi.filter = "no-vote"` and `"gold"` are the experiment's
/// controls. Writes OUT/lmsi.jsonl (the training data), the checkpoint and OUT/report.json.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint to improve (a chat SFT model).
    #[arg(long)]
    model: PathBuf,
    /// Unlabelled questions: JSONL of {"prompt"} (any answer field is ignored).
    #[arg(long)]
    questions: PathBuf,
    /// Output checkpoint / run directory.
    #[arg(long)]
    out: PathBuf,
    /// Labelled word problems for the before/after accuracy (e.g. the task world's eval.jsonl)
    /// [default: no evaluation].
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Paths per question (overrides lmsi.paths) [default: 32].
    #[arg(long)]
    paths: Option<usize>,
    /// Sampling temperature of the paths (overrides lmsi.temperature) [default: 0.7].
    #[arg(long)]
    temperature: Option<f64>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `[lmsi]` (sampling and filtering) and `[sft]` (the fine-tuning).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfImproveConfig {
    pub lmsi: LmsiConfig,
    pub sft: SftConfig,
}

impl Default for SelfImproveConfig {
    fn default() -> Self {
        let mut sft = SftConfig::default();
        // Gentler than SFT from a base model: the model is already fine-tuned.
        sft.trainer.lr = 1e-4;
        sft.trainer.max_steps = 200;
        Self {
            lmsi: LmsiConfig::default(),
            sft,
        }
    }
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let mut cfg: SelfImproveConfig = args.config.load()?;
    if let Some(p) = args.paths {
        cfg.lmsi.paths = p;
    }
    if let Some(t) = args.temperature {
        cfg.lmsi.temperature = t;
    }
    cfg.lmsi.validate()?;
    cfg.sft.validate()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let questions = lmsi::read_questions(&args.questions)?;
    let eval: Option<Vec<EvalRecord>> = args.eval.as_ref().map(read_jsonl).transpose()?;
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let before = eval
        .as_ref()
        .map(|e| lmsi::accuracy(&pre, e, &cfg.lmsi))
        .transpose()?;
    let bar = crate::common::progress_bar(questions.len() * cfg.lmsi.paths, "sampling paths");
    let paths = lmsi::sample_paths(&pre, &questions, cfg.lmsi.paths, &cfg.lmsi, |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    let set = lmsi::training_set(&pre, &paths, cfg.lmsi.filter, cfg.lmsi.formats, &cfg.lmsi)?;
    drop(pre);
    anyhow::ensure!(
        !set.records.is_empty(),
        "no path survived the filter ({:?}): nothing to train on",
        cfg.lmsi.filter
    );
    let data = args.out.join("lmsi.jsonl");
    write_jsonl(&data, &set.records)?;
    eprintln!(
        "kept {} of {} paths ({} of {} questions, filter {:?}); {} training records -> {}",
        set.kept.len(),
        questions.len() * cfg.lmsi.paths,
        set.kept_questions,
        questions.len(),
        cfg.lmsi.filter,
        set.records.len(),
        data.display()
    );
    let s = rlhf_train::sft(&args.model, &data, &args.out, &cfg.sft, Resume::No, device)?;
    let after = match &eval {
        Some(e) => {
            let pre = Pretrained::load(&args.out, Head::Lm, device)?;
            Some(lmsi::accuracy(&pre, e, &cfg.lmsi)?)
        }
        None => None,
    };
    let report = serde_json::json!({
        "config": cfg,
        "questions": questions.len(),
        "paths": questions.len() * cfg.lmsi.paths,
        "kept_paths": set.kept.len(),
        "kept_questions": set.kept_questions,
        "training_records": set.records.len(),
        "sft": {"steps": s.steps, "eval_loss_start": s.eval_loss_start, "eval_loss_end": s.eval_loss_end},
        "before": before,
        "after": after,
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    if let (Some(b), Some(a)) = (&before, &after) {
        eprintln!(
            "on {} word problems: greedy accuracy {:.1}% -> {:.1}%, self-consistency ({} paths) \
             {:.1}% -> {:.1}%",
            b.questions,
            100.0 * b.greedy,
            100.0 * a.greedy,
            cfg.lmsi.eval_paths,
            100.0 * b.self_consistency,
            100.0 * a.self_consistency
        );
    }
    eprintln!("saved to {}", args.out.display());
    Ok(())
}
