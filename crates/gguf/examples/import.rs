//! Converts a llama GGUF file into a Hugging Face checkpoint directory and prints a summary.
//!
//!     cargo run -p rlhf-gguf --release --example import -- model.gguf out_dir/
//!
//! A thin wrapper over `rlhf_gguf::import_gguf` for trying the importer by hand; the `rlhf` CLI is
//! the user-facing entry point.

use std::path::PathBuf;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gguf, out] = args.as_slice() else {
        bail!("usage: import <model.gguf> <out_dir>");
    };
    let (gguf, out) = (PathBuf::from(gguf), PathBuf::from(out));
    let start = std::time::Instant::now();
    let summary = rlhf_gguf::import_gguf(&gguf, &out, |done, total| {
        if done % 32 == 0 || done == total {
            eprint!("\rtensors {done}/{total}");
        }
    })
    .with_context(|| format!("importing {}", gguf.display()))?;
    eprintln!();
    let hp = &summary.hparams;
    println!(
        "{} tensors, {} parameters, source types {:?}, {:.1}s",
        summary.n_tensors,
        summary.n_parameters,
        summary.source_types,
        start.elapsed().as_secs_f64()
    );
    println!(
        "layers {} hidden {} heads {} kv_heads {} head_dim {} ffn {} vocab {} ctx {} tied {}",
        hp.n_layer,
        hp.n_embd,
        hp.n_head,
        hp.n_head_kv,
        hp.head_dim,
        hp.n_ff,
        hp.vocab_size,
        hp.n_ctx,
        hp.tie_word_embeddings
    );
    for w in &summary.warnings {
        println!("warning: {w}");
    }
    for f in &summary.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
