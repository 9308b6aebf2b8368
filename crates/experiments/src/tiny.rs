//! Tiny language models trained from scratch, in memory, on (prompt, completion) pairs: the unit
//! every experiment repeats per condition and seed.
//!
//! A [`TinyLm`] is an ordinary checkpoint in the making (a Llama-family `Gpt` plus a tokenizer
//! trained on the experiment's own texts): it trains through the library's in-memory SFT core
//! (`rlhf_train::sft::fit`) and is evaluated by the library's functions (`rlhf_train::lmsi`,
//! `Pretrained::completion_logprobs`) exactly as a user's model would be.
//!
//! Not here: the tasks (each experiment's module), the training step (`rlhf_train::sft`).

use std::path::Path;

use rlhf_model::{Gpt, Head, ModelConfig, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_tokenizer::{BpeConfig, Tokenizer, train_bpe};
use rlhf_train::TrainerConfig;
use rlhf_train::sft::{self, SftExample, encode_pair};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{ExperimentError, Result};

/// The shape of a tiny Llama (RoPE, RMSNorm, SwiGLU, tied embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinySpec {
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    /// Context in tokens.
    pub max_positions: i64,
}

impl TinySpec {
    /// The model config for `tokenizer`.
    pub fn model_config(&self, tokenizer: &Tokenizer) -> Result<ModelConfig> {
        let c = self.hidden;
        let json = serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": tokenizer.vocab_size(), "hidden_size": c,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "intermediate_size": (8 * c / 3 + 7) / 8 * 8,
            "max_position_embeddings": self.max_positions, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
            "bos_token_id": tokenizer.bos_id(), "eos_token_id": tokenizer.eos_id(),
            "pad_token_id": tokenizer.pad_id(),
        });
        Ok(ModelConfig::from_json(&json, Path::new("tiny spec"))?)
    }
}

/// A byte-level BPE of `vocab` tokens trained on `texts`; `vocab` = 260 (the 4 special tokens and
/// 256 bytes) gives one token per byte, so digits are never merged.
pub fn train_tokenizer(texts: &[String], vocab: usize) -> Result<Tokenizer> {
    let cfg = BpeConfig {
        vocab_size: vocab,
        ..Default::default()
    };
    Ok(train_bpe(texts.iter().map(String::as_str), &cfg)?)
}

/// What one training run cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    pub steps: u64,
    pub examples: usize,
    /// Token positions the model processed (padding included: it is computed).
    pub tokens: u64,
    /// 6 × parameters × tokens (forward and backward, Kaplan et al.'s estimate).
    pub flops: f64,
    pub seconds: f64,
    /// Mean training loss over the last tenth of the steps.
    pub final_loss: f64,
}

/// A tiny model with its tokenizer and prompt format.
pub struct TinyLm {
    pub pre: Pretrained,
    pub format: PromptFormat,
}

impl TinyLm {
    /// A freshly initialised model (the seed fixes the weights).
    pub fn new(
        tokenizer: Tokenizer,
        spec: &TinySpec,
        format: PromptFormat,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let cfg = spec.model_config(&tokenizer)?;
        tch::manual_seed(seed as i64);
        let model = Gpt::new(&cfg, Head::Lm, device);
        Ok(Self {
            pre: Pretrained { model, tokenizer },
            format,
        })
    }

    /// Loads a saved checkpoint.
    pub fn load(dir: &Path, format: PromptFormat, device: Device) -> Result<Self> {
        Ok(Self {
            pre: Pretrained::load(dir, Head::Lm, device)?,
            format,
        })
    }

    /// An independent copy in memory (to fine-tune one copy and keep the other).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            pre: Pretrained {
                model: self.pre.model.copy_with_head(Head::Lm)?,
                tokenizer: self.pre.tokenizer.clone(),
            },
            format: self.format,
        })
    }

    /// Writes config.json, model.safetensors and the tokenizer to `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.pre.model.save(dir)?;
        self.pre.tokenizer.save(dir)?;
        Ok(())
    }

    /// Trainable parameters.
    pub fn params(&self) -> i64 {
        self.pre.model.num_params()
    }

    /// Tokens of `text` alone (no special tokens).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.pre.tokenizer.encode(text, false)?.len())
    }

    /// One training example: loss on the completion and the EOS that ends it, not the prompt.
    pub fn example(&self, prompt: &str, completion: &str) -> Result<SftExample> {
        let ex = encode_pair(&self.pre, self.format, prompt, completion)?;
        let max = self.pre.model.cfg.max_positions as usize;
        if ex.ids.len() > max {
            return Err(ExperimentError::Invalid(format!(
                "an example is {} tokens, more than the tiny model's context of {max}: {prompt:?} \
                 -> {completion:?}",
                ex.ids.len()
            )));
        }
        Ok(ex)
    }

    /// Trains on `pairs` for `cfg.max_steps` steps of `cfg.batch_size` examples (shuffled epochs
    /// seeded by `cfg.seed`), with the library's AdamW and schedule; `on_step(step)` after each.
    pub fn train(
        &mut self,
        pairs: &[(String, String)],
        cfg: &TrainerConfig,
        on_step: impl FnMut(u64),
    ) -> Result<TrainStats> {
        let examples = pairs
            .iter()
            .map(|(p, c)| self.example(p, c))
            .collect::<Result<Vec<_>>>()?;
        self.train_examples(examples, cfg, on_step)
    }

    /// [`Self::train`] on examples already encoded (`rlhf_train::sft::fit`).
    pub fn train_examples(
        &mut self,
        examples: Vec<SftExample>,
        cfg: &TrainerConfig,
        mut on_step: impl FnMut(u64),
    ) -> Result<TrainStats> {
        let n = examples.len();
        let t0 = std::time::Instant::now();
        let fit = sft::fit(&self.pre.model, examples, self.pre.pad_id(), cfg, |r| {
            on_step(r.step)
        })?;
        let records = fit.records;
        let tail = (records.len() / 10).max(1);
        let final_loss = records[records.len().saturating_sub(tail)..]
            .iter()
            .map(|r| r.loss)
            .sum::<f64>()
            / tail.min(records.len()).max(1) as f64;
        Ok(TrainStats {
            steps: records.len() as u64,
            examples: n,
            tokens: fit.tokens,
            flops: 6.0 * self.params() as f64 * fit.tokens as f64,
            seconds: t0.elapsed().as_secs_f64(),
            final_loss,
        })
    }

    /// Greedy completions, `rows` sequences per batch.
    pub fn complete(
        &self,
        prompts: &[String],
        max_new_tokens: usize,
        rows: usize,
    ) -> Result<Vec<String>> {
        let cfg = generate_config(max_new_tokens, 0.0, 0)?;
        Ok(self.pre.complete(prompts, self.format, &cfg, rows)?)
    }

    /// `k` sampled completions per prompt at `temperature`.
    pub fn sample(
        &self,
        prompts: &[String],
        k: usize,
        temperature: f64,
        seed: u64,
        max_new_tokens: usize,
        rows: usize,
    ) -> Result<Vec<Vec<String>>> {
        let cfg = generate_config(max_new_tokens, temperature, seed)?;
        let out = self
            .pre
            .sample_k(prompts, k, self.format, &cfg, rows, |_, _| {})?;
        Ok(out
            .into_iter()
            .map(|gs| gs.into_iter().map(|g| g.text.trim().to_string()).collect())
            .collect())
    }
}

impl TinyLm {
    /// Mean log-probability per token of each `completion` (its EOS included) after its
    /// `prompt`, teacher-forced: how likely the model finds the right answer, even when it would
    /// not generate it.
    pub fn completion_logprob(&self, pairs: &[(String, String)], rows: usize) -> Result<Vec<f64>> {
        for (p, c) in pairs {
            // Checks the context with the experiment's message.
            self.example(p, c)?;
        }
        Ok(self
            .pre
            .completion_logprobs(self.format, pairs, rows)?
            .iter()
            .map(|s| s.mean())
            .collect())
    }
}

/// Seeded sampling settings: plain sampling at `temperature`, greedy at 0, no stop strings.
pub fn generate_config(
    max_new_tokens: usize,
    temperature: f64,
    seed: u64,
) -> Result<TextGenerateConfig> {
    Ok(TextGenerateConfig {
        max_new_tokens,
        sampling: Sampling::new(temperature, None, None)?,
        seed: Some(seed),
        stop: vec![],
    })
}
