//! Evaluating instruction-tuned models the way FLAN did: rank classification (the candidate
//! answer with the highest log-likelihood after the prompt wins) and generation (the greedy
//! output must equal the answer), per item and per task cluster.
//!
//! Raw prompts are followed by a newline before the answer (`PromptFormat::prompt_text`), the
//! format the FLAN experiment trains in; chat prompts go through the model's chat template.
//!
//! Not here: the data (`rlhf_data::flan`), the teacher-forced scores
//! (`Pretrained::completion_logprobs`).

use rlhf_data::answer_matches;
use rlhf_data::flan::{Cluster, FlanEval};
use rlhf_model::{Pretrained, PromptFormat, TextGenerateConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Index of the option with the highest total log-likelihood for each item (ties: the first).
pub fn rank_classify(
    pre: &Pretrained,
    format: PromptFormat,
    items: &[FlanEval],
    rows: usize,
) -> Result<Vec<usize>> {
    let mut pairs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.options.is_empty() {
            return Err(TrainError::Invalid(format!(
                "eval item {} ({}) has no options to rank",
                i + 1,
                item.cluster.name()
            )));
        }
        let prompt = format.prompt_text(&item.prompt);
        pairs.extend(item.options.iter().map(|o| (prompt.clone(), o.clone())));
    }
    let scores = pre.completion_logprobs(format, &pairs, rows)?;
    let mut at = 0;
    Ok(items
        .iter()
        .map(|item| {
            let s = &scores[at..at + item.options.len()];
            at += item.options.len();
            argmax(s.iter().map(|l| l.sum))
        })
        .collect())
}

fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// One item's outcome under both protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    pub cluster: Cluster,
    /// The option rank classification picked.
    pub chosen: usize,
    pub rank_correct: bool,
    /// The greedy output.
    pub output: String,
    pub exact: bool,
    /// 1 / number of options: what guessing scores.
    pub chance: f64,
}

/// Scores every item by rank classification and by greedy generation (`max_new_tokens`).
pub fn evaluate(
    pre: &Pretrained,
    format: PromptFormat,
    items: &[FlanEval],
    rows: usize,
    max_new_tokens: usize,
) -> Result<Vec<ItemScore>> {
    let chosen = rank_classify(pre, format, items, rows)?;
    let prompts: Vec<String> = items
        .iter()
        .map(|i| format.prompt_text(&i.prompt))
        .collect();
    let cfg = TextGenerateConfig {
        max_new_tokens,
        sampling: rlhf_model::Sampling::Greedy,
        seed: Some(0),
        // A raw model answers on one line.
        stop: if format == PromptFormat::Raw {
            vec!["\n".into()]
        } else {
            vec![]
        },
    };
    let outputs = pre.complete(&prompts, format, &cfg, rows)?;
    Ok(items
        .iter()
        .zip(chosen)
        .zip(outputs)
        .map(|((item, c), output)| ItemScore {
            cluster: item.cluster,
            chosen: c,
            rank_correct: item.options.get(c) == Some(&item.answer),
            exact: answer_matches(&output, &item.answer),
            output,
            chance: 1.0 / item.options.len().max(1) as f64,
        })
        .collect())
}

/// Accuracy of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterScore {
    pub cluster: Cluster,
    pub items: usize,
    pub rank_accuracy: f64,
    pub generation_accuracy: f64,
    pub chance: f64,
}

/// Per-cluster accuracies, in [`Cluster::ALL`] order, plus the overall row (`None` cluster).
pub fn by_cluster(scores: &[ItemScore]) -> Vec<ClusterScore> {
    Cluster::ALL
        .into_iter()
        .filter_map(|c| {
            let s: Vec<&ItemScore> = scores.iter().filter(|s| s.cluster == c).collect();
            if s.is_empty() {
                return None;
            }
            let n = s.len() as f64;
            Some(ClusterScore {
                cluster: c,
                items: s.len(),
                rank_accuracy: s.iter().filter(|s| s.rank_correct).count() as f64 / n,
                generation_accuracy: s.iter().filter(|s| s.exact).count() as f64 / n,
                chance: s.iter().map(|s| s.chance).sum::<f64>() / n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax([-3.0, -1.0, -1.0].into_iter()), 1);
        assert_eq!(argmax([-0.5].into_iter()), 0);
    }

    #[test]
    fn raw_prompts_end_with_a_newline() {
        assert_eq!(
            PromptFormat::Raw.prompt_text("Add 1 and 2."),
            "Add 1 and 2.\n"
        );
        assert_eq!(PromptFormat::Chat.prompt_text("Hi"), "Hi");
    }
}
