//! `rlhf pretrain`: a byte-level BPE and a tiny decoder trained from scratch on a corpus.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_train::{Preset, PretrainConfig, Resume};

use crate::common::ConfigArgs;

/// Pretrain a tiny Llama-family model from scratch on `DATA/corpus.txt` (documents separated by
/// blank lines): trains a byte-level BPE, then the model, with a held-out loss, metrics.jsonl,
/// checkpoints and exact --resume. OUT becomes a complete checkpoint dir.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task-world directory (from `rlhf data`) holding corpus.txt.
    #[arg(long)]
    data: PathBuf,
    /// Output checkpoint / run directory.
    #[arg(long)]
    out: PathBuf,
    /// Model size: nano (~0.15M params), micro (~1.1M), small (~5.8M) [default: micro, or the
    /// config's `preset`].
    #[arg(long)]
    preset: Option<Preset>,
    /// Continue the run in OUT from its latest checkpoint (bitwise identical on CPU).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let mut cfg: PretrainConfig = args.config.load()?;
    if let Some(p) = args.preset {
        cfg.preset = p;
    }
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let s = rlhf_train::pretrain(&args.data, &args.out, &cfg, resume, device, true)?;
    // Under data parallelism rank 0 reports for all (the others hold the same numbers).
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    eprintln!(
        "pretrained {:?}: {} params, {} steps in {:.1} s; held-out loss {:.3} -> {:.3}; saved to {}",
        cfg.preset,
        s.params,
        s.steps,
        s.elapsed_s,
        s.eval_loss_start,
        s.eval_loss_end,
        s.out.display()
    );
    Ok(())
}
