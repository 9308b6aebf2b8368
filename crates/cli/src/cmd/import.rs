//! `rlhf import`: turn a GGUF file or a Hugging Face directory into a checkpoint every stage can
//! train.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rlhf_model::{Head, Pretrained};

/// Import a model: dequantize a GGUF to an f32 Hugging Face checkpoint, or validate and copy an
/// existing Hugging Face checkpoint directory.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["gguf", "hf"])))]
pub struct Args {
    /// GGUF file (llama architecture; F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    hf: Option<PathBuf>,
    /// Output checkpoint directory (created; must be empty if it exists).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if args.out.exists()
        && args
            .out
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{}: output directory exists and is not empty",
            args.out.display()
        );
    }
    match (&args.gguf, &args.hf) {
        (Some(gguf), _) => import_gguf(gguf, &args.out)?,
        (_, Some(hf)) => import_hf(hf, &args.out)?,
        _ => bail!("give --gguf FILE or --hf DIR"),
    }
    // Loading what we wrote is the real check: config, every tensor's shape, the tokenizer.
    Pretrained::load(&args.out, Head::Lm, tch::Device::Cpu).with_context(|| {
        format!(
            "the imported checkpoint in {} does not load",
            args.out.display()
        )
    })?;
    eprintln!("imported into {}", args.out.display());
    Ok(())
}

fn import_gguf(gguf: &Path, out: &Path) -> Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("dequantizing {bar:30} {pos}/{len} tensors ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = rlhf_gguf::import_gguf(gguf, out, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} tensors, {} parameters (source types {:?})",
        gguf.display(),
        summary.n_tensors,
        summary.n_parameters,
        summary.source_types
    );
    Ok(())
}

fn import_hf(src: &Path, out: &Path) -> Result<()> {
    Pretrained::load(src, Head::Lm, tch::Device::Cpu)
        .with_context(|| format!("{} is not a loadable checkpoint", src.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_file = entry.file_type()?.is_file();
        let wanted = name.to_str().is_some_and(|n| {
            n.ends_with(".json") || n.ends_with(".safetensors") || n.ends_with(".jinja")
        });
        if is_file && wanted {
            std::fs::copy(entry.path(), out.join(&name))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
