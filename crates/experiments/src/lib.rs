//! The paper-table experiments, each regenerated from nothing (task data and tiny models trained
//! in memory) with tables, plots, FLOPs and wall time, and seed-level confidence intervals:
//!
//! - [`rlhf`], row E1: the whole InstructGPT pipeline (the demo) per seed, PPO and PPO-ptx vs
//!   SFT by the oracle;
//! - [`cot`], row E3: chain of thought vs direct answers, a same-length dots control,
//!   answer-before-reasoning, and CoT prompting of a direct-trained model;
//! - [`format`], row E4: plain vs reversed vs scratchpad output for 3-digit addition across
//!   training-set sizes;
//! - [`lmsi`], row E8: self-improvement by majority vote, with the no-vote and gold controls;
//! - [`emergence`], row E2: a family of model sizes on 4-digit addition, the same outputs scored
//!   by exact match, per-digit accuracy, edit distance and answer likelihood;
//! - [`flan`], row E5, and [`distill`], row E6;
//! - [`webgpt`], row E7: browsing with citations, behaviour cloning, a reward model and
//!   best-of-n;
//! - [`align`]: the alignment methods side by side at equal budget, and [`verifiable`]: GRPO
//!   against its PPO counterpart on a verifiable reward (word-problem answers).
//!
//! Each experiment is `run(config, seeds, out_dir, device, observer)`; the CLI's
//! `rlhf experiment` wraps them. Not here: the tools the experiments exercise (few-shot prompts
//! and votes in `rlhf_data::reasoning`, LMSI in `rlhf_train::lmsi`).

pub mod align;
pub mod common;
pub mod cot;
pub mod demo;
pub mod distill;
pub mod emergence;
pub mod error;
pub mod flan;
pub mod format;
pub mod lmsi;
pub mod rlhf;
pub mod tiny;
pub mod verifiable;
pub mod webgpt;

pub use common::{Observer, Quiet};
pub use error::{ExperimentError, Result};
pub use tiny::{TinyLm, TinySpec, TrainStats};
