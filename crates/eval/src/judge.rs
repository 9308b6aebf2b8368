//! Who decides which of two responses is better. A [`Scorer`] gives each response a number (the
//! task world's oracle, a reward model); an LLM judge only says which of two it prefers. A
//! [`Judge`] is either, loaded from a [`JudgeSpec`] (`oracle`, `rm:DIR`, `openai:URL`) and asked
//! for [`Verdicts`] on paired responses.
//!
//! Not here: sampling the responses and summarising the verdicts (`compare.rs`).

use std::path::PathBuf;

use rlhf_client::Endpoint;
use rlhf_report::win_rate;
use tch::Device;

use crate::error::{EvalError, Result};
use crate::llm::LlmJudge;
use crate::reward_model::RewardModel;

/// Scores responses one at a time: higher is better.
pub trait Scorer: std::fmt::Debug {
    /// The short name metrics carry ("oracle", "rm").
    fn key(&self) -> &str;
    /// The name a report shows ("oracle", "reward model").
    fn name(&self) -> &str;
    /// Refuses prompts this scorer cannot score, before anything is sampled.
    fn check(&self, _prompts: &[String]) -> Result<()> {
        Ok(())
    }
    /// The model directory behind the scores, if any: a resumed run checks that it still
    /// reads the same one.
    fn source(&self) -> Option<&std::path::Path> {
        None
    }
    /// One score per (prompt, response) pair.
    fn score(&self, prompts: &[String], responses: &[String]) -> Result<Vec<f64>>;
}

/// The task world's oracle (`rlhf_data::score`): correctness first, then format and length. It
/// knows only task-world prompts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Oracle;

impl Oracle {
    /// Whether every prompt is a task-world prompt (so the oracle can score it).
    pub fn knows(prompts: &[String]) -> bool {
        prompts.iter().all(|p| rlhf_data::Task::parse(p).is_ok())
    }

    /// [`Scorer::check`] for prompts read from `path`: the error names the file and the prompt.
    pub fn check_file(prompts: &[String], path: &std::path::Path) -> Result<()> {
        for (i, p) in prompts.iter().enumerate() {
            rlhf_data::Task::parse(p).map_err(|e| {
                EvalError::from(e).context(format!("{}: prompt {}", path.display(), i + 1))
            })?;
        }
        Ok(())
    }
}

impl Scorer for Oracle {
    fn key(&self) -> &str {
        "oracle"
    }

    fn name(&self) -> &str {
        "oracle"
    }

    fn check(&self, prompts: &[String]) -> Result<()> {
        for (i, p) in prompts.iter().enumerate() {
            rlhf_data::Task::parse(p)
                .map_err(|e| EvalError::Invalid(format!("prompt {}: {e}", i + 1)))?;
        }
        Ok(())
    }

    fn score(&self, prompts: &[String], responses: &[String]) -> Result<Vec<f64>> {
        prompts
            .iter()
            .zip(responses)
            .map(|(p, r)| Ok(rlhf_data::score(p, r)?))
            .collect()
    }
}

/// A judge as the user names it.
#[derive(Debug, Clone, PartialEq)]
pub enum JudgeSpec {
    /// `oracle`: the task world's scorer.
    Oracle,
    /// `rm:DIR`: a reward model from `rlhf reward`.
    RewardModel(PathBuf),
    /// `openai:URL`: an LLM behind an OpenAI-compatible server, asked which response is better.
    Llm(Endpoint),
}

impl std::str::FromStr for JudgeSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "oracle" {
            return Ok(Self::Oracle);
        }
        if let Some(dir) = s.strip_prefix("rm:").filter(|d| !d.is_empty()) {
            return Ok(Self::RewardModel(dir.into()));
        }
        if Endpoint::is_spec(s) {
            return Endpoint::parse(s).map(Self::Llm);
        }
        Err(format!("expected oracle, rm:DIR or openai:URL, got {s:?}"))
    }
}

impl std::fmt::Display for JudgeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oracle => write!(f, "oracle"),
            Self::RewardModel(dir) => write!(f, "rm:{}", dir.display()),
            Self::Llm(e) => write!(f, "{e}"),
        }
    }
}

impl JudgeSpec {
    /// Loads the judge: a reward model onto `device`, an endpoint connected (its model name
    /// resolved). Fails with a message naming the directory or URL.
    pub fn load(&self, device: Device) -> Result<Judge> {
        Ok(match self {
            Self::Oracle => Judge::Oracle(Oracle),
            Self::RewardModel(dir) => Judge::RewardModel(Box::new(RewardModel::load(dir, device)?)),
            Self::Llm(e) => Judge::Llm(Box::new(LlmJudge::connect(e)?)),
        })
    }
}

/// A loaded judge.
#[derive(Debug)]
pub enum Judge {
    Oracle(Oracle),
    RewardModel(Box<RewardModel>),
    Llm(Box<LlmJudge>),
}

impl Judge {
    /// The scorer behind a scalar judge; `None` for an LLM judge.
    pub fn scorer(&self) -> Option<&dyn Scorer> {
        match self {
            Judge::Oracle(o) => Some(o),
            Judge::RewardModel(rm) => Some(rm.as_ref()),
            Judge::Llm(_) => None,
        }
    }

    /// The name a report shows.
    pub fn name(&self) -> &str {
        match self.scorer() {
            Some(s) => s.name(),
            None => "LLM judge",
        }
    }

    /// Refuses prompts the judge cannot judge.
    pub fn check(&self, prompts: &[String]) -> Result<()> {
        self.scorer().map_or(Ok(()), |s| s.check(prompts))
    }

    /// A's outcome against B for every prompt; `progress(done)` after each prompt an LLM judged.
    pub fn verdicts(
        &self,
        prompts: &[String],
        a: &[String],
        b: &[String],
        progress: impl FnMut(usize),
    ) -> Result<Verdicts> {
        match self {
            Judge::Llm(llm) => llm.verdicts(prompts, a, b, progress),
            _ => {
                let s = self.scorer().expect("a scalar judge");
                scored_verdicts(s, prompts, a, b)
            }
        }
    }
}

/// A judge's decisions on paired responses.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdicts {
    /// Each response's score, when the judge gives scores: (A's, B's).
    pub scores: Option<(Vec<f64>, Vec<f64>)>,
    /// Per prompt: 1 when A is better, 0.5 a tie, 0 when B is better.
    pub outcomes: Vec<f64>,
    /// LLM answers that named neither response (each counted as a tie).
    pub unparsed: usize,
}

/// Verdicts from a scorer: each side scored, outcomes by comparing the scores (ties count half,
/// `rlhf_report::win_rate`).
pub fn scored_verdicts(
    scorer: &dyn Scorer,
    prompts: &[String],
    a: &[String],
    b: &[String],
) -> Result<Verdicts> {
    if a.len() != prompts.len() || b.len() != prompts.len() {
        return Err(EvalError::Invalid(format!(
            "{} prompts but {} and {} responses",
            prompts.len(),
            a.len(),
            b.len()
        )));
    }
    let (sa, sb) = (scorer.score(prompts, a)?, scorer.score(prompts, b)?);
    Ok(Verdicts {
        outcomes: win_rate(&sa, &sb),
        scores: Some((sa, sb)),
        unparsed: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let p = |s: &str| s.parse::<JudgeSpec>();
        assert_eq!(p("oracle"), Ok(JudgeSpec::Oracle));
        assert_eq!(
            p("rm:runs/rm"),
            Ok(JudgeSpec::RewardModel("runs/rm".into()))
        );
        let llm = p("openai:http://h:8/").unwrap();
        assert_eq!(llm.to_string(), "openai:http://h:8");
        assert!(p("rm:").is_err());
        assert!(p("openai:localhost").unwrap_err().contains("http://"));
        assert!(
            p("gpt4")
                .unwrap_err()
                .contains("oracle, rm:DIR or openai:URL")
        );
    }

    #[test]
    fn the_oracle_prefers_the_right_answer_and_refuses_foreign_prompts() {
        let q = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many \
                 flowers does she have left?"
            .to_string();
        let prompts = vec![q.clone(), q];
        let right = vec!["The answer is 7.".to_string(); 2];
        let wrong = vec![
            "The answer is 8.".to_string(),
            "The answer is 7.".to_string(),
        ];
        let v = scored_verdicts(&Oracle, &prompts, &right, &wrong).unwrap();
        assert_eq!(v.outcomes, [1.0, 0.5]);
        assert!(Oracle::knows(&prompts));
        let foreign = vec!["What is the capital of France?".to_string()];
        assert!(!Oracle::knows(&foreign));
        let err = Oracle.check(&foreign).unwrap_err().to_string();
        assert!(err.contains("prompt 1"), "{err}");
    }
}
