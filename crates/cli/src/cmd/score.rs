//! `rlhf score`: rewards of sampled responses under a reward model.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_data::{SampleRecord, read_jsonl};
use rlhf_model::{Gpt, Head, Pretrained, PromptFormat};
use rlhf_train::reward::{encode_response, rewards};

/// Score every response of a samples file with a reward model; prints one JSON object per prompt:
/// {"prompt", "responses", "rewards"}.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reward-model directory (from `rlhf reward`).
    #[arg(long)]
    rm: PathBuf,
    /// Samples JSONL: {"prompt", "responses": [...]}.
    #[arg(long)]
    data: PathBuf,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let model = Gpt::load(&args.rm, Head::Scalar, device)?;
    let tokenizer = rlhf_tokenizer::Tokenizer::from_dir(&args.rm)?;
    let pre = Pretrained { model, tokenizer };
    let pad = pre
        .tokenizer
        .pad_id()
        .or(pre.tokenizer.eos_id())
        .map_or(0, i64::from);
    let samples: Vec<SampleRecord> = read_jsonl(&args.data)?;
    let _guard = tch::no_grad_guard();
    for s in samples {
        let prompt = pre.encode_prompt(&s.prompt, PromptFormat::Chat)?;
        let seqs = s
            .responses
            .iter()
            .map(|r| encode_response(&pre.tokenizer, &prompt, r))
            .collect::<rlhf_train::Result<Vec<_>>>()?;
        let r =
            Vec::<f32>::try_from(&rewards(&pre.model, &seqs, pad)?.to_device(tch::Device::Cpu))?;
        let line =
            serde_json::json!({ "prompt": s.prompt, "responses": s.responses, "rewards": r });
        crate::common::print_line(line)?;
    }
    Ok(())
}
