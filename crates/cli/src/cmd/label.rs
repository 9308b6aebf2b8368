//! `rlhf label --oracle`: simulated labelers rank each prompt's responses.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rlhf_data::{
    LabelerConfig, RankingRecord, SampleRecord, SimulatedLabeler, read_jsonl, write_jsonl,
};

/// Rank samples. With --oracle, simulated labelers (the task world's oracle with Bradley–Terry
/// noise calibrated to InstructGPT's ~73% inter-labeler agreement) rank each prompt's K
/// responses; prompts go round-robin to the labelers. Ties are written as nested lists.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use the simulated labelers (the only labeling source so far).
    #[arg(long)]
    oracle: bool,
    /// Samples JSONL: {"prompt", "responses": [...]} (task-world prompts).
    #[arg(long)]
    samples: PathBuf,
    /// Output rankings JSONL: {"prompt", "responses", "ranking"}.
    #[arg(long)]
    out: PathBuf,
    /// Number of simulated labelers.
    #[arg(long, default_value_t = 4)]
    labelers: u64,
    /// Seed of the labelers' noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Noise temperature τ; 0 ranks by the oracle exactly [default: the calibrated 0.39].
    #[arg(long)]
    tau: Option<f64>,
}

pub fn run(args: Args) -> Result<()> {
    if !args.oracle {
        bail!("give --oracle (human labeling and AI judges are not implemented yet)");
    }
    anyhow::ensure!(args.labelers >= 1, "--labelers must be at least 1");
    let mut cfg = LabelerConfig::default();
    if let Some(tau) = args.tau {
        cfg.tau = tau;
    }
    let labelers: Vec<SimulatedLabeler> = (0..args.labelers)
        .map(|i| SimulatedLabeler::new(args.seed.wrapping_mul(1000) + i, &cfg))
        .collect::<rlhf_data::Result<_>>()?;
    let samples: Vec<SampleRecord> = read_jsonl(&args.samples)?;
    let mut out = Vec::with_capacity(samples.len());
    for (line, s) in samples.into_iter().enumerate() {
        let labeler = &labelers[line % labelers.len()];
        let ranking = labeler
            .rank_prompt(&s.prompt, &s.responses)
            .with_context(|| {
                format!(
                    "{}: record {}: cannot rank",
                    args.samples.display(),
                    line + 1
                )
            })?;
        let record = RankingRecord::new(s.prompt, s.responses, ranking)
            .map_err(|e| anyhow::anyhow!("{}: record {}: {e}", args.samples.display(), line + 1))?;
        out.push(record);
    }
    write_jsonl(&args.out, &out).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "{} rankings by {} simulated labelers -> {}",
        out.len(),
        labelers.len(),
        args.out.display()
    );
    Ok(())
}
