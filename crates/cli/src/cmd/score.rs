//! `rlhf score`: rewards of sampled responses under a reward model (`rlhf_eval::RewardModel`).

use std::path::PathBuf;

use anyhow::Result;
use rlhf_data::{SampleRecord, read_jsonl};
use rlhf_eval::{RewardModel, Scorer};

/// Score every response of a samples file with a reward model; prints one JSON object per prompt:
/// {"prompt", "responses", "rewards"}.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reward-model directory (from `rlhf reward`).
    #[arg(long)]
    rm: PathBuf,
    /// Samples JSONL: {"prompt", "responses": [...]}.
    #[arg(long)]
    data: PathBuf,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let mut rm = RewardModel::load(&args.rm, device)?;
    let samples: Vec<SampleRecord> = read_jsonl(&args.data)?;
    for s in samples {
        // One sample's responses per forward pass.
        rm.rows = s.responses.len().max(1);
        let prompts = vec![s.prompt.clone(); s.responses.len()];
        let rewards: Vec<f32> = rm
            .score(&prompts, &s.responses)?
            .into_iter()
            .map(|r| r as f32)
            .collect();
        let line = serde_json::json!({
            "prompt": s.prompt, "responses": s.responses, "rewards": rewards
        });
        crate::common::print_line(line)?;
    }
    Ok(())
}
