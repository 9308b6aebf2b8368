//! A checkpoint directory as users see it: the model plus its tokenizer, checked against each
//! other, with text-level generation (chat template, stop strings) and per-token NLL.
//!
//! Not here: batching for training (the train crate), serving (the serve crate).

use std::path::Path;

use rlhf_tokenizer::{Message, Tokenizer};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::gpt::{Batch, Gpt, Head};
use crate::sample::{self, GenerateConfig, Generation, Sampling};

/// How a prompt string becomes token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// Encode the text as is, with the tokenizer's special tokens (e.g. BOS), like transformers.
    Raw,
    /// Wrap it as one user message with the chat template and the generation prompt.
    Chat,
}

/// Sampling settings at the text level.
#[derive(Debug, Clone)]
pub struct TextGenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: Option<u64>,
    /// Generation stops when the decoded text contains one of these (which is cut off).
    pub stop: Vec<String>,
}

/// One generated sample, decoded.
#[derive(Debug, Clone)]
pub struct TextGeneration {
    pub text: String,
    pub generation: Generation,
}

pub struct Pretrained {
    pub model: Gpt,
    pub tokenizer: Tokenizer,
}

fn tok_err(e: rlhf_tokenizer::TokenizerError) -> ModelError {
    ModelError::Invalid(e.to_string())
}

impl Pretrained {
    /// Loads model and tokenizer from a checkpoint dir and checks that every token id the
    /// tokenizer can produce has an embedding row.
    pub fn load(dir: &Path, head: Head, device: Device) -> Result<Self> {
        let model = Gpt::load(dir, head, device)?;
        let tokenizer = Tokenizer::from_dir(dir).map_err(tok_err)?;
        let (n_tok, n_emb) = (tokenizer.vocab_size() as i64, model.cfg.vocab_size);
        if n_tok > n_emb {
            return Err(ModelError::config(
                dir.join("tokenizer.json"),
                format!(
                    "the tokenizer has {n_tok} tokens but the model's embedding has only {n_emb} \
                     rows (config.json vocab_size): they belong to different models"
                ),
            ));
        }
        Ok(Self { model, tokenizer })
    }

    /// Token ids of a prompt in the given format.
    pub fn encode_prompt(&self, prompt: &str, format: PromptFormat) -> Result<Vec<i64>> {
        let ids = match format {
            PromptFormat::Raw => self.tokenizer.encode(prompt, true),
            PromptFormat::Chat => self.tokenizer.apply_chat(&[Message::user(prompt)], true),
        }
        .map_err(tok_err)?;
        Ok(ids.into_iter().map(i64::from).collect())
    }

    /// Tokens that end generation: the tokenizer's EOS and the config's.
    pub fn eos_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.tokenizer.eos_id().map(i64::from).into_iter().collect();
        ids.extend(self.model.cfg.eos_token_id.filter(|id| !ids.contains(id)));
        // ChatML models end a turn with <|im_end|>; a chat reply stops there, as transformers'
        // generation configs for such models list it among the EOS ids.
        let im_end = self.tokenizer.token_to_id("<|im_end|>").map(i64::from);
        ids.extend(im_end.filter(|id| !ids.contains(id)));
        ids
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer.decode(&ids, true).map_err(tok_err)
    }

    /// Generates one continuation per prompt (already tokenized), cut at stop strings.
    pub fn generate_ids(
        &self,
        prompts: &[Vec<i64>],
        cfg: &TextGenerateConfig,
    ) -> Result<Vec<TextGeneration>> {
        let pad = self
            .tokenizer
            .pad_id()
            .or(self.tokenizer.eos_id())
            .map_or(0, i64::from);
        let low = GenerateConfig {
            max_new_tokens: cfg.max_new_tokens,
            sampling: cfg.sampling,
            seed: cfg.seed,
            eos_token_ids: self.eos_ids(),
            pad_token_id: pad,
        };
        let stop_hit = |ids: &[i64]| {
            !cfg.stop.is_empty()
                && self
                    .decode(ids)
                    .is_ok_and(|t| cfg.stop.iter().any(|s| t.contains(s.as_str())))
        };
        let gens = sample::generate(&self.model, prompts, &low, |_, ids| stop_hit(ids))?;
        gens.into_iter()
            .map(|generation| {
                let mut text = self.decode(&generation.token_ids)?;
                if let Some(cut) = cfg.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    text.truncate(cut);
                }
                Ok(TextGeneration { text, generation })
            })
            .collect()
    }

    /// `k` samples for each prompt, generated `rows` sequences at a time (prompts × k flattened,
    /// so one batch mixes prompts); `progress(done, total)` is called after each batch.
    pub fn sample_k(
        &self,
        prompts: &[String],
        k: usize,
        format: PromptFormat,
        cfg: &TextGenerateConfig,
        rows: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<TextGeneration>>> {
        let encoded: Vec<Vec<i64>> = prompts
            .iter()
            .map(|p| self.encode_prompt(p, format))
            .collect::<Result<_>>()?;
        let flat: Vec<(usize, &Vec<i64>)> = encoded
            .iter()
            .enumerate()
            .flat_map(|(i, ids)| std::iter::repeat_n((i, ids), k))
            .collect();
        let mut out: Vec<Vec<TextGeneration>> = vec![Vec::with_capacity(k); prompts.len()];
        for (b, chunk) in flat.chunks(rows.max(1)).enumerate() {
            let ids: Vec<Vec<i64>> = chunk.iter().map(|(_, ids)| (*ids).clone()).collect();
            // A different seed per batch keeps batches independent yet the run reproducible.
            let batch_cfg = TextGenerateConfig {
                seed: cfg.seed.map(|s| s + b as u64),
                ..cfg.clone()
            };
            for ((i, _), g) in chunk.iter().zip(self.generate_ids(&ids, &batch_cfg)?) {
                out[*i].push(g);
            }
            progress(((b + 1) * rows).min(flat.len()), flat.len());
        }
        Ok(out)
    }

    /// Sum of next-token NLL (natural log) and number of predicted tokens over `texts`, each
    /// encoded with the tokenizer's default special tokens. Batches of similar length are
    /// right-padded, which is exact for a causal model: padding only follows real tokens.
    pub fn nll(&self, texts: &[Vec<i64>], batch_size: usize) -> Result<(f64, usize)> {
        let _guard = tch::no_grad_guard();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&Vec<i64>> = chunk
                .iter()
                .map(|&i| &texts[i])
                .filter(|r| r.len() > 1)
                .collect();
            let Some(t) = rows.iter().map(|r| r.len()).max() else {
                continue;
            };
            let mut ids = Vec::with_capacity(rows.len() * t);
            let mut weight = Vec::with_capacity(rows.len() * t);
            for r in &rows {
                ids.extend(r.iter().copied().chain(std::iter::repeat_n(0, t - r.len())));
                weight.extend((1..=t).map(|j| f32::from(u8::from(j < r.len()))));
            }
            let shape = [rows.len() as i64, t as i64];
            let dev = self.model.device();
            let ids = Tensor::from_slice(&ids).view(shape).to_device(dev);
            let weight = Tensor::from_slice(&weight).view(shape).to_device(dev);
            let logits = self.model.forward(
                Batch {
                    input_ids: &ids,
                    attention_mask: None,
                },
                None,
            )?;
            let logp = logits
                .narrow(1, 0, t as i64 - 1)
                .log_softmax(-1, Kind::Float);
            let target = ids.narrow(1, 1, t as i64 - 1).unsqueeze(-1);
            let nll = -logp.gather(-1, &target, false).squeeze_dim(-1); // (B, T-1)
            let w = weight.narrow(1, 0, t as i64 - 1);
            total += f64::try_from((nll * &w).sum(Kind::Double))?;
            count += rows.iter().map(|r| r.len() - 1).sum::<usize>();
        }
        Ok((total, count))
    }
}
