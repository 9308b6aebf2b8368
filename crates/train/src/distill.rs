//! Super-teacher distillation (Wang et al. 2021; Hsieh et al. 2023): a teacher adapted to the
//! task with a few gold labels labels an unlabelled pool, a filter drops the labels that cannot
//! be right in form (empty, or a rationale with no final answer), and a student is fine-tuned
//! on what is kept.
//!
//! A local teacher (a checkpoint) is adapted by fine-tuning on the gold labels and labels the
//! pool in batches here ([`label_local`]); a remote one behind an OpenAI-compatible endpoint is
//! adapted by few-shot prompting ([`few_shot_messages`]) and asked several prompts at a time
//! ([`label_remote`]). Either way [`filter`] decides what the student sees.
//!
//! Not here: the fine-tuning itself (`sft`), the HTTP client and endpoint defaults
//! (`rlhf_client::Endpoint`).

use rlhf_client::{Ask, ChatMessage, Endpoint};
use rlhf_data::AnswerPattern;
use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// How the teacher labels and what is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Gold examples shown before each question to a remote teacher.
    pub shots: usize,
    /// Labels are rationales ending in an answer line ("The answer is N."): a label whose answer
    /// cannot be extracted is dropped (distilling step by step). Off: the output is the label.
    pub rationales: bool,
    /// The answer line's pattern when `rationales` is on (a regex with one capture group)
    /// [default: "The answer is N."].
    pub answer_pattern: Option<String>,
    /// Longest label, in tokens.
    pub max_new_tokens: usize,
    /// Teacher sampling temperature (0: greedy).
    pub temperature: f64,
    /// Sequences per batch of a local teacher.
    pub rows: usize,
    pub seed: u64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            shots: 4,
            rationales: false,
            answer_pattern: None,
            max_new_tokens: 64,
            temperature: 0.0,
            rows: 64,
            seed: 0,
        }
    }
}

/// One pool item after labelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub prompt: String,
    /// The teacher's output, trimmed.
    pub completion: String,
    /// Why the filter dropped it (`None`: kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// Chat messages for a remote teacher: the first `shots` gold pairs as user/assistant turns,
/// then the question.
pub fn few_shot_messages(
    gold: &[(String, String)],
    shots: usize,
    question: &str,
) -> Vec<(&'static str, String)> {
    let mut m = Vec::with_capacity(2 * shots + 1);
    for (p, c) in gold.iter().take(shots) {
        m.push(("user", p.clone()));
        m.push(("assistant", c.clone()));
    }
    m.push(("user", question.to_string()));
    m
}

/// Applies the filter: empty outputs are dropped, and with rationales so are outputs whose
/// answer cannot be extracted.
pub fn filter(prompts: &[String], outputs: Vec<String>, cfg: &DistillConfig) -> Result<Vec<Label>> {
    let pattern = AnswerPattern::new(cfg.answer_pattern.as_deref())
        .map_err(|e| TrainError::from(e).context("distill config: answer_pattern"))?;
    Ok(prompts
        .iter()
        .zip(outputs)
        .map(|(p, o)| {
            let completion = o.trim().to_string();
            let dropped = if completion.is_empty() {
                Some("empty output".to_string())
            } else if cfg.rationales && pattern.extract(&completion).is_none() {
                Some("no final answer in the rationale".to_string())
            } else {
                None
            };
            Label {
                prompt: p.clone(),
                completion,
                dropped,
            }
        })
        .collect())
}

/// Labels `prompts` with a local teacher (raw prompts end with a newline and the label with
/// the line); `progress(done, total)` after each batch.
pub fn label_local(
    teacher: &Pretrained,
    format: PromptFormat,
    prompts: &[String],
    cfg: &DistillConfig,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<String>> {
    let sampling = if cfg.temperature > 0.0 {
        Sampling::new(cfg.temperature, None, None)?
    } else {
        Sampling::Greedy
    };
    let generation = TextGenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling,
        seed: Some(cfg.seed),
        stop: if format == PromptFormat::Raw && !cfg.rationales {
            vec!["\n".into()]
        } else {
            vec![]
        },
    };
    let shown: Vec<String> = prompts.iter().map(|p| format.prompt_text(p)).collect();
    let out = teacher.sample_k(&shown, 1, format, &generation, cfg.rows.max(1), progress)?;
    Ok(out
        .into_iter()
        .map(|mut g| g.pop().map(|g| g.text).unwrap_or_default())
        .collect())
}

/// Labels `prompts` with a teacher behind an OpenAI-compatible endpoint: each request shows
/// the first `cfg.shots` gold pairs as turns before the prompt ([`few_shot_messages`]);
/// `concurrency` requests are in flight at a time; `progress(done)` after each group. The first
/// failure (after the endpoint's retries) stops the labelling, naming the prompt.
pub fn label_remote(
    endpoint: &Endpoint,
    gold: &[(String, String)],
    prompts: &[String],
    cfg: &DistillConfig,
    concurrency: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<String>> {
    if concurrency == 0 {
        return Err(TrainError::Config("concurrency must be at least 1".into()));
    }
    let llm = endpoint.connect()?;
    let ask = Ask {
        max_tokens: cfg.max_new_tokens as u32,
        temperature: cfg.temperature,
        seed: Some(cfg.seed as i64),
    };
    let label = |q: &str| -> Result<String> {
        let messages = few_shot_messages(gold, cfg.shots, q)
            .into_iter()
            .map(|(role, text)| ChatMessage::new(role, text))
            .collect();
        llm.ask(messages, ask).map_err(|e| {
            TrainError::from(e).context(format!("the teacher at {endpoint} failed on {q:?}"))
        })
    };
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(concurrency) {
        let results: Vec<Result<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|q| s.spawn(|| label(q))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(TrainError::Invalid("a labelling thread panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            out.push(r?);
        }
        progress(out.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_drops_empty_labels_and_rationales_without_an_answer() {
        let prompts: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let outputs = vec![
            " seven ".to_string(),
            "   ".to_string(),
            "3 + 4 = 7. The answer is 7.".to_string(),
        ];
        let plain = filter(&prompts, outputs.clone(), &DistillConfig::default()).unwrap();
        assert_eq!(plain[0].completion, "seven");
        assert_eq!(plain[0].dropped, None);
        assert_eq!(plain[1].dropped.as_deref(), Some("empty output"));
        assert_eq!(plain[2].dropped, None);
        let cot = DistillConfig {
            rationales: true,
            ..Default::default()
        };
        let r = filter(&prompts, outputs, &cot).unwrap();
        assert_eq!(
            r[0].dropped.as_deref(),
            Some("no final answer in the rationale")
        );
        assert_eq!(r[2].dropped, None);
        let bad = DistillConfig {
            answer_pattern: Some("(".into()),
            ..Default::default()
        };
        assert!(filter(&prompts, vec![], &bad).is_err());
    }

    #[test]
    fn few_shot_messages_alternate_and_end_with_the_question() {
        let gold = vec![
            ("q1".to_string(), "a1".to_string()),
            ("q2".to_string(), "a2".to_string()),
            ("q3".to_string(), "a3".to_string()),
        ];
        let m = few_shot_messages(&gold, 2, "q?");
        let roles: Vec<&str> = m.iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(m[3].1, "a2");
        assert_eq!(m[4].1, "q?");
        assert_eq!(few_shot_messages(&gold, 0, "q").len(), 1);
    }
}
