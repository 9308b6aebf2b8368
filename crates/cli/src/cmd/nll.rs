//! `rlhf nll`: mean next-token negative log-likelihood of a JSONL file of texts.

use std::path::PathBuf;

use anyhow::{Result, bail};
use rlhf_data::TextRecord;
use rlhf_model::{Head, Pretrained};

/// Mean per-token NLL (natural log) of {"text": ...} lines, each encoded with the tokenizer's
/// default special tokens (like transformers). Prints {"tokens": N, "mean_nll": X}.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// JSONL file with one {"text": ...} object per line.
    #[arg(long)]
    data: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let mut texts = Vec::new();
    let max = pre.model.cfg.max_positions as usize;
    let budget = rlhf_train::data::text_budget(&pre);
    let records: Vec<(usize, TextRecord)> =
        rlhf_data::read_jsonl_within(&args.data, budget.as_ref())?;
    for (line, r) in records {
        let ids = pre.encode_prompt(&r.text, rlhf_model::PromptFormat::Raw)?;
        if ids.len() > max {
            bail!(
                "{}:{line}: text has {} tokens, more than the model's context of {max}",
                args.data.display(),
                ids.len()
            );
        }
        texts.push(ids);
    }
    let (total, tokens) = pre.nll(&texts, args.batch_size)?;
    if tokens == 0 {
        bail!(
            "{}: no predicted tokens (every text encodes to fewer than 2 tokens)",
            args.data.display()
        );
    }
    crate::common::print_line(
        serde_json::json!({ "tokens": tokens, "mean_nll": total / tokens as f64 }),
    )?;
    Ok(())
}
