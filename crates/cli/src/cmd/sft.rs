//! `rlhf sft`: supervised fine-tuning on demonstrations (InstructGPT step 1).

use std::path::PathBuf;

use anyhow::Result;
use rlhf_train::{Resume, SftConfig};

use crate::common::{ConfigArgs, LoraArgs};

/// Fine-tune a checkpoint on demonstrations: {"prompt","completion"} or {"messages"} JSONL. The
/// checkpoint's chat template renders each example (tiny models carry a ChatML default); loss
/// only on the assistant's tokens, EOS appended, right padding, held-out loss, exact --resume.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint to start from.
    #[arg(long)]
    model: PathBuf,
    /// Demonstrations JSONL.
    #[arg(long)]
    data: PathBuf,
    /// Output checkpoint / run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in OUT from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let lora = &args.lora;
    let cfg: SftConfig = args
        .config
        .load_then(|c: &mut SftConfig| lora.apply(&mut c.lora))?;
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::No
    };
    let s = rlhf_train::sft(&args.model, &args.data, &args.out, &cfg, resume, device)?;
    // Under data parallelism rank 0 reports for all (the others hold the same numbers).
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    eprintln!(
        "SFT: {} train / {} held-out demonstrations, {} steps in {:.1} s; held-out loss {:.3} -> \
         {:.3}; saved to {}",
        s.train_examples,
        s.eval_examples,
        s.steps,
        s.elapsed_s,
        s.eval_loss_start,
        s.eval_loss_end,
        s.out.display()
    );
    Ok(())
}
