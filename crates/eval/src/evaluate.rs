//! `rlhf eval` as a library call over paths: read the prompts, load both checkpoints and the
//! judge (checking up front everything that would otherwise fail after minutes of sampling),
//! compare them ([`compare_models`]) and return the comparison with what it was run on.
//!
//! Not here: the comparison itself (`compare.rs`), the files (`report.rs`).

use std::path::{Path, PathBuf};

use rlhf_data::{PromptRecord, read_jsonl};
use rlhf_model::{Head, Pretrained};
use serde::Serialize;
use tch::Device;

use crate::compare::{CompareConfig, Comparison, compare_models};
use crate::error::{EvalError, Result};
use crate::judge::{Judge, JudgeSpec};
use crate::progress::Observer;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalInputs {
    /// The model under evaluation (A).
    pub model: PathBuf,
    /// The baseline (B), e.g. the SFT model A was trained from.
    pub baseline: PathBuf,
    /// JSONL of {"prompt"} records (extra fields are ignored).
    pub prompts: PathBuf,
    pub judge: JudgeSpec,
    /// Only the first N prompts.
    pub limit: Option<usize>,
}

/// A finished evaluation: the comparison and what produced it.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub model: PathBuf,
    pub baseline: PathBuf,
    pub prompts: PathBuf,
    /// The judge as given (`oracle`, `rm:DIR`, `openai:URL`).
    pub judge_spec: String,
    /// The model name an LLM judge was asked under.
    pub judge_model: Option<String>,
    pub config: CompareConfig,
    pub comparison: Comparison,
}

/// The prompts of a `{"prompt"}` JSONL file, the first `limit` of them; errors name the file.
pub fn read_prompts(path: &Path, limit: Option<usize>) -> Result<Vec<String>> {
    let mut records: Vec<PromptRecord> = read_jsonl(path)?;
    records.truncate(limit.unwrap_or(records.len()));
    if records.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: no prompts",
            path.display()
        )));
    }
    Ok(records.into_iter().map(|r| r.prompt).collect())
}

fn load_model(dir: &Path, flag: &str, device: Device) -> Result<Pretrained> {
    Pretrained::load(dir, Head::Lm, device)
        .map_err(|e| EvalError::from(e).context(format!("cannot load {flag} {}", dir.display())))
}

/// Runs the evaluation: every input is checked (prompts readable and, for the oracle, of the
/// task world; both models loadable and sharing a tokenizer; the judge loadable and, for a
/// reward model, sharing it too) before anything is sampled.
pub fn evaluate(
    inputs: &EvalInputs,
    cfg: &CompareConfig,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Evaluation> {
    cfg.validate()?;
    let prompts = read_prompts(&inputs.prompts, inputs.limit)?;
    if inputs.judge == JudgeSpec::Oracle {
        // Fail before sampling, not after: the oracle knows only task-world prompts.
        crate::judge::Oracle::check_file(&prompts, &inputs.prompts)?;
    }
    if let JudgeSpec::RewardModel(dir) = &inputs.judge
        && !dir.is_dir()
    {
        return Err(EvalError::Invalid(format!(
            "--judge rm:{}: no such reward-model directory (train one with `rlhf reward`)",
            dir.display()
        )));
    }
    let a = load_model(&inputs.model, "--model", device)?;
    let b = load_model(&inputs.baseline, "--baseline", device)?;
    same_tokenizer(&a, &inputs.model, &b, &inputs.baseline)?;
    let judge = inputs.judge.load(device)?;
    if let Judge::RewardModel(rm) = &judge {
        rm.check_tokenizer(&a.tokenizer, &inputs.model)?;
    }
    let comparison = compare_models(&a, &b, &prompts, &judge, cfg, obs)?;
    Ok(Evaluation {
        model: inputs.model.clone(),
        baseline: inputs.baseline.clone(),
        prompts: inputs.prompts.clone(),
        judge_spec: inputs.judge.to_string(),
        judge_model: match &judge {
            Judge::Llm(l) => Some(l.llm.model().to_string()),
            _ => None,
        },
        config: cfg.clone(),
        comparison,
    })
}

/// A and B must read the same token ids the same way, or the KL (and the comparison) is
/// meaningless.
fn same_tokenizer(a: &Pretrained, a_dir: &Path, b: &Pretrained, b_dir: &Path) -> Result<()> {
    let (va, vb) = (a.model.cfg.vocab_size, b.model.cfg.vocab_size);
    if va != vb {
        return Err(EvalError::Invalid(format!(
            "--model {} has a vocabulary of {va} tokens but --baseline {} has {vb}: eval compares \
             models that share a tokenizer (e.g. a PPO policy and its SFT model)",
            a_dir.display(),
            b_dir.display()
        )));
    }
    if !a.tokenizer.same_as(&b.tokenizer) {
        return Err(EvalError::Invalid(format!(
            "{}/tokenizer.json and {}/tokenizer.json differ: eval needs both models (and an rm: \
             judge) to share one tokenizer",
            a_dir.display(),
            b_dir.display()
        )));
    }
    Ok(())
}
