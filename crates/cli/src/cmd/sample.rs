//! `rlhf sample`: K responses per prompt, the input of labeling and of the reward model
//! (`rlhf_train::sample`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlhf_data::{PromptRecord, read_jsonl, write_jsonl};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling};
use rlhf_train::sample::{SampleConfig, sample_responses};

/// Sample K responses per prompt (KV cache, batched). Prompts are wrapped as a user message with
/// the checkpoint's chat template (tiny models trained here carry a ChatML default); empty
/// responses are dropped, and a prompt left with fewer than 2 responses is skipped with a warning.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// JSONL of {"prompt": ...} records (extra fields are ignored).
    #[arg(long)]
    prompts: PathBuf,
    /// Responses per prompt (InstructGPT ranked K = 4 to 9).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Output JSONL: {"prompt", "responses": [...]}.
    #[arg(long)]
    out: PathBuf,
    /// Use the prompt text as is instead of the chat template.
    #[arg(long)]
    raw: bool,
    /// Maximum new tokens per response.
    #[arg(long, default_value_t = 96)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (then all K responses are the same).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Keep only the K most likely tokens [default: no limit].
    #[arg(long)]
    top_k: Option<i64>,
    /// Nucleus sampling threshold [default: 1.0].
    #[arg(long)]
    top_p: Option<f64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences generated together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Use only the first N prompts [default: all].
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let cfg = SampleConfig {
        k: args.k,
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling::new(args.temperature, args.top_k, args.top_p)?,
        seed: args.seed,
        format: if args.raw {
            PromptFormat::Raw
        } else {
            PromptFormat::Chat
        },
        rows: args.batch_size,
    };
    anyhow::ensure!(
        cfg.k >= 2,
        "--k must be at least 2 (rankings compare responses)"
    );
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let mut records: Vec<PromptRecord> = read_jsonl(&args.prompts)?;
    records.truncate(args.limit.unwrap_or(records.len()));
    let prompts: Vec<String> = records.into_iter().map(|r| r.prompt).collect();
    let bar = crate::common::progress_bar(prompts.len() * args.k, "sampling");
    let sampled = sample_responses(&pre, &prompts, &cfg, |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    for p in &sampled.skipped {
        eprintln!("warning: skipped (fewer than 2 non-empty responses): {p}");
    }
    write_jsonl(&args.out, &sampled.records)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "{} prompts × up to {} responses -> {}",
        sampled.records.len(),
        args.k,
        args.out.display()
    );
    Ok(())
}
