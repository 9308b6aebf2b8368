//! Supervised fine-tuning (InstructGPT step 1): next-token loss on the assistant's tokens only.
//!
//! Each demonstration is rendered with the checkpoint's chat template: the prompt part (every
//! message before the last assistant turn, plus the generation prompt) is context; the rest of the
//! rendered conversation, followed by EOS, is the target. Batches are right-padded, which is exact
//! for a causal model without an attention mask because padding only follows real tokens.
//!
//! Not here: packing several demonstrations into one row (not implemented yet).
//!
//! Shapes: B batch, T longest example of the batch, V vocab.

use std::path::{Path, PathBuf};

use rlhf_data::{Role, SftRecord, read_jsonl_within};
use rlhf_model::{Batch, Gpt, Head, Pretrained, PromptFormat, Side, pad};
use rlhf_tokenizer::Message;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use crate::callbacks::StepRecord;
use crate::checkpoint;
use crate::config::TrainerConfig;
use crate::data::{DataPosition, DataSource, Epochs, Shard};
use crate::error::{Result, TrainError};
use crate::run::{Resume, RunOptions};
use crate::step::{Metrics, StepOutput, TrainStep};
use crate::trainer::{Trainer, run_steps_with};

/// Label of tokens that carry no loss (prompt and padding), as in PyTorch's cross-entropy.
pub(crate) const IGNORE: i64 = -100;

/// `rlhf sft`'s configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Share of demonstrations held out for the eval loss. 0.05, as in pretraining.
    pub eval_fraction: f64,
    pub trainer: TrainerConfig,
    /// LoRA instead of every weight (`--lora`; off by default).
    pub lora: rlhf_model::LoraConfig,
}

impl SftConfig {
    /// Checks every value before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(TrainError::Config(format!(
                "sft config: eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            )));
        }
        crate::adapter::validate(&self.lora)?;
        self.trainer.validate()
    }
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            eval_fraction: 0.05,
            trainer: TrainerConfig {
                // A fine-tune: smaller steps than pretraining, most of the work done in ~2 epochs
                // of the task world's 3000 demonstrations at batch 16.
                lr: 5e-4,
                warmup_steps: 20,
                max_steps: 300,
                batch_size: 16,
                eval_every: 100,
                checkpoint_every: 0,
                ..Default::default()
            },
            lora: Default::default(),
        }
    }
}

/// One tokenized demonstration: ids and per-token labels (IGNORE on the prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
}

/// Renders and tokenizes one record (`Pretrained::encode_chat`); labels are the next token
/// where it is a target.
pub fn encode_example(pre: &Pretrained, record: &SftRecord) -> Result<SftExample> {
    let msgs: Vec<Message> = record
        .messages()
        .into_iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            Message::new(role, m.content)
        })
        .collect();
    let (prompt, answer) = pre.encode_chat(&msgs)?;
    join(prompt, answer)
}

/// Prompt then answer tokens, with labels on the answer only: labels[t] is the token predicted
/// at position t, i.e. ids[t + 1] when that is an answer token.
fn join(mut prompt: Vec<i64>, mut answer: Vec<i64>) -> Result<SftExample> {
    if answer.is_empty() {
        return Err(TrainError::Invalid("empty completion".into()));
    }
    let n_prompt = prompt.len();
    prompt.append(&mut answer);
    let ids = prompt;
    let labels = (0..ids.len())
        .map(|t| {
            if t + 1 >= n_prompt && t + 1 < ids.len() {
                ids[t + 1]
            } else {
                IGNORE
            }
        })
        .collect();
    Ok(SftExample { ids, labels })
}

/// One (prompt, completion) pair in either prompt format (`Pretrained::encode_pair`): labels
/// cover the completion and EOS only.
pub fn encode_pair(
    pre: &Pretrained,
    format: PromptFormat,
    prompt: &str,
    completion: &str,
) -> Result<SftExample> {
    let (prompt, answer) = pre.encode_pair(format, prompt, completion)?;
    join(prompt, answer)
}

/// Right-pads examples into ids (B, T) and labels (B, T).
pub fn collate(examples: &[&SftExample], pad_id: i64) -> (Tensor, Tensor) {
    let ids: Vec<&[i64]> = examples.iter().map(|e| e.ids.as_slice()).collect();
    let labels: Vec<&[i64]> = examples.iter().map(|e| e.labels.as_slice()).collect();
    (
        pad(&ids, pad_id, Side::Right).0,
        pad(&labels, IGNORE, Side::Right).0,
    )
}

/// Mean cross-entropy over target tokens and their count.
pub fn sft_loss(gpt: &Gpt, ids: &Tensor, labels: &Tensor) -> Result<(Tensor, i64)> {
    let logits = gpt.forward(
        Batch {
            input_ids: ids,
            attention_mask: None,
        },
        None,
    )?; // (B, T, V)
    masked_ce(&logits, labels)
}

/// Cross-entropy of logits (B, T, V) against labels (B, T), averaged over positions whose label
/// is not IGNORE; also returns how many there are.
pub fn masked_ce(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, i64)> {
    let v = logits.size()[2];
    let flat = labels.reshape([-1]);
    let n = i64::try_from(flat.ne(IGNORE).sum(Kind::Int64))?;
    let loss = logits
        .reshape([-1, v])
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(&flat, None, Reduction::Mean, IGNORE, 0.0);
    Ok((loss, n))
}

/// Shuffled epochs over the training examples.
pub struct SftData {
    examples: Vec<SftExample>,
    pad: i64,
    epochs: Epochs,
    /// Token positions of every batch drawn, padding included (it is computed): FLOPs counts.
    pub tokens: u64,
}

impl SftData {
    pub fn new(examples: Vec<SftExample>, batch: usize, pad: i64, seed: u64) -> Self {
        let epochs = Epochs::new(examples.len(), batch, seed, 2);
        Self {
            examples,
            pad,
            epochs,
            tokens: 0,
        }
    }

    /// Yields only `shard`'s slice of every global batch (data parallelism; see [`Shard`]).
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        self.epochs = self.epochs.sharded(shard)?;
        Ok(self)
    }
}

impl DataSource for SftData {
    type Batch = (Tensor, Tensor);

    fn next_batch(&mut self) -> Result<Option<(Tensor, Tensor)>> {
        let rows: Vec<&SftExample> = self
            .epochs
            .next_indices()
            .into_iter()
            .map(|i| &self.examples[i])
            .collect();
        let (ids, labels) = collate(&rows, self.pad);
        self.tokens += ids.numel() as u64;
        Ok(Some((ids, labels)))
    }

    fn position(&self) -> DataPosition {
        self.epochs.position()
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        self.epochs.seek(pos);
        Ok(())
    }
}

/// The model plus held-out batches.
pub struct SftStep<'a> {
    pub gpt: &'a Gpt,
    pub eval: Vec<(Tensor, Tensor)>,
}

impl TrainStep for SftStep<'_> {
    type Batch = (Tensor, Tensor);

    fn compute(&self) -> rlhf_model::Compute {
        self.gpt.compute()
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.gpt.trainable_parameters()
    }

    fn loss(&mut self, (ids, labels): &(Tensor, Tensor)) -> Result<StepOutput> {
        let dev = self.gpt.device();
        let (loss, n) = sft_loss(self.gpt, &ids.to_device(dev), &labels.to_device(dev))?;
        Ok(StepOutput::new(loss, n))
    }

    fn eval(&mut self) -> Result<Metrics> {
        let dev = self.gpt.device();
        let (mut total, mut count) = (0.0, 0i64);
        for (ids, labels) in &self.eval {
            let (loss, n) = sft_loss(self.gpt, &ids.to_device(dev), &labels.to_device(dev))?;
            total += f64::try_from(loss)? * n as f64;
            count += n;
        }
        Ok(Metrics::from([(
            "loss".to_string(),
            total / count.max(1) as f64,
        )]))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Ok(self.gpt.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_gpt(self.gpt, dir)
    }
}

/// Reads and encodes every demonstration; errors name the file, line and field.
pub fn load_examples(pre: &Pretrained, data: &Path) -> Result<Vec<SftExample>> {
    let budget = crate::data::text_budget(pre);
    let records: Vec<(usize, SftRecord)> = read_jsonl_within(data, budget.as_ref())?;
    let max = pre.model.cfg.max_positions as usize;
    let mut out = Vec::with_capacity(records.len());
    for (line, r) in &records {
        let field = match r {
            SftRecord::Chat { .. } => "messages",
            SftRecord::Completion { .. } => "completion",
        };
        let ex = encode_example(pre, r).map_err(|e| e.at(data, *line, field))?;
        if ex.ids.len() > max {
            let e = TrainError::Invalid(format!(
                "the rendered example is {} tokens, longer than the model's context of {max} \
                 (shorten it or raise max_position_embeddings)",
                ex.ids.len()
            ));
            return Err(e.at(data, *line, field));
        }
        out.push(ex);
    }
    Ok(out)
}

/// What a finished SFT run reports.
#[derive(Debug, Clone)]
pub struct SftSummary {
    pub train_examples: usize,
    pub eval_examples: usize,
    pub eval_loss_start: f64,
    pub eval_loss_end: f64,
    pub steps: u64,
    pub elapsed_s: f64,
    pub out: PathBuf,
}

/// What an in-memory fine-tune did: each step's record and the token positions it computed.
#[derive(Debug, Clone, Default)]
pub struct FitStats {
    pub records: Vec<StepRecord>,
    pub tokens: u64,
}

/// The SFT core, in memory: fine-tunes `gpt` on `examples` for `cfg.max_steps` steps of
/// `cfg.batch_size` (shuffled epochs seeded by `cfg.seed`) with the trainer's optimizer and
/// schedule, writing nothing to disk; `on_step` sees every step. The experiments train their
/// models this way; [`sft`] is the same step over a run folder.
pub fn fit(
    gpt: &Gpt,
    examples: Vec<SftExample>,
    pad_id: i64,
    cfg: &TrainerConfig,
    on_step: impl FnMut(&StepRecord),
) -> Result<FitStats> {
    if examples.is_empty() {
        return Err(TrainError::Invalid("no training examples".into()));
    }
    let mut data = SftData::new(examples, cfg.batch_size, pad_id, cfg.seed);
    let mut step = SftStep { gpt, eval: vec![] };
    let records = run_steps_with(cfg, &mut step, &mut data, cfg.max_steps, on_step)?;
    Ok(FitStats {
        records,
        tokens: data.tokens,
    })
}

/// Fine-tunes the checkpoint in `model` on `data` (SFT JSONL); `out` becomes a checkpoint dir.
pub fn sft(
    model: &Path,
    data: &Path,
    out: &Path,
    cfg: &SftConfig,
    resume: Resume,
    device: Device,
) -> Result<SftSummary> {
    cfg.validate()?;
    let run = RunOptions::stage(out, "sft", cfg, &[("model", model), ("data", data)], resume)?;
    let mut trainer = Trainer::new(cfg.trainer.clone(), run)?;
    let mut pre = Pretrained::load(model, Head::Lm, device)?;
    crate::adapter::prepare(&mut pre.model, &cfg.lora, model, cfg.trainer.seed)?;
    let mut examples = load_examples(&pre, data)?;
    let n_eval = ((examples.len() as f64) * cfg.eval_fraction).ceil() as usize;
    if examples.len() < n_eval + cfg.trainer.batch_size {
        return Err(TrainError::Invalid(format!(
            "{}: {} demonstrations are too few for {n_eval} held out plus one batch of {}",
            data.display(),
            examples.len(),
            cfg.trainer.batch_size
        )));
    }
    let held = examples.split_off(examples.len() - n_eval);
    let pad = pre.pad_id();
    let eval = held
        .chunks(16)
        .map(|c| collate(&c.iter().collect::<Vec<_>>(), pad))
        .collect();
    let mut step = SftStep {
        gpt: &pre.model,
        eval,
    };
    let eval_loss_start = step.eval()?.get("loss").copied().unwrap_or(f64::NAN);
    let train_examples = examples.len();
    let mut source = SftData::new(examples, cfg.trainer.batch_size, pad, cfg.trainer.seed)
        .sharded(Shard::of_process())?;
    let summary = trainer.fit(&mut step, &mut source)?;
    let eval_loss_end = step.eval()?.get("loss").copied().unwrap_or(f64::NAN);
    checkpoint::export_with(&pre.model, summary.checkpoint.as_deref(), out, |dir| {
        Ok(pre.tokenizer.save(dir)?)
    })?;
    Ok(SftSummary {
        train_examples,
        eval_examples: n_eval,
        eval_loss_start,
        eval_loss_end,
        steps: summary.step,
        elapsed_s: summary.elapsed_s,
        out: out.to_path_buf(),
    })
}
