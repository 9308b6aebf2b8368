//! The browsing agent: a [`Policy`] types one command per observation until it ends browsing,
//! then answers from its quotes. Many episodes step together, one batched call per round of
//! actions. [`ModelPolicy`] is a checkpoint as a policy; tests drive the same loop with scripted
//! policies. `rlhf browse` and experiment E7 both run their policies through [`browse_batch`].
//!
//! Not here: the browser and its commands (`env.rs`), the index (`index.rs`).

use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use serde::{Deserialize, Serialize};

use crate::env::{BrowseConfig, Browser, Command, Quote};
use crate::error::Result;
use crate::index::SearchIndex;

/// Whatever types the commands.
pub trait Policy {
    /// Whether `prompt` leaves room for `new_tokens` more tokens in the policy's context.
    fn fits(&self, prompt: &str, new_tokens: usize) -> Result<bool>;
    /// One line of text (a command, or the answer) per prompt. `round` numbers the calls of one
    /// run (0, 1, … for the rounds of commands, [`ANSWER_ROUND`] for the answers), so a sampling
    /// policy can draw each round with its own seed.
    fn act(&self, prompts: &[String], round: u64) -> Result<Vec<String>>;
}

/// The `round` of the answer call.
pub const ANSWER_ROUND: u64 = 1000;

/// One browsing episode of a policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Episode {
    pub question: String,
    /// The commands as the policy wrote them.
    pub actions: Vec<String>,
    /// The observation before each action (kept only when tracing).
    pub observations: Vec<String>,
    /// Actions the browser rejected (not a command, or one that could not apply).
    pub rejected: usize,
    pub quotes: Vec<Quote>,
    pub answer_prompt: String,
    pub answer: String,
}

impl Episode {
    /// An episode that never browsed: the answer to a prompt (a closed-book baseline).
    pub fn closed_book(question: &str, prompt: &str, answer: String) -> Self {
        Self {
            question: question.into(),
            actions: vec![],
            observations: vec![],
            rejected: 0,
            quotes: vec![],
            answer_prompt: prompt.into(),
            answer,
        }
    }
}

/// How episodes run.
#[derive(Debug, Clone, Copy)]
pub struct AgentConfig {
    pub browse: BrowseConfig,
    /// Tokens one command may take: an observation that leaves less room ends the browsing.
    pub max_action_tokens: usize,
    /// Keep every observation in the episodes.
    pub trace: bool,
}

/// Runs `n` episodes for each question, all stepped together (one `policy.act` call per round
/// of actions). An observation that would not leave room for a command in the policy's context
/// ends that episode's browsing (as `End: Answer`). `progress(done, total)` after each round.
pub fn browse_batch(
    policy: &dyn Policy,
    index: &SearchIndex,
    questions: &[String],
    n: usize,
    cfg: &AgentConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Vec<Episode>>> {
    let mut envs: Vec<Browser> = questions
        .iter()
        .flat_map(|q| (0..n).map(move |_| q))
        .map(|q| Browser::new(index, q, cfg.browse))
        .collect();
    let mut eps: Vec<Episode> = envs
        .iter()
        .map(|b| Episode {
            question: b.question().to_string(),
            actions: Vec::new(),
            observations: Vec::new(),
            rejected: 0,
            quotes: Vec::new(),
            answer_prompt: String::new(),
            answer: String::new(),
        })
        .collect();
    let total = envs.len();
    for round in 0..=cfg.browse.max_actions {
        let mut active = Vec::new();
        let mut prompts = Vec::new();
        for (i, b) in envs.iter_mut().enumerate() {
            if b.is_done() {
                continue;
            }
            let obs = b.render();
            if !policy.fits(&obs, cfg.max_action_tokens)? {
                b.step(&Command::Answer)?;
                continue;
            }
            active.push(i);
            prompts.push(obs);
        }
        if active.is_empty() {
            break;
        }
        let outs = policy.act(&prompts, round as u64)?;
        for ((&i, obs), text) in active.iter().zip(prompts).zip(outs) {
            let b = &mut envs[i];
            b.act(&text)?;
            let e = &mut eps[i];
            e.rejected += usize::from(b.note().is_some_and(|n| n.starts_with("Error")));
            e.actions.push(text);
            if cfg.trace {
                e.observations.push(obs);
            }
        }
        progress(total - active.len(), total);
    }
    let prompts: Vec<String> = envs.iter().map(|b| b.answer_prompt()).collect();
    let answers = policy.act(&prompts, ANSWER_ROUND)?;
    for ((e, b), (p, a)) in eps
        .iter_mut()
        .zip(&envs)
        .zip(prompts.into_iter().zip(answers))
    {
        e.quotes = b.quotes().to_vec();
        e.answer_prompt = p;
        e.answer = a;
    }
    progress(total, total);
    let mut out = Vec::with_capacity(questions.len());
    let mut it = eps.into_iter();
    for _ in questions {
        out.push(it.by_ref().take(n).collect());
    }
    Ok(out)
}

/// A checkpoint as a policy: one line per prompt (generation stops at the newline), greedy at
/// temperature 0, else sampled with seed `seed · 7919 + round`.
#[derive(Clone, Copy)]
pub struct ModelPolicy<'a> {
    pub pre: &'a Pretrained,
    pub format: PromptFormat,
    pub max_tokens: usize,
    pub temperature: f64,
    pub seed: u64,
    /// Sequences per generation batch.
    pub rows: usize,
}

impl Policy for ModelPolicy<'_> {
    fn fits(&self, prompt: &str, new_tokens: usize) -> Result<bool> {
        let ctx = self.pre.model.cfg.max_positions as usize;
        Ok(self.pre.encode_prompt(prompt, self.format)?.len() + new_tokens <= ctx)
    }

    fn act(&self, prompts: &[String], round: u64) -> Result<Vec<String>> {
        let cfg = TextGenerateConfig {
            max_new_tokens: self.max_tokens,
            sampling: Sampling::new(self.temperature, None, None)?,
            seed: Some(self.seed.wrapping_mul(7919) + round),
            stop: vec!["\n".into()],
        };
        Ok(self.pre.complete(prompts, self.format, &cfg, self.rows)?)
    }
}
