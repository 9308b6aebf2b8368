//! `rlhf eval`: model A against baseline B on a prompt set (`rlhf_eval::evaluate`), with the
//! report files written by `rlhf_eval::write_evaluation`.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_eval::{CompareConfig, EvalInputs, JudgeSpec};

use crate::common::{Bars, JudgeEndpointArgs};

/// Compare a model (A) with a baseline (B): one sampled response per prompt from each, judged
/// pairwise. The win rate counts ties as half a win; intervals are 95% percentile-bootstrap
/// intervals over prompts. KL(A‖B) is Σ_t [log p_A(y_t) − log p_B(y_t)] over A's sampled tokens,
/// in nats per sequence, averaged over prompts (at --temperature; at 0, greedy, the
/// log-probabilities are taken at temperature 1). Both models sample with the same seed, so a
/// model against itself gives identical responses. A, B (and an rm: judge) share a tokenizer.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory of the model under evaluation (A).
    #[arg(long)]
    model: PathBuf,
    /// Checkpoint directory of the baseline (B), e.g. the SFT model A was trained from.
    #[arg(long)]
    baseline: PathBuf,
    /// JSONL of {"prompt": ...} records (extra fields are ignored), e.g. the task world's
    /// eval.jsonl.
    #[arg(long)]
    prompts: PathBuf,
    /// Judge: `oracle` (the task world's scorer), `rm:DIR` (a reward model from `rlhf reward`),
    /// or `openai:URL` (an LLM behind an OpenAI-compatible server, POST URL/v1/chat/completions,
    /// asked twice per prompt with the order swapped; OPENAI_API_KEY is sent if set).
    #[arg(long)]
    judge: JudgeSpec,
    #[command(flatten)]
    endpoint: JudgeEndpointArgs,
    /// Write eval.json, responses.jsonl, report.md and scores.svg/.png into this directory
    /// [default: print the summary only].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N prompts [default: all].
    #[arg(long)]
    n: Option<usize>,
    /// Sampling temperature of both models; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Maximum new tokens per response.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Random seed (sampling and bootstrap).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Sequences generated or scored together.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Responses of each model per prompt. With more than 1, a prompt's outcome is the mean over
    /// its samples and the intervals resample prompts, so they narrow without treating samples
    /// of one prompt as independent prompts.
    #[arg(long, default_value_t = 1)]
    samples: usize,
}

pub fn run(args: Args, device: tch::Device) -> Result<()> {
    let judge = match args.judge {
        JudgeSpec::Llm(e) => JudgeSpec::Llm(args.endpoint.apply(e)),
        other => other,
    };
    let inputs = EvalInputs {
        model: args.model,
        baseline: args.baseline,
        prompts: args.prompts,
        judge,
        limit: args.n,
    };
    let cfg = CompareConfig {
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        bootstrap: args.bootstrap,
        rows: args.batch_size,
        samples: args.samples,
    };
    let e = rlhf_eval::evaluate(&inputs, &cfg, device, &mut Bars::default())?;
    eprint!("{}", rlhf_eval::summary_text(&e));
    if let Some(out) = &args.out {
        let files = rlhf_eval::write_evaluation(out, &e)?;
        eprintln!("wrote {}/{{{}}}", out.display(), files.join(", "));
    }
    Ok(())
}
