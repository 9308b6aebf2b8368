//! A reward model as a judge: the scalar a model trained by `rlhf reward` gives a response,
//! read at the EOS that ends prompt (chat template) + response, exactly where training read it.
//!
//! Not here: training the reward model (`rlhf_train::reward`), the scalar read itself
//! (`rlhf_model::score::last_token_scalars`).

use std::path::{Path, PathBuf};

use rlhf_model::{Gpt, Head, Pretrained, PromptFormat, last_token_scalars};
use rlhf_tokenizer::Tokenizer;
use tch::Device;

use crate::error::{EvalError, Result};
use crate::judge::Scorer;

/// A reward model with its tokenizer.
pub struct RewardModel {
    pub pre: Pretrained,
    pub dir: PathBuf,
    /// Sequences scored per forward pass. 32.
    pub rows: usize,
    /// The name its metrics carry. "rm"; "gold" for a second reward model used as the gold
    /// judge beside the one being optimised.
    pub key: String,
}

impl std::fmt::Debug for RewardModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RewardModel({})", self.dir.display())
    }
}

impl RewardModel {
    /// Loads a reward-model directory (scalar head + tokenizer).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let load = || -> Result<Pretrained> {
            if !dir.is_dir() {
                return Err(EvalError::Invalid(
                    "no such directory (train a reward model with `rlhf reward`)".into(),
                ));
            }
            Ok(Pretrained {
                model: Gpt::load(dir, Head::Scalar, device)?,
                tokenizer: Tokenizer::from_dir(dir)?,
            })
        };
        let pre = load()
            .map_err(|e| e.context(format!("cannot load the reward model {}", dir.display())))?;
        Ok(Self::new(pre, dir))
    }

    /// A reward model already in memory (e.g. the one PPO optimises against).
    pub fn new(pre: Pretrained, dir: &Path) -> Self {
        Self {
            pre,
            dir: dir.to_path_buf(),
            rows: 32,
            key: "rm".into(),
        }
    }

    /// Refuses a policy whose tokenizer differs from the reward model's: its responses would be
    /// re-encoded into ids the reward model reads differently.
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer, owner: &Path) -> Result<()> {
        if self.pre.tokenizer.same_as(tokenizer) {
            return Ok(());
        }
        Err(EvalError::Invalid(format!(
            "the reward model {} uses a different tokenizer from {} ({} vs {} tokens, or other \
             ids for the same text); train the reward model from that model's SFT checkpoint",
            self.dir.display(),
            owner.display(),
            self.pre.tokenizer.vocab_size(),
            tokenizer.vocab_size()
        )))
    }
}

impl Scorer for RewardModel {
    fn key(&self) -> &str {
        &self.key
    }

    fn name(&self) -> &str {
        "reward model"
    }

    fn source(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn score(&self, prompts: &[String], responses: &[String]) -> Result<Vec<f64>> {
        let _guard = tch::no_grad_guard();
        let mut seqs = Vec::with_capacity(responses.len());
        for (p, r) in prompts.iter().zip(responses) {
            let q = self.pre.encode_prompt(p, PromptFormat::Chat)?;
            seqs.push(self.pre.encode_response(&q, r)?);
        }
        let pad = self.pre.pad_id();
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(self.rows.max(1)) {
            let r = last_token_scalars(&self.pre.model, chunk, pad)?.to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(&r)?.into_iter().map(f64::from));
        }
        Ok(out)
    }
}
