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
    /// Print one JSON object per sample: text, token_ids, logprobs, finish_reason (with
    /// --self-consistency: one object with the vote and every path).
    #[arg(long)]
    json: bool,
    /// Self-consistency: sample M reasoning paths (at --temperature), extract each final answer
    /// and print the majority answer with its vote share as confidence.
    #[arg(long, value_name = "M")]
    self_consistency: Option<usize>,
    /// Regular expression whose first group is the final answer [default: the number after the
    /// last "answer is", else the last integer].
    #[arg(long)]
    answer_pattern: Option<String>,
    /// Few-shot prompting: put worked examples from this JSONL of {"prompt", "completion"}
    /// demonstrations (e.g. the task world's sft.jsonl; those with a final answer) before the
    /// question, as `Q: …\nA: …` blocks.
    #[arg(long, value_name = "FILE")]
    few_shot: Option<PathBuf>,
    /// Number of worked examples from --few-shot.
    #[arg(long, default_value_t = 4)]
    shots: usize,
    /// What the worked examples show: `cot` (the steps, then "The answer is N.") or `direct`
    /// (the answer only).
    #[arg(long, default_value = "cot", value_parser = ["cot", "direct"])]
    shot_format: String,
}

/// The prompt with `shots` worked examples from `file` before it.
fn few_shot(file: &std::path::Path, shots: usize, format: &str, question: &str) -> Result<String> {
    let demos: Vec<rlhf_data::SftRecord> = rlhf_data::read_jsonl(file)?;
    let exemplars: Vec<rlhf_data::Exemplar> = demos
        .iter()
        .filter_map(|d| match d {
            rlhf_data::SftRecord::Completion { prompt, completion } => {
                rlhf_data::Exemplar::from_demo(prompt, completion).ok()
            }
            rlhf_data::SftRecord::Chat { .. } => None,
        })
        .take(shots)
        .collect();
    anyhow::ensure!(
        exemplars.len() == shots,
        "{}: found {} demonstrations with a final answer, --shots asks for {shots}",
        file.display(),
        exemplars.len()
    );
    let format = match format {
        "direct" => rlhf_data::ExemplarFormat::Direct,
        _ => rlhf_data::ExemplarFormat::ChainOfThought,
    };
    Ok(rlhf_data::few_shot_prompt(&exemplars, format, question))
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
    let prompt = match &args.few_shot {
        Some(file) => few_shot(file, args.shots, &args.shot_format, &args.prompt)?,
        None => args.prompt.clone(),
    };
    let ids = pre.encode_prompt(&prompt, format)?;
    let pattern = rlhf_data::AnswerPattern::new(args.answer_pattern.as_deref())?;
    let n = match args.self_consistency {
        Some(m) => {
            anyhow::ensure!(m >= 1, "--self-consistency needs at least 1 path");
            anyhow::ensure!(
                args.temperature > 0.0 || m == 1,
                "--self-consistency samples paths: give --temperature > 0 (e.g. 0.7)"
            );
            m
        }
        None => args.num_samples,
    };
    let prompts = vec![ids; n];
    let cfg = TextGenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: Some(args.seed),
        stop: args.stop,
    };
    let outs = pre.generate_ids(&prompts, &cfg)?;
    if args.self_consistency.is_some() {
        return print_vote(&outs, &pattern, args.json);
    }
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

/// Self-consistency: every path with its answer, then the majority answer and its share.
fn print_vote(
    outs: &[rlhf_model::TextGeneration],
    pattern: &rlhf_data::AnswerPattern,
    json: bool,
) -> Result<()> {
    let answers: Vec<Option<i64>> = outs.iter().map(|o| pattern.extract(&o.text)).collect();
    let vote = rlhf_data::majority_vote(&answers);
    if json {
        let obj = serde_json::json!({
            "answer": vote.as_ref().map(|v| v.answer),
            "votes": vote.as_ref().map_or(0, |v| v.votes),
            "paths": outs.len(),
            "share": vote.as_ref().map_or(0.0, |v| v.share),
            "tied_with": vote.as_ref().map(|v| v.tied_with.clone()).unwrap_or_default(),
            "samples": outs.iter().zip(&answers)
                .map(|(o, a)| serde_json::json!({"text": o.text, "answer": a}))
                .collect::<Vec<_>>(),
        });
        return crate::common::print_line(obj);
    }
    for (i, (o, a)) in outs.iter().zip(&answers).enumerate() {
        let a = a.map_or("-".to_string(), |a| a.to_string());
        crate::common::print_line(format!("[path {}, answer {a}] {}", i + 1, o.text))?;
    }
    match vote {
        Some(v) => {
            let ties = if v.tied_with.is_empty() {
                String::new()
            } else {
                format!("; tied with {:?}, the earliest path wins", v.tied_with)
            };
            crate::common::print_line(format!(
                "answer: {} ({} of {} paths, share {:.2}{ties})",
                v.answer, v.votes, v.paths, v.share
            ))
        }
        None => crate::common::print_line(format!(
            "answer: none ({} paths, none with an answer)",
            outs.len()
        )),
    }
}
