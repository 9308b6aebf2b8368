//! `rlhf-data`: the data formats that pass between stages, JSONL readers whose errors name the
//! file, line and field, the synthetic task world (`rlhf data`), its oracle and its simulated
//! labelers. Pure Rust: no libtorch, no tokenizer, no batching of tensors. This file only
//! declares and re-exports.
//!
//! - Formats ([`SftRecord`], [`SampleRecord`], [`RankingRecord`], ...) and [`read_jsonl`] /
//!   [`write_jsonl`] (atomic).
//! - The task world: [`write_world`] writes `corpus.txt`, `corpus.jsonl`, `sft.jsonl`,
//!   `prompts.jsonl`, `eval.jsonl` and `world.json` from a [`WorldConfig`]; [`Task`] is one item,
//!   generated or parsed back from its prompt. Eval items are disjoint from every training file
//!   at the entity and operand level ([`split_of`]).
//! - The oracle: [`score`] / [`grade`], correctness ≫ format ≫ length; [`extract_answer`] is the
//!   "The answer is N." contract.
//! - Simulated labelers: [`SimulatedLabeler`] ranks with Bradley–Terry noise calibrated to 73%
//!   inter-labeler agreement ([`CALIBRATED_TAU`]).
//!
//! ```
//! use rlhf_data::{RankingRecord, SftRecord, SimulatedLabeler, Task, WorldConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("rlhf-data-doc-{}", std::process::id()));
//! let cfg = WorldConfig { corpus_docs: 20, sft_examples: 8, prompts: 8, eval_examples: 8,
//!                         ..Default::default() };
//! let summary = rlhf_data::write_world(&dir, &cfg)?;
//! assert_eq!(summary.files.len(), 6);
//! let sft: Vec<SftRecord> = rlhf_data::read_jsonl(dir.join("sft.jsonl"))?;
//! assert_eq!(sft.len(), 8);
//!
//! let prompt = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. \
//!               How many flowers does she have left?";
//! let good = "Jane gives 2 to her mom, so 12 - 2 = 10. \
//!             She gives 3 to her dad, so 10 - 3 = 7. The answer is 7.";
//! assert!(rlhf_data::score(prompt, good)? > rlhf_data::score(prompt, "The answer is 8.")?);
//!
//! let task = Task::parse(prompt)?;
//! let responses = vec![good.to_string(), "The answer is 8.".to_string()];
//! let ranking = SimulatedLabeler::noise_free().rank(&task, &responses)?;
//! let record = RankingRecord::new(prompt.into(), responses, ranking)?;
//! assert_eq!(record.ranking().pairs(), vec![(0, 1)]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod error;
pub mod flan;
mod formats;
mod jsonl;
mod labeler;
mod oracle;
mod reasoning;
pub mod rng;
mod world;

pub use error::{DataError, RecordError, Result};
pub use formats::{
    EvalRecord, Message, PairwiseRecord, PreferenceRecord, PromptRecord, Ranking, RankingRecord,
    Role, SampleRecord, SftRecord, TextRecord,
};
pub use jsonl::{
    DEFAULT_MAX_LINE_BYTES, Fields, JsonlRecord, TextBudget, parse_jsonl, read_documents,
    read_jsonl, read_jsonl_lines, read_jsonl_within, write_jsonl, write_text,
};
pub use labeler::{
    Agreement, CALIBRATED_TAU, CANDIDATE_MIX, CalibrationPair, Labeled, LabelerConfig,
    LabelerPanel, SimulatedLabeler, TARGET_AGREEMENT, agreement, calibrate_tau, calibration_pairs,
    expected_agreement, oracle_tie_share, sample_pairs,
};
pub use oracle::{
    CORRECT_REWARD, FORMAT_REWARD, Grade, LENGTH_PENALTY_CAP, LENGTH_PENALTY_PER_CHAR, WORK_REWARD,
    extract_answer, grade, length_budget, score,
};
pub use reasoning::{
    AnswerPattern, Exemplar, ExemplarFormat, Vote, answer_matches, few_shot_prompt, lmsi_keep,
    majority_vote,
};
pub use rng::{WorldRng, world_rng};
pub use world::{
    EVAL_FRACTION, Entity, Family, FileSummary, Gender, ListAnswer, ListOp, ListTask, Op, Quality,
    RepeatTask, Response, SftDemo, Split, Step, Task, WordCountTask, WordProblem, World,
    WorldConfig, WorldSummary, answer_line, build_world, count_words, respond, split_of,
    write_world,
};
