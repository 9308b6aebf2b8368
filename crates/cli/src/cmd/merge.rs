//! `rlhf merge`: a LoRA adapter folded into its base, written as a plain checkpoint.

use std::path::PathBuf;

use anyhow::Result;

/// Fold a LoRA adapter (PEFT's layout: adapter_config.json + adapter_model.safetensors, ours or
/// PEFT's) into its base weights (W += alpha/r · B A) and write a plain checkpoint: config.json,
/// model.safetensors, the tokenizer files and generation_config.json. A reward or value model's
/// adapter (one with a scalar head) becomes a reward-model checkpoint.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Adapter directory (from `--lora` training, or PEFT's save_pretrained).
    #[arg(long)]
    adapter: PathBuf,
    /// Base checkpoint [default: the adapter's base_model_name_or_path].
    #[arg(long)]
    base: Option<PathBuf>,
    /// Output checkpoint directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let s = rlhf_model::pretrained::merge_adapter_dir(
        &args.adapter,
        args.base.as_deref(),
        &args.out,
        device,
    )?;
    eprintln!(
        "merged {} adapted linear maps of {} into {} ({:?} head)",
        s.modules,
        s.base.display(),
        args.out.display(),
        s.head
    );
    Ok(())
}
