//! Tools for eliciting reasoning: answer extraction with a configurable pattern, the majority
//! vote of self-consistency (Wang et al. 2022), few-shot prompts with chain-of-thought or direct
//! exemplars (Wei et al. 2022), and the filter of "Large Language Models Can Self-Improve"
//! (Huang et al. 2022: keep every sampled path that reaches the majority answer).
//!
//! Not here: sampling (the model crate), training on the kept paths (the train crate).

use std::collections::HashMap;

use crate::error::{DataError, Result};
use crate::oracle::extract_answer;

/// How the final answer is read from a response.
#[derive(Debug, Clone, Default)]
pub enum AnswerPattern {
    /// The number after the last "answer is", else the last integer ([`extract_answer`]).
    #[default]
    AnswerIs,
    /// The last match of a regular expression; its first capture group is the integer.
    Regex(regex::Regex),
}

impl AnswerPattern {
    /// `None` is the default "The answer is N." contract; a pattern needs one capture group.
    pub fn new(pattern: Option<&str>) -> Result<Self> {
        let Some(p) = pattern else {
            return Ok(Self::AnswerIs);
        };
        let re = regex::Regex::new(p)
            .map_err(|e| DataError::Invalid(format!("answer pattern `{p}`: {e}")))?;
        if re.captures_len() < 2 {
            return Err(DataError::Invalid(format!(
                "answer pattern `{p}` needs a capture group around the number, e.g. \
                 `answer: (-?\\d+)`"
            )));
        }
        Ok(Self::Regex(re))
    }

    pub fn extract(&self, text: &str) -> Option<i64> {
        match self {
            Self::AnswerIs => extract_answer(text),
            Self::Regex(re) => re
                .captures_iter(text)
                .last()
                .and_then(|c| c.get(1))
                .and_then(|m| m.as_str().trim().parse().ok()),
        }
    }
}

/// The outcome of a majority vote over sampled paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub answer: i64,
    pub votes: usize,
    /// All paths, including those without an answer.
    pub paths: usize,
    /// votes / paths: the confidence self-consistency reports.
    pub share: f64,
    /// Other answers with as many votes (the tie was broken by the earliest path).
    pub tied_with: Vec<i64>,
}

/// The most frequent answer; ties go to the answer that appeared first. `None` when no path
/// has an answer.
pub fn majority_vote(answers: &[Option<i64>]) -> Option<Vote> {
    let mut counts: HashMap<i64, (usize, usize)> = HashMap::new(); // answer -> (votes, first)
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a {
            counts.entry(*a).or_insert((0, i)).0 += 1;
        }
    }
    let (&answer, &(votes, first)) = counts
        .iter()
        .max_by(|(_, (va, fa)), (_, (vb, fb))| va.cmp(vb).then(fb.cmp(fa)))?;
    let mut tied_with: Vec<(usize, i64)> = counts
        .iter()
        .filter(|&(&a, &(v, _))| v == votes && a != answer)
        .map(|(&a, &(_, f))| (f, a))
        .collect();
    tied_with.sort();
    debug_assert!(tied_with.iter().all(|&(f, _)| f > first));
    Some(Vote {
        answer,
        votes,
        paths: answers.len(),
        share: votes as f64 / answers.len() as f64,
        tied_with: tied_with.into_iter().map(|(_, a)| a).collect(),
    })
}

/// LMSI's filter: the indices of every path whose answer is the majority answer, provided the
/// majority holds at least `min_share` of the paths (0 keeps any majority).
pub fn lmsi_keep(answers: &[Option<i64>], min_share: f64) -> Vec<usize> {
    match majority_vote(answers) {
        Some(v) if v.share >= min_share => answers
            .iter()
            .enumerate()
            .filter(|(_, a)| **a == Some(v.answer))
            .map(|(i, _)| i)
            .collect(),
        _ => vec![],
    }
}

/// A worked example for few-shot prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemplar {
    pub question: String,
    /// The steps, without the final answer line.
    pub reasoning: String,
    pub answer: i64,
}

impl Exemplar {
    /// Splits a chain-of-thought demonstration ("…steps… The answer is N.") into steps and
    /// answer.
    pub fn from_demo(question: &str, completion: &str) -> Result<Self> {
        let answer = extract_answer(completion).ok_or_else(|| {
            DataError::Invalid(format!(
                "no final answer in the demonstration {completion:?}"
            ))
        })?;
        let reasoning = match completion.rfind("The answer is") {
            Some(at) => completion[..at].trim_end(),
            None => completion.trim_end(),
        };
        Ok(Self {
            question: question.to_string(),
            reasoning: reasoning.to_string(),
            answer,
        })
    }
}

/// What the exemplars show before their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemplarFormat {
    /// The steps, then "The answer is N." (chain of thought).
    ChainOfThought,
    /// "The answer is N." only.
    Direct,
}

/// `Q: …\nA: …\n\n` per exemplar, then `Q: {question}\nA:`. With no exemplars this is the
/// zero-shot prompt in the same format.
pub fn few_shot_prompt(exemplars: &[Exemplar], format: ExemplarFormat, question: &str) -> String {
    let mut out = String::new();
    for e in exemplars {
        let answer = crate::answer_line(e.answer);
        let a = match format {
            ExemplarFormat::ChainOfThought if !e.reasoning.is_empty() => {
                format!("{} {answer}", e.reasoning)
            }
            _ => answer,
        };
        out.push_str(&format!("Q: {}\nA: {a}\n\n", e.question));
    }
    out.push_str(&format!("Q: {question}\nA:"));
    out
}

/// Whether a generated answer matches the expected one: the same after trimming, case and a
/// final full stop (FLAN's generation protocol, and any short-answer check).
pub fn answer_matches(output: &str, answer: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('.').trim().to_lowercase();
    norm(output) == norm(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_up_to_case_space_and_full_stop() {
        assert!(answer_matches(" Yes. ", "yes"));
        assert!(answer_matches("42", "42"));
        assert!(!answer_matches("420", "42"));
        assert!(!answer_matches("", "no"));
    }

    #[test]
    fn default_and_custom_answer_patterns() {
        let p = AnswerPattern::default();
        assert_eq!(p.extract("3 + 4 = 7. The answer is 7."), Some(7));
        assert_eq!(p.extract("no digits"), None);
        let p = AnswerPattern::new(Some(r"#### (-?\d+)")).unwrap();
        assert_eq!(p.extract("so 5\n#### 12\nlater #### -3"), Some(-3));
        assert_eq!(p.extract("The answer is 7."), None);
        assert!(
            AnswerPattern::new(Some(r"answer \d+")).is_err(),
            "needs a group"
        );
        assert!(AnswerPattern::new(Some(r"(")).is_err());
    }

    #[test]
    fn majority_vote_counts_breaks_ties_by_first_path_and_reports_share() {
        let v = majority_vote(&[Some(3), None, Some(5), Some(3), Some(5), Some(9)]).unwrap();
        // 3 and 5 have two votes each; 3 appeared first.
        assert_eq!(
            (v.answer, v.votes, v.paths, v.tied_with),
            (3, 2, 6, vec![5])
        );
        assert!((v.share - 2.0 / 6.0).abs() < 1e-12);
        let v = majority_vote(&[Some(1), Some(2), Some(2)]).unwrap();
        assert_eq!((v.answer, v.votes, v.tied_with.len()), (2, 2, 0));
        assert_eq!(majority_vote(&[None, None]), None);
        assert_eq!(majority_vote(&[]), None);
    }

    #[test]
    fn lmsi_keeps_every_majority_path_above_the_minimum_share() {
        let answers = [Some(4), Some(4), Some(2), None, Some(4)];
        assert_eq!(lmsi_keep(&answers, 0.0), vec![0, 1, 4]);
        assert_eq!(lmsi_keep(&answers, 0.6), vec![0, 1, 4]);
        assert_eq!(lmsi_keep(&answers, 0.61), Vec::<usize>::new());
        assert!(lmsi_keep(&[None, None], 0.0).is_empty());
    }

    #[test]
    fn few_shot_prompts_in_both_formats() {
        let e = Exemplar::from_demo(
            "Tom has 5 apples. He eats 2. How many are left?",
            "Tom eats 2, so 5 - 2 = 3. The answer is 3.",
        )
        .unwrap();
        assert_eq!(
            (e.reasoning.as_str(), e.answer),
            ("Tom eats 2, so 5 - 2 = 3.", 3)
        );
        let q = "Ann has 4 pens. She buys 3. How many now?";
        assert_eq!(
            few_shot_prompt(std::slice::from_ref(&e), ExemplarFormat::ChainOfThought, q),
            "Q: Tom has 5 apples. He eats 2. How many are left?\nA: Tom eats 2, so 5 - 2 = 3. \
             The answer is 3.\n\nQ: Ann has 4 pens. She buys 3. How many now?\nA:"
        );
        assert!(few_shot_prompt(&[e], ExemplarFormat::Direct, q).contains("A: The answer is 3.\n"));
        assert_eq!(
            few_shot_prompt(&[], ExemplarFormat::Direct, q),
            format!("Q: {q}\nA:")
        );
        assert!(Exemplar::from_demo("q", "no number here").is_err());
    }
}
