//! `rlhf data`: write the task world (corpus, SFT demonstrations, prompts, held-out eval set).

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlhf_data::{WorldConfig, write_world};

use crate::common::ConfigArgs;

/// Generate the embedded task world: arithmetic word problems with chain-of-thought
/// demonstrations, list and word-count instructions, a pretraining corpus from the same world,
/// prompts for RL and a held-out eval set (disjoint entities and operands). Deterministic from the
/// seed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory: corpus.txt, corpus.jsonl, sft.jsonl, prompts.jsonl, eval.jsonl, world.json.
    #[arg(long)]
    out: PathBuf,
    /// Seed of every random choice (overrides `seed` in the config).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: Args) -> Result<()> {
    let mut cfg: WorldConfig = args.config.load()?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let summary = write_world(&args.out, &cfg)?;
    for f in &summary.files {
        eprintln!(
            "  {:<14} {:>6} records {:>10} bytes",
            f.name, f.records, f.bytes
        );
    }
    eprintln!(
        "task world (seed {}) written to {}",
        summary.seed,
        args.out.display()
    );
    Ok(())
}
