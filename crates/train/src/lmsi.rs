//! Self-improvement without labels (LMSI, Huang et al. 2022): sample many reasoning paths per
//! unlabelled question, keep every path that reaches the majority answer, fine-tune on them in
//! four mixed formats (few-shot and zero-shot, with and without the reasoning), and measure
//! greedy and self-consistency accuracy before and after.
//!
//! Controls for the experiment: `Filter::NoVote` keeps every path that has an answer (does the
//! vote matter?) and `Filter::Gold` keeps the paths with the right answer (the ceiling a perfect
//! filter would reach; it needs task-world questions).
//!
//! Not here: the vote and the prompt formats (`rlhf_data::reasoning`), SFT itself (`sft.rs`).

use std::path::Path;

use rlhf_data::{
    AnswerPattern, EvalRecord, Exemplar, ExemplarFormat, SftRecord, Task, few_shot_prompt,
    lmsi_keep, majority_vote,
};
use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Which sampled paths become training data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filter {
    /// LMSI: the paths that reach the majority answer.
    Majority,
    /// Control: every path with an answer, no vote.
    NoVote,
    /// Ceiling: the paths whose answer is right (task-world questions only).
    Gold,
}

/// Which of LMSI's prompt formats the kept paths are trained in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Formats {
    /// The paper's four: few-shot CoT, few-shot direct, zero-shot CoT, zero-shot direct.
    Mixed,
    /// The two with the reasoning: few-shot CoT and zero-shot CoT. For models too small to
    /// keep "answer directly" apart from "answer" (E8: the direct half pulled a tiny model's
    /// plain-question accuracy from 52% to 21%, even on perfectly filtered paths).
    Cot,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmsiConfig {
    /// Paths per question: 32, as in the paper.
    pub paths: usize,
    /// Sampling temperature of the paths: 0.7, as in the paper.
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// A question's majority must hold at least this share of its paths (0: any majority).
    pub min_share: f64,
    pub filter: Filter,
    /// The prompt formats of the training records: "mixed" (the paper's four) or "cot".
    pub formats: Formats,
    /// Worked examples in the few-shot formats (taken from the kept paths themselves, so no
    /// label is used). Two fit the tiny models' 256-token context.
    pub exemplars: usize,
    /// Paths per question when measuring self-consistency accuracy.
    pub eval_paths: usize,
    pub seed: u64,
    /// Sequences sampled together.
    pub batch: usize,
}

impl Default for LmsiConfig {
    fn default() -> Self {
        Self {
            paths: 32,
            temperature: 0.7,
            max_new_tokens: 96,
            min_share: 0.0,
            filter: Filter::Majority,
            formats: Formats::Mixed,
            exemplars: 2,
            eval_paths: 16,
            seed: 0,
            batch: 128,
        }
    }
}

/// One question with its sampled paths and their answers.
#[derive(Debug, Clone, Serialize)]
pub struct Paths {
    pub question: String,
    pub texts: Vec<String>,
    pub answers: Vec<Option<i64>>,
}

/// What LMSI trains on, built from sampled paths.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The kept paths: (question, path, its answer).
    pub kept: Vec<(String, String, i64)>,
    /// Distinct questions with a kept path.
    pub kept_questions: usize,
    /// The SFT records, one per kept path and format (empty when nothing was kept).
    pub records: Vec<SftRecord>,
}

/// The LMSI pipeline after sampling, shared by `rlhf self-improve` and experiment E8: keep the
/// paths `filter` selects ([`keep`]), then write each in `formats` ([`mixed_formats`]) with as
/// many exemplars as fit `pre`'s context once rendered for fine-tuning (chat template + EOS).
pub fn training_set(
    pre: &Pretrained,
    paths: &[Paths],
    filter: Filter,
    formats: Formats,
    cfg: &LmsiConfig,
) -> Result<TrainingSet> {
    let kept = keep(paths, filter, cfg.min_share);
    let kept_questions = kept
        .iter()
        .map(|k| &k.0)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let context = pre.model.cfg.max_positions as usize;
    let fits = |prompt: &str, completion: &str| {
        crate::sft::encode_pair(pre, PromptFormat::Chat, prompt, completion)
            .is_ok_and(|e| e.ids.len() <= context)
    };
    let records = if kept.is_empty() {
        Vec::new()
    } else {
        mixed_formats(&kept, cfg.exemplars, formats, fits)?
    };
    Ok(TrainingSet {
        kept,
        kept_questions,
        records,
    })
}

impl LmsiConfig {
    /// Checks every value before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(format!("lmsi config: {m}")));
        if self.paths == 0 || self.eval_paths == 0 || self.batch == 0 {
            return bad("paths, eval_paths and batch must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature must be > 0 to sample paths");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.min_share) {
            return bad("min_share must be in [0, 1]");
        }
        Ok(())
    }
}

/// Samples `n` paths per question (chat format).
pub fn sample_paths(
    pre: &Pretrained,
    questions: &[String],
    n: usize,
    cfg: &LmsiConfig,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<Paths>> {
    let sampling = TextGenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::new(cfg.temperature, None, None)?,
        seed: Some(cfg.seed),
        stop: vec![],
    };
    let pattern = AnswerPattern::default();
    let sampled = pre.sample_k(
        questions,
        n,
        PromptFormat::Chat,
        &sampling,
        cfg.batch,
        progress,
    )?;
    Ok(questions
        .iter()
        .zip(sampled)
        .map(|(q, gens)| {
            let texts: Vec<String> = gens
                .into_iter()
                .map(|g| g.text.trim().to_string())
                .collect();
            let answers = texts.iter().map(|t| pattern.extract(t)).collect();
            Paths {
                question: q.clone(),
                texts,
                answers,
            }
        })
        .collect())
}

/// The right answer of a task-world word problem.
pub fn gold_answer(question: &str) -> Option<i64> {
    match Task::parse(question).ok()? {
        Task::Arithmetic(p) => Some(p.answer()),
        _ => None,
    }
}

/// The kept paths (question, path) under `filter`.
pub fn keep(all: &[Paths], filter: Filter, min_share: f64) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for p in all {
        let idx: Vec<usize> = match filter {
            Filter::Majority => lmsi_keep(&p.answers, min_share),
            Filter::NoVote => (0..p.answers.len())
                .filter(|&i| p.answers[i].is_some())
                .collect(),
            Filter::Gold => match gold_answer(&p.question) {
                Some(g) => (0..p.answers.len())
                    .filter(|&i| p.answers[i] == Some(g))
                    .collect(),
                None => vec![],
            },
        };
        out.extend(
            idx.into_iter()
                .filter_map(|i| Some((p.question.clone(), p.texts[i].clone(), p.answers[i]?))),
        );
    }
    out
}

/// The training set in LMSI's four formats, one record per kept path and format: few-shot CoT,
/// few-shot direct, zero-shot CoT, zero-shot direct. Exemplars are kept paths of other questions;
/// a few-shot record that does not `fit` (prompt, completion) the context gets fewer of them.
///
/// Zero-shot CoT is the question exactly as asked: a chat model fine-tuned on reasoning answers
/// a plain question with its steps, and that is how it is asked at evaluation (the paper's
/// "Let's think step by step." trigger is for a base model). Zero-shot direct carries an explicit
/// cue, "Answer directly.", so the direct records do not teach the model to skip its steps
/// when asked plainly: with the trigger in the CoT format instead, fine-tuning a tiny model on
/// even perfectly filtered paths cut its plain-question accuracy from 48% to 10% (E8, seed 0).
pub fn mixed_formats(
    kept: &[(String, String, i64)],
    exemplars: usize,
    formats: Formats,
    fits: impl Fn(&str, &str) -> bool,
) -> Result<Vec<SftRecord>> {
    let demos: Vec<Exemplar> = kept
        .iter()
        .filter_map(|(q, t, _)| Exemplar::from_demo(q, t).ok())
        .collect();
    let mut out = Vec::with_capacity(kept.len() * 4);
    for (i, (q, text, answer)) in kept.iter().enumerate() {
        // Take only as many as there are demos of other questions: with repeats of `q` among
        // the kept paths, `demos.len() - 1` can exceed that and the cycle would never end.
        let others = demos.iter().filter(|e| &e.question != q).count();
        let shots: Vec<Exemplar> = demos
            .iter()
            .cycle()
            .skip(i + 1)
            .filter(|e| &e.question != q)
            .take(exemplars.min(others))
            .cloned()
            .collect();
        let direct = rlhf_data::answer_line(*answer);
        let few_shot = |format, completion: &str| {
            (0..=shots.len())
                .rev()
                .map(|n| few_shot_prompt(&shots[..n], format, q))
                .find(|p| fits(p, completion))
                .unwrap_or_else(|| few_shot_prompt(&[], format, q))
        };
        let mut pairs = vec![
            (few_shot(ExemplarFormat::ChainOfThought, text), text.clone()),
            (q.clone(), text.clone()),
        ];
        if formats == Formats::Mixed {
            pairs.insert(
                1,
                (few_shot(ExemplarFormat::Direct, &direct), direct.clone()),
            );
            pairs.push((format!("{q} Answer directly."), direct));
        }
        out.extend(
            pairs
                .into_iter()
                .map(|(prompt, completion)| SftRecord::Completion { prompt, completion }),
        );
    }
    if out.is_empty() {
        return Err(TrainError::Invalid(
            "no path survived the filter: nothing to train on".into(),
        ));
    }
    Ok(out)
}

/// Accuracy on labelled word problems: greedy, and self-consistency over `eval_paths` paths,
/// with calibration (accuracy of the vote per vote-share bin).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accuracy {
    pub questions: usize,
    pub greedy: f64,
    pub self_consistency: f64,
    /// (lower edge of the share bin, questions in it, accuracy of the vote).
    pub calibration: Vec<(f64, usize, f64)>,
    /// Per question, in the eval file's order (for paired and seed-level statistics).
    #[serde(skip)]
    pub items: Vec<ItemOutcome>,
}

/// One question's outcome in [`accuracy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemOutcome {
    pub greedy: bool,
    pub vote: bool,
    /// The majority's share of all paths (0 when no path had an answer).
    pub share: f64,
}

pub fn accuracy(pre: &Pretrained, eval: &[EvalRecord], cfg: &LmsiConfig) -> Result<Accuracy> {
    let items: Vec<(String, i64)> = eval
        .iter()
        .filter_map(|r| Some((r.prompt.clone(), gold_answer(&r.prompt)?)))
        .collect();
    if items.is_empty() {
        return Err(TrainError::Invalid(
            "the eval file has no task-world word problems".into(),
        ));
    }
    let questions: Vec<String> = items.iter().map(|(q, _)| q.clone()).collect();
    let greedy_cfg = LmsiConfig {
        temperature: 0.0,
        ..cfg.clone()
    };
    let greedy = sample_paths(pre, &questions, 1, &greedy_cfg, |_, _| {})?;
    let paths = sample_paths(pre, &questions, cfg.eval_paths, cfg, |_, _| {})?;
    let n = items.len() as f64;
    let greedy_acc = greedy
        .iter()
        .zip(&items)
        .filter(|(p, (_, g))| p.answers[0] == Some(*g))
        .count() as f64
        / n;
    let mut bins = vec![(0usize, 0usize); 5];
    let mut sc = 0usize;
    let mut outcomes = Vec::with_capacity(items.len());
    for ((p, g1), (_, g)) in paths.iter().zip(&greedy).zip(&items) {
        let vote = majority_vote(&p.answers);
        let right = vote.as_ref().is_some_and(|v| v.answer == *g);
        sc += usize::from(right);
        let share = vote.map_or(0.0, |v| v.share);
        let b = ((share * 5.0) as usize).min(4);
        bins[b].0 += 1;
        bins[b].1 += usize::from(right);
        outcomes.push(ItemOutcome {
            greedy: g1.answers[0] == Some(*g),
            vote: right,
            share,
        });
    }
    Ok(Accuracy {
        questions: items.len(),
        greedy: greedy_acc,
        self_consistency: sc as f64 / n,
        calibration: bins
            .into_iter()
            .enumerate()
            .filter(|(_, (c, _))| *c > 0)
            .map(|(i, (c, r))| (i as f64 / 5.0, c, r as f64 / c as f64))
            .collect(),
        items: outcomes,
    })
}

/// Reads `{"prompt"}` questions (any answer field is ignored: LMSI uses no labels).
pub fn read_questions(path: &Path) -> Result<Vec<String>> {
    let records: Vec<rlhf_data::PromptRecord> = rlhf_data::read_jsonl(path)?;
    Ok(records.into_iter().map(|r| r.prompt).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(q: &str, answers: &[Option<i64>]) -> Paths {
        Paths {
            question: q.into(),
            texts: answers
                .iter()
                .map(|a| match a {
                    Some(a) => format!("{q} so {a}. The answer is {a}."),
                    None => "no idea".into(),
                })
                .collect(),
            answers: answers.to_vec(),
        }
    }

    #[test]
    fn filters_keep_majority_any_or_gold_paths() {
        // A task-world word problem whose answer is 7.
        let q = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers \
                 does she have left?";
        assert_eq!(gold_answer(q), Some(7));
        let all = vec![paths(q, &[Some(8), Some(7), Some(8), None])];
        let pick = |f, s| {
            keep(&all, f, s)
                .into_iter()
                .map(|k| k.2)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(Filter::Majority, 0.0), vec![8, 8]);
        assert_eq!(pick(Filter::Majority, 0.75), Vec::<i64>::new());
        assert_eq!(pick(Filter::NoVote, 0.0), vec![8, 7, 8]);
        assert_eq!(pick(Filter::Gold, 0.0), vec![7]);
    }

    #[test]
    fn four_formats_per_kept_path_with_exemplars_from_other_questions() {
        let kept = vec![
            ("Q1?".to_string(), "a so 1. The answer is 1.".to_string(), 1),
            ("Q2?".to_string(), "b so 2. The answer is 2.".to_string(), 2),
            ("Q3?".to_string(), "c so 3. The answer is 3.".to_string(), 3),
        ];
        let recs = mixed_formats(&kept, 2, Formats::Mixed, |_, _| true).unwrap();
        assert_eq!(recs.len(), 12);
        let SftRecord::Completion { prompt, completion } = &recs[0] else {
            panic!()
        };
        assert!(
            prompt.ends_with("Q: Q1?\nA:")
                && prompt.contains("Q: Q2?\nA: b so 2. The answer is 2.")
        );
        assert!(
            !prompt[..prompt.len() - 10].contains("Q: Q1?"),
            "no exemplar of itself"
        );
        assert_eq!(completion, "a so 1. The answer is 1.");
        let SftRecord::Completion { completion, .. } = &recs[1] else {
            panic!()
        };
        assert_eq!(completion, "The answer is 1.");
        let SftRecord::Completion { prompt, .. } = &recs[3] else {
            panic!()
        };
        assert_eq!(prompt, "Q1? Answer directly.");
        let SftRecord::Completion { prompt, completion } = &recs[2] else {
            panic!()
        };
        assert_eq!(
            (prompt.as_str(), completion.as_str()),
            ("Q1?", "a so 1. The answer is 1.")
        );
        assert!(mixed_formats(&[], 2, Formats::Mixed, |_, _| true).is_err());
        // CoT only: the two reasoning formats per path, no direct answers.
        let cot = mixed_formats(&kept, 2, Formats::Cot, |_, _| true).unwrap();
        assert_eq!(cot.len(), 6);
        assert!(cot.iter().all(|r| matches!(r,
            SftRecord::Completion { completion, .. } if completion.len() > "The answer is 1.".len())));
        // Too long with two exemplars: one is used.
        let one = mixed_formats(&kept, 2, Formats::Mixed, |p, _| {
            p.matches("Q:").count() <= 2
        })
        .unwrap();
        let SftRecord::Completion { prompt, .. } = &one[0] else {
            panic!()
        };
        assert_eq!(prompt.matches("Q:").count(), 2);
    }
}
