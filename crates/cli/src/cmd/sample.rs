//! `rlhf sample`: K responses per prompt, the input of labeling and of the reward model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rlhf_data::{PromptRecord, SampleRecord, read_jsonl, write_jsonl};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};

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
    anyhow::ensure!(
        args.k >= 2,
        "--k must be at least 2 (rankings compare responses)"
    );
    let sampling = Sampling::new(args.temperature, args.top_k, args.top_p)?;
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let mut records: Vec<PromptRecord> = read_jsonl(&args.prompts)?;
    records.truncate(args.limit.unwrap_or(records.len()));
    let prompts: Vec<String> = records.into_iter().map(|r| r.prompt).collect();
    let format = if args.raw {
        PromptFormat::Raw
    } else {
        PromptFormat::Chat
    };
    let cfg = TextGenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: Some(args.seed),
        stop: vec![],
    };
    let bar = ProgressBar::new((prompts.len() * args.k) as u64).with_style(
        ProgressStyle::with_template("sampling {bar:30} {pos}/{len} responses ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let gens = pre.sample_k(&prompts, args.k, format, &cfg, args.batch_size, |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    let mut out = Vec::new();
    for (prompt, gens) in prompts.into_iter().zip(gens) {
        let responses: Vec<String> = gens
            .into_iter()
            .map(|g| g.text.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if responses.len() < 2 {
            eprintln!("warning: skipped (fewer than 2 non-empty responses): {prompt}");
            continue;
        }
        out.push(SampleRecord { prompt, responses });
    }
    write_jsonl(&args.out, &out).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "{} prompts × up to {} responses -> {}",
        out.len(),
        args.k,
        args.out.display()
    );
    Ok(())
}
