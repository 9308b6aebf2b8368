//! Single-model measurements on the task world: greedy answers graded by the oracle (mean score
//! and share of correct answers), a few answers to show, and the per-token NLL of held-out
//! corpus text (the "alignment tax" PPO-ptx is meant to avoid).
//!
//! Not here: model-against-baseline comparisons (`compare.rs`).

use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use serde::Serialize;

use crate::error::{EvalError, Result};

/// Greedy answers to task-world prompts, graded by the oracle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TaskScore {
    /// Mean oracle score.
    pub score: f64,
    /// Share of correct answers.
    pub accuracy: f64,
    pub prompts: usize,
}

/// Greedy decoding settings for a format: a raw model answers on one line (its prompt ends
/// with a newline, and generation stops at the next).
fn greedy(format: PromptFormat, max_new_tokens: usize, stop: &str) -> TextGenerateConfig {
    TextGenerateConfig {
        max_new_tokens,
        sampling: Sampling::Greedy,
        seed: Some(0),
        stop: match format {
            PromptFormat::Raw => vec![stop.to_string()],
            PromptFormat::Chat => vec![],
        },
    }
}

/// Greedy answers (at most 64 tokens) to every task-world `prompt`, `rows` at a time, graded by
/// the oracle.
pub fn greedy_task_score(
    pre: &Pretrained,
    prompts: &[String],
    format: PromptFormat,
    rows: usize,
) -> Result<TaskScore> {
    let cfg = greedy(format, 64, "\n");
    let (mut score, mut correct) = (0.0, 0usize);
    for chunk in prompts.chunks(rows.max(1)) {
        let tasks = chunk
            .iter()
            .map(|p| rlhf_data::Task::parse(p))
            .collect::<rlhf_data::Result<Vec<_>>>()?;
        let ids = chunk
            .iter()
            .map(|p| pre.encode_prompt(&format.prompt_text(p), format))
            .collect::<rlhf_model::Result<Vec<_>>>()?;
        for (task, out) in tasks.iter().zip(pre.generate_ids(&ids, &cfg)?) {
            let g = rlhf_data::grade(task, out.text.trim());
            score += g.score;
            correct += usize::from(g.correct);
        }
    }
    let n = prompts.len().max(1) as f64;
    Ok(TaskScore {
        score: score / n,
        accuracy: correct as f64 / n,
        prompts: prompts.len(),
    })
}

/// Greedy answers of a raw model to `n` of `prompts`, spread evenly (every k-th, so that each
/// task family, written in blocks, shows up), each with its oracle score (NaN for a prompt the
/// oracle does not know).
pub fn sample_answers(
    pre: &Pretrained,
    prompts: &[String],
    n: usize,
) -> Result<Vec<(String, String, f64)>> {
    let stride = (prompts.len() / n.max(1)).max(1);
    let picked: Vec<&String> = prompts.iter().step_by(stride).take(n).collect();
    let format = PromptFormat::Raw;
    let ids = picked
        .iter()
        .map(|p| pre.encode_prompt(&format.prompt_text(p), format))
        .collect::<rlhf_model::Result<Vec<_>>>()?;
    let outs = pre.generate_ids(&ids, &greedy(format, 60, "\n\n"))?;
    Ok(picked
        .into_iter()
        .zip(outs)
        .map(|(p, o)| {
            let answer = o.text.trim().to_string();
            let score = rlhf_data::score(p, &answer).unwrap_or(f64::NAN);
            (p.clone(), answer, score)
        })
        .collect())
}

/// Per-token NLL (nats) of `texts`, each encoded raw and cut to the model's context.
pub fn corpus_nll(pre: &Pretrained, texts: &[String], rows: usize) -> Result<f64> {
    let max = pre.model.cfg.max_positions as usize;
    let ids = texts
        .iter()
        .map(|t| {
            let mut ids = pre.encode_prompt(t, PromptFormat::Raw)?;
            ids.truncate(max);
            Ok(ids)
        })
        .collect::<rlhf_model::Result<Vec<_>>>()?;
    let (total, count) = pre.nll(&ids, rows)?;
    if count == 0 {
        return Err(EvalError::Invalid(
            "no text of two tokens or more to measure the NLL on".into(),
        ));
    }
    Ok(total / count as f64)
}
