//! `rlhf generate`: sample continuations of a prompt from a checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};

/// Generate text from a checkpoint (KV cache, batched samples).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message with the chat template and the generation prompt.
    #[arg(long)]
    chat: bool,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Keep only the K most likely tokens [default: no limit].
    #[arg(long)]
    top_k: Option<i64>,
    /// Nucleus sampling: keep the smallest set of tokens with probability >= P [default: 1.0].
    #[arg(long)]
    top_p: Option<f64>,
    /// Random seed, for reproducible samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples of the same prompt (generated as one batch).
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Stop when this string appears (repeatable); it is cut from the output.
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object per sample: text, token_ids, logprobs, finish_reason.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    anyhow::ensure!(args.num_samples >= 1, "--num-samples must be at least 1");
    let sampling = Sampling::new(args.temperature, args.top_k, args.top_p)?;
    let pre = Pretrained::load(&args.model, Head::Lm, device)?;
    let format = if args.chat {
        PromptFormat::Chat
    } else {
        PromptFormat::Raw
    };
    let ids = pre.encode_prompt(&args.prompt, format)?;
    let prompts = vec![ids; args.num_samples];
    let cfg = TextGenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: Some(args.seed),
        stop: args.stop,
    };
    let outs = pre.generate_ids(&prompts, &cfg)?;
    for (i, out) in outs.iter().enumerate() {
        if args.json {
            let obj = serde_json::json!({
                "text": out.text,
                "token_ids": out.generation.token_ids,
                "logprobs": out.generation.logprobs,
                "finish_reason": out.generation.finish.as_str(),
            });
            crate::common::print_line(obj)?;
        } else {
            if i > 0 {
                crate::common::print_line("\n---")?;
            }
            crate::common::print_line(&out.text)?;
        }
    }
    Ok(())
}
