//! The task world: synthetic, verifiable tasks in small English, deterministic from a seed
//! (DESIGN.md "The task world"). Declares the modules and re-exports their public items only.
//!
//! Pipeline: `config` (what to generate) → `vocab` + `template` (words and grammar) → one module
//! per family (`arithmetic`, `lists`, `words`) → `task` (the family-agnostic `Task`) → `flaws`
//! (responses of a chosen quality) → `corpus` and `write` (the files).

pub(crate) mod arithmetic;
mod config;
mod corpus;
mod flaws;
pub(crate) mod lists;
mod task;
mod template;
pub(crate) mod vocab;
pub(crate) mod words;
mod write;

pub use arithmetic::{Op, Step, WordProblem, answer_line};
pub use config::{EVAL_FRACTION, Family, Split, WorldConfig, split_of};
pub use flaws::{Quality, Response, respond};
pub use lists::{ListAnswer, ListOp, ListTask};
pub use task::Task;
pub use vocab::{Entity, Gender};
pub use words::{RepeatTask, WordCountTask, count_words};
pub use write::{FileSummary, SftDemo, World, WorldSummary, build_world, write_world};
