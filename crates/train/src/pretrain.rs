//! The pretraining stage: a byte-level BPE trained on the corpus, then a tiny decoder trained
//! from scratch on random windows of the tokenized corpus, with a held-out loss.
//!
//! Not here: the loop itself (`trainer.rs`), the corpus generator (the data crate).
//!
//! Shapes: B batch, T sequence length.

use std::path::{Path, PathBuf};

use rlhf_model::{Batch, Gpt, Head, ModelConfig};
use rlhf_tokenizer::{BpeConfig, Tokenizer, train_bpe};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::config::TrainerConfig;
use crate::data::{DataPosition, DataRng, DataSource, Shard, stream_position, stream_seek};
use crate::error::{Result, TrainError};
use crate::run::{Resume, RunOptions};
use crate::step::{Metrics, StepOutput, TrainStep};
use crate::trainer::Trainer;

/// Model sizes for the embedded default (Llama family: RoPE, RMSNorm, SwiGLU, tied embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// d=64, 2 layers, 4 heads, vocab 512: ~0.1M parameters; seconds per hundred steps.
    Nano,
    /// d=128, 4 layers, 4 heads, vocab 1024: ~0.9M parameters; the `rlhf demo` default.
    Micro,
    /// d=256, 6 layers, 8 heads, vocab 1280: ~4.5M parameters; minutes on 2 cores.
    Small,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "nano" => Ok(Preset::Nano),
            "micro" => Ok(Preset::Micro),
            "small" => Ok(Preset::Small),
            other => Err(format!(
                "unknown preset '{other}'; expected nano, micro or small"
            )),
        }
    }
}

impl Preset {
    /// (hidden, layers, heads, kv heads, vocab)
    fn dims(self) -> (i64, i64, i64, i64, usize) {
        match self {
            Preset::Nano => (64, 2, 4, 2, 512),
            Preset::Micro => (128, 4, 4, 2, 1024),
            Preset::Small => (256, 6, 8, 4, 1280),
        }
    }

    pub fn vocab_size(self) -> usize {
        self.dims().4
    }

    /// The model config for a tokenizer with these special tokens.
    pub fn model_config(self, tok: &Tokenizer, max_positions: i64) -> Result<ModelConfig> {
        let (c, layers, heads, kv, _) = self.dims();
        let json = serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": tok.vocab_size(), "hidden_size": c, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv,
            // SwiGLU with 8/3 expansion keeps the MLP's parameter count at GPT-2's 4x.
            "intermediate_size": (8 * c / 3 + 7) / 8 * 8,
            "max_position_embeddings": max_positions, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
            "bos_token_id": tok.bos_id(), "eos_token_id": tok.eos_id(), "pad_token_id": tok.pad_id(),
        });
        Ok(ModelConfig::from_json(&json, Path::new("preset"))?)
    }
}

/// `rlhf pretrain`'s configuration (`--config FILE`, `--set key=value`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    pub preset: Preset,
    /// Tokens per training row. 128: covers a whole word problem with its solution.
    pub seq_len: i64,
    /// The model's context (positions). 256: room for a prompt plus a long answer later.
    pub max_positions: i64,
    /// Share of the corpus's tokens held out for the eval loss. 0.05: enough windows for a stable
    /// estimate, little taken from training.
    pub eval_fraction: f64,
    /// Eval windows (of `seq_len`) averaged per evaluation. 64: ~8k tokens, a few hundred ms.
    pub eval_windows: i64,
    /// BPE vocabulary size; 0 means the preset's (a small corpus may not support a big one).
    pub vocab_size: usize,
    pub trainer: TrainerConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Micro,
            seq_len: 128,
            max_positions: 256,
            eval_fraction: 0.05,
            eval_windows: 64,
            vocab_size: 0,
            trainer: TrainerConfig {
                // Tiny models tolerate (and need) a larger LR than GPT-3's 6e-4 in few steps.
                lr: 2e-3,
                warmup_steps: 50,
                max_steps: 600,
                batch_size: 16,
                eval_every: 100,
                checkpoint_every: 200,
                ..Default::default()
            },
        }
    }
}

impl PretrainConfig {
    /// Checks every value before anything is read or trained.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("pretrain config: {m}")));
        if self.seq_len < 1 || self.max_positions < 2 {
            return bad("seq_len must be at least 1 and max_positions at least 2".into());
        }
        if self.seq_len + 1 > self.max_positions {
            return bad(format!(
                "seq_len + 1 = {} must not exceed max_positions = {}",
                self.seq_len + 1,
                self.max_positions
            ));
        }
        if !(self.eval_fraction > 0.0 && self.eval_fraction < 1.0) || self.eval_windows < 1 {
            return bad("eval_fraction must be in (0, 1) and eval_windows at least 1".into());
        }
        if self.vocab_size != 0 && self.vocab_size < 260 {
            return bad(format!(
                "vocab_size {} is below the 256 bytes and 4 special tokens a byte-level BPE needs",
                self.vocab_size
            ));
        }
        self.trainer.validate()
    }
}

/// Random windows of T+1 tokens from one token stream (documents joined by EOS).
pub struct CorpusWindows {
    stream: Tensor, // (N,) i64
    batch: i64,
    shard: Shard,
    seq_len: i64,
    rng: DataRng,
    drawn: u64,
}

impl CorpusWindows {
    pub fn new(stream: Tensor, batch: i64, seq_len: i64, seed: u64) -> Result<Self> {
        let n = stream.size()[0];
        if n < seq_len + 1 {
            return Err(TrainError::Invalid(format!(
                "the corpus has {n} training tokens, fewer than one row of seq_len + 1 = {}; \
                 use a bigger corpus or a smaller seq_len",
                seq_len + 1
            )));
        }
        Ok(Self {
            stream,
            batch,
            shard: Shard::WHOLE,
            seq_len,
            rng: DataRng::new(seed, 1),
            drawn: 0,
        })
    }

    /// Draws the same global batches but yields only `shard`'s rows of each (data parallelism).
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        shard.range(self.batch as usize)?;
        self.shard = shard;
        Ok(self)
    }
}

impl DataSource for CorpusWindows {
    type Batch = Tensor;

    fn next_batch(&mut self) -> Result<Option<Tensor>> {
        use rand::Rng;
        let span = (self.stream.size()[0] - self.seq_len) as u64; // valid starts: 0..span
        let starts: Vec<i64> = (0..self.batch)
            .map(|_| self.rng.random_range(0..span) as i64)
            .collect();
        let offsets = Tensor::arange(self.seq_len + 1, (Kind::Int64, Device::Cpu));
        let index = Tensor::from_slice(&starts).unsqueeze(1) + offsets.unsqueeze(0); // (B, T+1)
        self.drawn += 1;
        let rows = self.stream.index_select(0, &index.reshape([-1]));
        let rows = rows.reshape([self.batch, self.seq_len + 1]);
        if self.shard.world == 1 {
            return Ok(Some(rows));
        }
        let mine = self.shard.range(self.batch as usize)?;
        let len = (mine.end - mine.start) as i64;
        Ok(Some(rows.narrow(0, mine.start as i64, len).contiguous()))
    }

    fn position(&self) -> DataPosition {
        stream_position(self.drawn, &self.rng)
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        stream_seek(pos, &mut self.drawn, &mut self.rng);
        Ok(())
    }
}

/// Mean next-token cross-entropy of (B, T) ids.
pub fn lm_loss(gpt: &Gpt, ids: &Tensor) -> Result<Tensor> {
    let logits = gpt.forward(
        Batch {
            input_ids: ids,
            attention_mask: None,
        },
        None,
    )?; // (B, T, V)
    let (_, t, v) = logits.size3()?;
    let pred = logits.narrow(1, 0, t - 1).reshape([-1, v]);
    let target = ids.narrow(1, 1, t - 1).reshape([-1]);
    Ok(pred.cross_entropy_for_logits(&target))
}

/// Next-token prediction with a held-out loss.
pub struct PretrainStep {
    pub gpt: Gpt,
    eval: Tensor, // (W, T+1) fixed held-out windows
}

impl TrainStep for PretrainStep {
    type Batch = Tensor;

    fn compute(&self) -> rlhf_model::Compute {
        self.gpt.compute()
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.gpt.vs.variables().into_iter().collect()
    }

    fn loss(&mut self, ids: &Tensor) -> Result<StepOutput> {
        let ids = ids.to_device(self.gpt.device());
        let (b, t) = ids.size2()?;
        Ok(StepOutput::new(lm_loss(&self.gpt, &ids)?, b * (t - 1)))
    }

    fn eval(&mut self) -> Result<Metrics> {
        let ids = self.eval.to_device(self.gpt.device());
        let mut total = 0.0;
        let chunks = ids.split(16, 0);
        for chunk in &chunks {
            total += f64::try_from(lm_loss(&self.gpt, chunk)?)? * chunk.size()[0] as f64;
        }
        let loss = total / ids.size()[0].max(1) as f64;
        Ok(Metrics::from([("loss".to_string(), loss)]))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Ok(self.gpt.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_gpt(&self.gpt, dir)
    }
}

/// Splits `corpus.txt` into documents (separated by blank lines).
fn read_corpus(data: &Path) -> Result<Vec<String>> {
    let path = data.join("corpus.txt");
    let docs = rlhf_data::read_documents(&path)?;
    if docs.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: the corpus is empty",
            path.display()
        )));
    }
    Ok(docs)
}

/// Encodes documents and joins them with EOS into one stream (N,).
pub(crate) fn token_stream(tok: &Tokenizer, docs: &[String]) -> Result<Vec<i64>> {
    let eos = tok.eos_id().map_or(0, i64::from);
    let encoded = tok.encode_batch(docs, false)?;
    let mut stream = Vec::new();
    for ids in encoded {
        stream.extend(ids.into_iter().map(i64::from));
        stream.push(eos);
    }
    Ok(stream)
}

/// What a finished pretraining run reports.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    pub params: i64,
    pub train_tokens: usize,
    pub eval_tokens: usize,
    /// Held-out loss before training and at the end.
    pub eval_loss_start: f64,
    pub eval_loss_end: f64,
    pub steps: u64,
    pub elapsed_s: f64,
    pub out: PathBuf,
}

/// Trains the tokenizer (or reuses the one in `out` when resuming) and the model; writes a
/// complete checkpoint dir into `out` (plus `checkpoints/` and `metrics.jsonl`).
pub fn pretrain(
    data: &Path,
    out: &Path,
    cfg: &PretrainConfig,
    resume: Resume,
    device: Device,
    progress: bool,
) -> Result<PretrainSummary> {
    cfg.validate()?;
    // Fail on an unwritable output, or a fresh run over an old one, before minutes of work (and
    // before the tokenizer below is written into the folder).
    let corpus = data.join("corpus.txt");
    let mut run = RunOptions::stage(out, "pretrain", cfg, &[("corpus", &corpus)], resume.clone())?;
    run.progress = progress;
    let mut trainer = Trainer::new(cfg.trainer.clone(), run)?;
    let docs = read_corpus(data)?;
    let tok = match resume {
        Resume::No => {
            let vocab_size = match cfg.vocab_size {
                0 => cfg.preset.vocab_size(),
                n => n,
            };
            let bpe = BpeConfig {
                vocab_size,
                ..Default::default()
            };
            let tok = train_bpe(docs.iter().map(String::as_str), &bpe)
                .map_err(|e| TrainError::from(e).context("training the tokenizer"))?;
            // Every rank trains the same tokenizer; rank 0 writes it.
            if rlhf_model::dist::is_writer() {
                tok.save(out)?;
            }
            tok
        }
        _ => Tokenizer::from_dir(out)?,
    };
    let stream = token_stream(&tok, &docs)?;
    let n_eval = ((stream.len() as f64) * cfg.eval_fraction) as usize;
    let (train, held) = stream.split_at(stream.len() - n_eval);
    let batch = cfg.trainer.batch_size as i64;
    let mut source = CorpusWindows::new(
        Tensor::from_slice(train),
        batch,
        cfg.seq_len,
        cfg.trainer.seed,
    )?
    .sharded(Shard::of_process())?;
    let windows = held.len() as i64 / (cfg.seq_len + 1);
    if windows == 0 {
        return Err(TrainError::Invalid(format!(
            "the held-out share of the corpus (eval_fraction = {}) has {} tokens, fewer than one \
             row of seq_len + 1 = {}; raise eval_fraction or use a bigger corpus",
            cfg.eval_fraction,
            held.len(),
            cfg.seq_len + 1
        )));
    }
    let eval = Tensor::from_slice(&held[..(windows * (cfg.seq_len + 1)) as usize])
        .view([windows, cfg.seq_len + 1])
        .narrow(0, 0, windows.min(cfg.eval_windows));
    let model_cfg = cfg.preset.model_config(&tok, cfg.max_positions)?;
    tch::manual_seed(cfg.trainer.seed as i64);
    let gpt = Gpt::try_new(&model_cfg, Head::Lm, device)?;
    let mut step = PretrainStep { gpt, eval };
    let eval_loss_start = step.eval()?.get("loss").copied().unwrap_or(f64::NAN);
    let summary = trainer.fit(&mut step, &mut source)?;
    let eval_loss_end = step.eval()?.get("loss").copied().unwrap_or(f64::NAN);
    checkpoint::export(&step.gpt, summary.checkpoint.as_deref(), out)?;
    Ok(PretrainSummary {
        params: step.gpt.num_params(),
        train_tokens: train.len(),
        eval_tokens: held.len(),
        eval_loss_start,
        eval_loss_end,
        steps: summary.step,
        elapsed_s: summary.elapsed_s,
        out: out.to_path_buf(),
    })
}
