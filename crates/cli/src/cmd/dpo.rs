//! `rlhf dpo`: direct preference optimisation on rankings or preference pairs.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_train::{DpoConfig, DpoLoss, Resume};

use crate::common::{ConfigArgs, LoraArgs};

/// Align a checkpoint directly on preferences, without a reward model or sampling: DPO (the
/// logistic loss on each ranked pair, with optional label smoothing), IPO, or the listwise
/// Plackett–Luce loss over a whole K-way ranking. The reference is the checkpoint as loaded, its
/// log-probs computed once up front. Reads our rankings ({"prompt","responses","ranking"}, ties
/// as nested lists) and TRL's preference files: {"prompt","chosen","rejected"} as strings or as
/// message lists, or chosen/rejected conversations with an implicit prompt, with an optional
/// "system" string. Logs TRL's rewards/chosen, rewards/rejected, rewards/margins and
/// rewards/accuracies per step, and the held-out preference accuracy (and the noise-free oracle's,
/// for task-world prompts) before and after.
///
/// Other settings are config keys (`--set KEY=VALUE`; `--print-config` lists them with their
/// defaults): epochs (1), eval_fraction (0.1), rows, trainer.lr (1e-5), trainer.batch_size (8
/// prompts), trainer.warmup_steps, trainer.seed, and [lora].
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint to start from (the SFT model): the initial policy and the reference.
    #[arg(long)]
    model: PathBuf,
    /// Preferences JSONL (see above).
    #[arg(long)]
    data: PathBuf,
    /// Output checkpoint / run directory.
    #[arg(long)]
    out: PathBuf,
    /// The loss: sigmoid (DPO), ipo, or listwise (Plackett–Luce) [default: the config's loss,
    /// sigmoid].
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// β, the implicit reward's scale (the KL penalty's strength) [default: 0.1].
    #[arg(long)]
    beta: Option<f64>,
    /// Label smoothing ε of conservative DPO (sigmoid only) [default: 0].
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Continue the run in OUT from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LossArg {
    Sigmoid,
    Ipo,
    Listwise,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let cfg: DpoConfig = args.config.load_then(|cfg: &mut DpoConfig| {
        args.lora.apply(&mut cfg.lora)?;
        if let Some(l) = args.loss {
            cfg.loss = match l {
                LossArg::Sigmoid => DpoLoss::Sigmoid,
                LossArg::Ipo => DpoLoss::Ipo,
                LossArg::Listwise => DpoLoss::Listwise,
            };
        }
        if let Some(b) = args.beta {
            cfg.beta = b;
        }
        if let Some(e) = args.label_smoothing {
            cfg.label_smoothing = e;
        }
        Ok(())
    })?;
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let s = rlhf_train::dpo(&args.model, &args.data, &args.out, &cfg, resume, device)?;
    // Under data parallelism rank 0 reports for all (the others hold the same numbers).
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    let (a0, a1) = (&s.eval_accuracy_start, &s.eval_accuracy_end);
    let oracle = match (a0.oracle, a1.oracle) {
        (Some(o0), Some(o1)) => format!(
            "; vs the noise-free oracle {:.1}% -> {:.1}% ({} pairs)",
            100.0 * o0,
            100.0 * o1,
            a1.oracle_pairs
        ),
        _ => String::new(),
    };
    eprintln!(
        "DPO ({:?}, beta {}): {} train / {} held-out prompts, {} steps in {:.1} s (reference \
         log-probs {:.1} s); held-out preference accuracy vs the labels {:.1}% -> {:.1}% ({} \
         pairs){oracle}; saved to {}",
        s.loss,
        cfg.beta,
        s.train_prompts,
        s.eval_prompts,
        s.steps,
        s.elapsed_s,
        s.reference_s,
        100.0 * a0.labels,
        100.0 * a1.labels,
        a1.label_pairs,
        s.out.display()
    );
    Ok(())
}
