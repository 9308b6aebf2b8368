//! `rlhf reward`: train a reward model on rankings (InstructGPT step 2).

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlhf_train::{Resume, RewardConfig};

use crate::common::{ConfigArgs, LoraArgs};

/// Train a reward model from an SFT checkpoint: its LM head is replaced by a scalar head (init
/// N(0, 1/(d+1))), the reward is read at the final (EOS) token, and each prompt's K ranked
/// responses form one batch element with loss -1/C(K,2) Σ log σ(r_w − r_l) over its untied pairs.
/// Also accepts {"prompt","chosen","rejected"} pairs. Several rankings of the same prompt and
/// responses (in the same order), e.g. two labelers', are pooled into one batch element with
/// all their pairs. 1 epoch by default; held-out pairwise accuracy is reported; afterwards the
/// head's bias centres the training responses at 0.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SFT checkpoint to start from.
    #[arg(long)]
    model: PathBuf,
    /// Rankings JSONL ({"prompt","responses","ranking"}) and/or pairs ({"prompt","chosen","rejected"}).
    #[arg(long)]
    data: PathBuf,
    /// Output reward-model directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in OUT from its latest checkpoint (bitwise identical on CPU).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let lora = &args.lora;
    let cfg: RewardConfig = args
        .config
        .load_then(|c: &mut RewardConfig| lora.apply(&mut c.lora))?;
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let s = rlhf_train::reward(&args.model, &args.data, &args.out, &cfg, resume, device)?;
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
    if s.pooled > 0 {
        eprintln!(
            "{} records repeat an earlier record's prompt and responses (another labeler's \
             ranking of the same sample): their pairs were pooled into it",
            s.pooled
        );
    }
    eprintln!(
        "reward model: {} train / {} held-out prompts ({} examples, {:?} pairing), {} steps in \
         {:.1} s; held-out pairwise accuracy vs the labels {:.1}% -> {:.1}% ({} pairs){oracle}; \
         rewards centred (mean {:.3} removed, std {:.3}); saved to {}",
        s.train_prompts,
        s.eval_prompts,
        s.train_examples,
        cfg.pairing,
        s.steps,
        s.elapsed_s,
        100.0 * a0.labels,
        100.0 * a1.labels,
        a1.label_pairs,
        s.centred_mean,
        s.reward_std,
        s.out.display()
    );
    let acc = |a: &rlhf_train::reward::Accuracy| {
        serde_json::json!({ "labels": a.labels, "label_pairs": a.label_pairs,
                            "oracle": a.oracle, "oracle_pairs": a.oracle_pairs })
    };
    let summary = serde_json::json!({
        "train_prompts": s.train_prompts, "eval_prompts": s.eval_prompts,
        "train_examples": s.train_examples, "pooled_records": s.pooled,
        "pairing": cfg.pairing, "epochs": cfg.epochs,
        "steps": s.steps, "elapsed_s": s.elapsed_s,
        "eval_accuracy_start": acc(&s.eval_accuracy_start),
        "eval_accuracy_end": acc(&s.eval_accuracy_end),
        "centred_mean": s.centred_mean, "reward_std": s.reward_std,
    });
    let path = s.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
