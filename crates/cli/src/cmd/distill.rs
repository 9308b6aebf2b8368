//! `rlhf distill`: a teacher adapted with a few gold labels labels an unlabelled pool; a student
//! is fine-tuned on the labels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rlhf_client::Endpoint;
use rlhf_data::{PromptRecord, SftRecord, read_jsonl, write_jsonl};
use rlhf_model::{Head, Pretrained, PromptFormat};
use rlhf_train::distill::{self, DistillConfig, Label};
use rlhf_train::{Resume, SftConfig};
use serde::{Deserialize, Serialize};

use crate::common::ConfigArgs;

/// Super-teacher distillation: the teacher (a checkpoint, or any model behind an
/// OpenAI-compatible endpoint such as `rlhf serve`, vLLM or llama.cpp) is adapted to the task
/// with the --gold labels (a checkpoint is fine-tuned on them, `[adapt]`; an endpoint sees the
/// first `distill.shots` of them as few-shot turns), labels every --pool prompt, the filter drops
/// empty labels (and, with `distill.rationales = true`, rationales without a final answer line),
/// and the --student checkpoint is fine-tuned on the rest (`[student]`). Writes OUT/labels.jsonl
/// (kept, `rlhf sft` format), OUT/dropped.jsonl, OUT/teacher/ (an adapted local teacher),
/// OUT/student/ and OUT/report.json.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// DIR (a chat checkpoint) or openai:URL (POST URL/v1/chat/completions; OPENAI_API_KEY is
    /// sent if set).
    #[arg(long, value_parser = parse_teacher)]
    teacher: Teacher,
    /// Unlabelled prompts: JSONL of {"prompt"}.
    #[arg(long)]
    pool: PathBuf,
    /// Checkpoint to fine-tune on the labels.
    #[arg(long)]
    student: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// A few gold labels: JSONL of {"prompt", "completion"} [default: none; the teacher is used
    /// as it is].
    #[arg(long)]
    gold: Option<PathBuf>,
    /// Model name sent to an openai: teacher [default: the first model the server lists].
    #[arg(long)]
    teacher_model: Option<String>,
    /// Concurrent requests to an openai: teacher.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds before a request to an openai: teacher fails.
    #[arg(long, default_value_t = rlhf_client::endpoint::DEFAULT_TIMEOUT_S)]
    timeout: u64,
    /// Retries of a failed teacher request (no connection, 408/409/429/5xx), with exponential
    /// backoff from 0.5 s.
    #[arg(long, default_value_t = rlhf_client::endpoint::DEFAULT_RETRIES)]
    retries: u32,
    /// Label the pool and stop (no student).
    #[arg(long)]
    label_only: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Clone)]
enum Teacher {
    Local(PathBuf),
    OpenAi(Endpoint),
}

fn parse_teacher(s: &str) -> std::result::Result<Teacher, String> {
    if Endpoint::is_spec(s) {
        return Endpoint::parse(s).map(Teacher::OpenAi);
    }
    if s.is_empty() {
        return Err("expected a checkpoint directory or openai:URL".into());
    }
    Ok(Teacher::Local(s.into()))
}

/// `[distill]` (labelling and filtering), `[adapt]` (fine-tuning a local teacher on the gold
/// labels) and `[student]` (fine-tuning the student on the kept labels).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillCliConfig {
    pub distill: DistillConfig,
    pub adapt: SftConfig,
    pub student: SftConfig,
}

impl Default for DistillCliConfig {
    fn default() -> Self {
        let base = SftConfig::default();
        // A few gold labels: short and gentle, nothing held out.
        let adapt = SftConfig {
            eval_fraction: 0.0,
            trainer: rlhf_train::TrainerConfig {
                max_steps: 100,
                batch_size: 8,
                lr: 3e-4,
                eval_every: 0,
                ..base.trainer.clone()
            },
            lora: Default::default(),
        };
        Self {
            distill: DistillConfig::default(),
            adapt,
            student: SftConfig::default(),
        }
    }
}

fn gold_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let records: Vec<SftRecord> = read_jsonl(path)?;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            SftRecord::Completion { prompt, completion } => Ok((prompt, completion)),
            SftRecord::Chat { .. } => anyhow::bail!(
                "{}:{}: expected {{\"prompt\", \"completion\"}}, found a chat record",
                path.display(),
                i + 1
            ),
        })
        .collect()
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let cfg: DistillCliConfig = args.config.load()?;
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let pool: Vec<String> = read_jsonl::<PromptRecord>(&args.pool)?
        .into_iter()
        .map(|r| r.prompt)
        .collect();
    anyhow::ensure!(!pool.is_empty(), "{}: no prompts", args.pool.display());
    let gold = match &args.gold {
        Some(p) => gold_pairs(p)?,
        None => Vec::new(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let t0 = Instant::now();
    let outputs = match &args.teacher {
        Teacher::Local(dir) => {
            let teacher_dir = if let (false, Some(g)) = (gold.is_empty(), &args.gold) {
                let out = args.out.join("teacher");
                eprintln!(
                    "adapting the teacher on {} gold labels ({} steps)",
                    gold.len(),
                    cfg.adapt.trainer.max_steps
                );
                rlhf_train::sft(dir, g, &out, &cfg.adapt, Resume::No, device)?;
                out
            } else {
                dir.clone()
            };
            let teacher = Pretrained::load(&teacher_dir, Head::Lm, device)?;
            let bar = crate::common::progress_bar(pool.len(), "labelling");
            let out = distill::label_local(
                &teacher,
                PromptFormat::Chat,
                &pool,
                &cfg.distill,
                |done, _| bar.set_position(done as u64),
            )?;
            bar.finish_and_clear();
            out
        }
        Teacher::OpenAi(endpoint) => {
            let endpoint = endpoint.clone().with(
                args.teacher_model.clone(),
                Some(args.timeout),
                Some(args.retries),
            );
            let bar = crate::common::progress_bar(pool.len(), "labelling");
            let out = distill::label_remote(
                &endpoint,
                &gold,
                &pool,
                &cfg.distill,
                args.concurrency,
                |done| bar.set_position(done as u64),
            )?;
            bar.finish_and_clear();
            out
        }
    };
    let teacher_seconds = t0.elapsed().as_secs_f64();
    let labels = distill::filter(&pool, outputs, &cfg.distill)?;
    let kept: Vec<SftRecord> = labels
        .iter()
        .filter(|l| l.dropped.is_none())
        .map(|l| SftRecord::Completion {
            prompt: l.prompt.clone(),
            completion: l.completion.clone(),
        })
        .collect();
    let dropped: Vec<&Label> = labels.iter().filter(|l| l.dropped.is_some()).collect();
    let labels_path = args.out.join("labels.jsonl");
    write_jsonl(&labels_path, &kept)?;
    write_jsonl(args.out.join("dropped.jsonl"), &dropped)?;
    eprintln!(
        "labelled {} prompts in {teacher_seconds:.1} s: {} kept, {} dropped -> {}",
        pool.len(),
        kept.len(),
        dropped.len(),
        labels_path.display()
    );
    let mut report = serde_json::json!({
        "pool": pool.len(),
        "gold": gold.len(),
        "kept": kept.len(),
        "dropped": dropped.len(),
        "teacher_seconds": teacher_seconds,
        "config": cfg,
    });
    if !args.label_only {
        anyhow::ensure!(
            !kept.is_empty(),
            "the filter kept no label: nothing to train the student on (see {})",
            args.out.join("dropped.jsonl").display()
        );
        let out = args.out.join("student");
        let s = rlhf_train::sft(
            &args.student,
            &labels_path,
            &out,
            &cfg.student,
            Resume::No,
            device,
        )?;
        eprintln!(
            "student: {} steps in {:.1} s, held-out loss {:.3} -> {:.3}; checkpoint {}",
            s.steps,
            s.elapsed_s,
            s.eval_loss_start,
            s.eval_loss_end,
            out.display()
        );
        report["student"] = serde_json::json!({
            "steps": s.steps,
            "seconds": s.elapsed_s,
            "train_examples": s.train_examples,
            "eval_loss_start": s.eval_loss_start,
            "eval_loss_end": s.eval_loss_end,
            "checkpoint": out,
        });
    }
    let path = args.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teachers_parse() {
        assert!(
            matches!(parse_teacher("openai:http://h:8/"), Ok(Teacher::OpenAi(e)) if e.url == "http://h:8")
        );
        assert!(matches!(parse_teacher("models/big"), Ok(Teacher::Local(_))));
        assert!(parse_teacher("openai:h:8").is_err());
    }
}
