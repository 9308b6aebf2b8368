//! `rlhf-train`: the training foundation every stage (pretraining, SFT, reward model, PPO) reuses.
//! One generic loop ([`Trainer`]) drives any algorithm written as a [`TrainStep`] over any
//! [`DataSource`]: gradient accumulation, AdamW with decoupled weight decay ([`optim`]), warm-up +
//! cosine LR, global-norm clipping, NaN stop, evaluation, `metrics.jsonl`, a progress bar, atomic
//! checkpoints and exact resume. Configuration is strict TOML plus `--set` overrides
//! ([`config`]). Not here: the algorithms and datasets themselves (the stage crates).
//!
//! A pretraining run:
//!
//! ```no_run
//! use std::path::Path;
//!
//! use rlhf_model::{Batch, Gpt, Head, ModelConfig};
//! use rlhf_train::{RandomTokens, Result, RunOptions, StepOutput, TrainStep, Trainer};
//! use rlhf_train::{TrainerConfig, checkpoint, config};
//! use tch::{Device, Tensor};
//!
//! /// Next-token prediction on (B, T) token ids.
//! struct Pretrain {
//!     gpt: Gpt,
//! }
//!
//! impl TrainStep for Pretrain {
//!     type Batch = Tensor;
//!
//!     fn parameters(&self) -> Vec<(String, Tensor)> {
//!         self.gpt.vs.variables().into_iter().collect()
//!     }
//!
//!     fn loss(&mut self, ids: &Tensor) -> Result<StepOutput> {
//!         let batch = Batch { input_ids: ids, attention_mask: None };
//!         let logits = self.gpt.forward(batch, None)?; // (B, T, V)
//!         let (b, t, v) = logits.size3()?;
//!         let pred = logits.narrow(1, 0, t - 1).reshape([-1, v]); // (B*(T-1), V)
//!         let target = ids.narrow(1, 1, t - 1).reshape([-1]);
//!         // A mean over b*(t-1) tokens: that count is the micro-batch's weight.
//!         Ok(StepOutput::new(pred.cross_entropy_for_logits(&target), b * (t - 1)))
//!     }
//!
//!     fn save(&self, dir: &Path) -> Result<()> {
//!         Ok(self.gpt.save(dir)?)
//!     }
//!
//!     fn load(&mut self, dir: &Path) -> Result<()> {
//!         checkpoint::load_gpt(&self.gpt, dir)
//!     }
//! }
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct PretrainConfig {
//!     trainer: TrainerConfig,
//!     seq_len: i64,
//! }
//!
//! fn main() -> Result<()> {
//!     let set = vec!["trainer.lr=1e-3".to_string()]; // from `--set`
//!     let cfg: PretrainConfig = config::load(Some(Path::new("pretrain.toml")), &set)?;
//!     tch::manual_seed(cfg.trainer.seed as i64); // the model's initialisation
//!     let model_cfg = ModelConfig::from_file(Path::new("tiny/config.json"))?;
//!     let mut step = Pretrain { gpt: Gpt::new(&model_cfg, Head::Lm, Device::Cpu) };
//!     let batch = cfg.trainer.batch_size as i64;
//!     let mut data = RandomTokens::new(model_cfg.vocab_size, batch, cfg.seq_len, cfg.trainer.seed);
//!     let mut run = RunOptions::new("runs/tiny", "pretrain");
//!     run.config = config::to_table(&cfg)?;
//!     let summary = Trainer::new(cfg.trainer.clone(), run)?.fit(&mut step, &mut data)?;
//!     println!("step {}: loss {:?}", summary.step, summary.last.map(|r| r.loss));
//!     Ok(())
//! }
//! ```
//!
//! This file only declares and re-exports.

pub mod adapter;
pub mod callbacks;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod distill;
pub mod dpo;
pub mod engine;
pub mod error;
pub mod flan;
pub mod grpo;
pub mod lmsi;
pub mod optim;
pub mod parallel;
pub mod ppo;
pub mod pretrain;
pub mod reward;
pub mod rl;
pub mod rollout;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod sft;
pub mod step;
pub mod trainer;

pub use callbacks::{Callback, Event, StepRecord, Summary};
pub use config::{LossWeighting, TrainerConfig};
pub use data::{DataPosition, DataRng, DataSource, Epochs, RandomTokens, RngState, Shard};
pub use dpo::{DpoConfig, DpoLoss, DpoSummary, dpo};
pub use error::{Result, TrainError};
pub use optim::{AdamW, AdamWConfig, ClippedGradients};
pub use ppo::{PpoConfig, PpoInputs, PpoReward, PpoSummary, ppo};
pub use pretrain::{Preset, PretrainConfig, PretrainSummary, pretrain};
pub use reward::{RewardConfig, RewardSummary, reward};
pub use run::{Resume, RunDir, RunInput, RunOptions};
pub use schedule::LrSchedule;
pub use sft::{SftConfig, SftSummary, sft};
pub use step::{Metrics, StepOutput, TrainStep};
pub use trainer::{Trainer, run_steps, run_steps_with};
