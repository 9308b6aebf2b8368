//! A checkpoint directory as users see it: the model plus its tokenizer, checked against each
//! other, with text-level encoding (chat template, prompt/answer splits), generation (stop
//! strings) and teacher-forced scores of texts (completion log-probs, per-token NLL).
//!
//! Not here: batching for training (the train crate), serving (the serve crate), the tensor
//! maths of scoring (`score.rs`).

use std::path::Path;

use rlhf_tokenizer::{Message, Tokenizer};
use tch::Device;

use crate::error::{ModelError, Result};
use crate::gpt::{Gpt, Head};
use crate::sample::{self, GenerateConfig, Generation, Sampling};
use crate::score::{SequenceLogprob, sequence_logprobs};

/// How a prompt string becomes token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// Encode the text as is, with the tokenizer's special tokens (e.g. BOS), like transformers.
    Raw,
    /// Wrap it as one user message with the chat template and the generation prompt.
    Chat,
}

impl PromptFormat {
    /// The prompt text a model in this format answers: a raw prompt ends with a newline before
    /// its answer (the convention of the task world's corpus and of every experiment that trains
    /// raw models); a chat prompt is the message itself.
    pub fn prompt_text(self, prompt: &str) -> String {
        match self {
            PromptFormat::Raw => format!("{prompt}\n"),
            PromptFormat::Chat => prompt.to_string(),
        }
    }
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
        // An adapter directory without its own tokenizer uses its base checkpoint's.
        let tok_dir = crate::lora::tokenizer_dir(dir)?;
        let tokenizer = Tokenizer::from_dir(&tok_dir).map_err(tok_err)?;
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

    /// The id batches are padded with (`Tokenizer::padding_id`).
    pub fn pad_id(&self) -> i64 {
        self.tokenizer.padding_id()
    }

    /// Token ids of `text` alone, without special tokens.
    pub fn encode_text(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.tokenizer.encode(text, false).map_err(tok_err)?;
        Ok(ids.into_iter().map(i64::from).collect())
    }

    /// Prompt ids followed by `response`'s tokens and EOS: the sequence a reward model scores
    /// (it reads its reward at that EOS).
    pub fn encode_response(&self, prompt_ids: &[i64], response: &str) -> Result<Vec<i64>> {
        let mut ids = prompt_ids.to_vec();
        ids.extend(self.encode_text(response)?);
        ids.extend(self.tokenizer.eos_id().map(i64::from));
        Ok(ids)
    }

    /// A conversation split for training and scoring: (context ids, answer ids). The context is
    /// every message before the last assistant turn, rendered with the chat template and its
    /// generation prompt; the answer is the rest of the rendered conversation followed by EOS.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<(Vec<i64>, Vec<i64>)> {
        let last = messages
            .iter()
            .rposition(|m| m.role == "assistant")
            .ok_or_else(|| {
                ModelError::Invalid("a conversation must end with an assistant message".into())
            })?;
        let tok = &self.tokenizer;
        let context = tok.render_chat(&messages[..last], true).map_err(tok_err)?;
        let full = tok
            .render_chat(&messages[..=last], false)
            .map_err(tok_err)?;
        let target = full.strip_prefix(context.as_str()).ok_or_else(|| {
            ModelError::Invalid(
                "the chat template's prompt is not a prefix of the conversation".into(),
            )
        })?;
        let mut answer = self.encode_text(target)?;
        answer.extend(tok.eos_id().map(i64::from));
        Ok((self.encode_text(&context)?, answer))
    }

    /// One (prompt, completion) pair split as (prompt ids, completion ids + EOS): with the chat
    /// template ([`Self::encode_chat`]) or, raw, the prompt's tokens (with the tokenizer's
    /// special tokens, e.g. BOS) followed directly by the completion's.
    pub fn encode_pair(
        &self,
        format: PromptFormat,
        prompt: &str,
        completion: &str,
    ) -> Result<(Vec<i64>, Vec<i64>)> {
        match format {
            PromptFormat::Chat => {
                self.encode_chat(&[Message::user(prompt), Message::assistant(completion)])
            }
            PromptFormat::Raw => {
                let mut answer = self.encode_text(completion)?;
                answer.extend(self.tokenizer.eos_id().map(i64::from));
                Ok((self.encode_prompt(prompt, PromptFormat::Raw)?, answer))
            }
        }
    }

    /// Teacher-forced log-probability of each completion (its EOS included) after its prompt, in
    /// `format` ([`Self::encode_pair`]), `rows` pairs per forward pass: rank classification and
    /// "how likely is the right answer" both read this.
    pub fn completion_logprobs(
        &self,
        format: PromptFormat,
        pairs: &[(String, String)],
        rows: usize,
    ) -> Result<Vec<SequenceLogprob>> {
        let (prompts, answers): (Vec<Vec<i64>>, Vec<Vec<i64>>) = pairs
            .iter()
            .map(|(p, c)| self.encode_pair(format, p, c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        sequence_logprobs(&self.model, &prompts, &answers, self.pad_id(), 1.0, rows)
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
        let low = GenerateConfig {
            max_new_tokens: cfg.max_new_tokens,
            sampling: cfg.sampling,
            seed: cfg.seed,
            eos_token_ids: self.eos_ids(),
            pad_token_id: self.pad_id(),
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

    /// One continuation per prompt (in `format`, `rows` sequences at a time), decoded, cut at
    /// the stop strings and trimmed.
    pub fn complete(
        &self,
        prompts: &[String],
        format: PromptFormat,
        cfg: &TextGenerateConfig,
        rows: usize,
    ) -> Result<Vec<String>> {
        let out = self.sample_k(prompts, 1, format, cfg, rows, |_, _| {})?;
        Ok(out
            .into_iter()
            .map(|mut g| {
                g.pop()
                    .map(|g| g.text.trim().to_string())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Sum of next-token NLL (natural log) and number of predicted tokens over `texts` (token
    /// ids, e.g. from [`Self::encode_prompt`] in raw format): every token after the first is
    /// scored, `batch_size` texts per forward pass.
    pub fn nll(&self, texts: &[Vec<i64>], batch_size: usize) -> Result<(f64, usize)> {
        let texts: Vec<&Vec<i64>> = texts.iter().filter(|t| t.len() > 1).collect();
        let firsts: Vec<&[i64]> = texts.iter().map(|t| &t[..1]).collect();
        let rests: Vec<&[i64]> = texts.iter().map(|t| &t[1..]).collect();
        let scores =
            sequence_logprobs(&self.model, &firsts, &rests, self.pad_id(), 1.0, batch_size)?;
        Ok(scores
            .iter()
            .fold((0.0, 0), |(s, n), x| (s - x.sum, n + x.tokens)))
    }
}

/// What `merge_adapter_dir` wrote.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub base: std::path::PathBuf,
    pub head: Head,
    /// Linear maps the adapter changed.
    pub modules: usize,
}

/// `rlhf merge`: the adapter in `adapter` folded into its base (`base`, or the one its config
/// names) and written to `out` as a plain checkpoint: `config.json`, `model.safetensors`, the
/// tokenizer files and `generation_config.json` from wherever the model's live, and a reward
/// model's `reward.json`. An adapter with a scalar head (a reward or value model's) becomes a
/// scalar-head checkpoint.
pub fn merge_adapter_dir(
    adapter: &Path,
    base: Option<&Path>,
    out: &Path,
    device: Device,
) -> Result<MergeSummary> {
    use crate::lora;
    if adapter.canonicalize().ok() == out.canonicalize().ok() {
        return Err(ModelError::Invalid(format!(
            "{}: --out is the adapter's own directory; merge into another one",
            out.display()
        )));
    }
    let file = lora::read_adapter_config(adapter)?;
    let base = match base {
        Some(b) => b.to_path_buf(),
        None => lora::base_dir(adapter)?,
    };
    let head = if file.scalar_head {
        Head::Scalar
    } else {
        Head::Lm
    };
    let mut model = Gpt::load_with_head(&base, head, device)?;
    model.merge_adapter()?; // a base that is itself an adapter
    model.load_adapter(adapter)?;
    let modules = model.linears().iter().filter(|l| l.lora.is_some()).count();
    model.merge_adapter()?;
    model.save(out)?;
    let tok = lora::tokenizer_dir(adapter)?;
    let copies = [
        (tok.clone(), "tokenizer.json"),
        (tok.clone(), "tokenizer_config.json"),
        (tok.clone(), "special_tokens_map.json"),
        (tok, "chat_template.jinja"),
        (base.clone(), "generation_config.json"),
        (adapter.to_path_buf(), "reward.json"),
    ];
    for (dir, name) in copies {
        let src = dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name)).map_err(|e| ModelError::io(&src, e))?;
        }
    }
    Ok(MergeSummary {
        base,
        head,
        modules,
    })
}
