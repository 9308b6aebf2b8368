//! The sampling stage (`rlhf sample`): K responses per prompt from a policy, the material
//! labelers rank and the reward model learns from. Empty responses are dropped, and a prompt
//! left with fewer than two responses has nothing to compare: it is skipped and reported.
//!
//! Not here: the sampler itself (`rlhf_model::Pretrained::sample_k`), ranking (the labelers in
//! `rlhf-data` and `rlhf-label`).

use rlhf_data::SampleRecord;
use rlhf_model::{Pretrained, PromptFormat, Sampling, TextGenerateConfig};

use crate::error::{Result, TrainError};

/// How the responses are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    /// Responses per prompt (InstructGPT ranked K = 4 to 9).
    pub k: usize,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    pub format: PromptFormat,
    /// Sequences generated together.
    pub rows: usize,
}

/// The samples, and the prompts skipped for having fewer than two non-empty responses.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub records: Vec<SampleRecord>,
    pub skipped: Vec<String>,
}

/// Samples `cfg.k` responses for every prompt; `progress(done, total)` after each batch.
pub fn sample_responses(
    pre: &Pretrained,
    prompts: &[String],
    cfg: &SampleConfig,
    progress: impl FnMut(usize, usize),
) -> Result<Sampled> {
    if cfg.k < 2 {
        return Err(TrainError::Config(
            "k must be at least 2 (rankings compare responses)".into(),
        ));
    }
    let generation = TextGenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: cfg.sampling,
        seed: Some(cfg.seed),
        stop: vec![],
    };
    let gens = pre.sample_k(prompts, cfg.k, cfg.format, &generation, cfg.rows, progress)?;
    let mut out = Sampled {
        records: Vec::with_capacity(prompts.len()),
        skipped: Vec::new(),
    };
    for (prompt, gens) in prompts.iter().zip(gens) {
        let responses: Vec<String> = gens
            .into_iter()
            .map(|g| g.text.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if responses.len() < 2 {
            out.skipped.push(prompt.clone());
            continue;
        }
        out.records.push(SampleRecord {
            prompt: prompt.clone(),
            responses,
        });
    }
    Ok(out)
}
