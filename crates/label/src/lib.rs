//! `rlhf-label`: human feedback. The labeling web app (`web.rs`) over a SQLite or PostgreSQL
//! database (`db.rs`; tasks given out and submissions taken under row locks in `assign.rs`), the
//! export to reward-model data and labeler statistics (`stats.rs`), and AI feedback from an
//! OpenAI-compatible judge (`judge.rs`). No libtorch.
//! This file only declares and re-exports.

mod assign;
pub mod db;
pub mod error;
pub mod judge;
pub mod stats;
pub mod web;

pub use db::{Db, Flag, Labeler, NewSubmission, Progress, Submission, Task};
pub use error::{LabelError, Result};
pub use web::{WebConfig, router};
