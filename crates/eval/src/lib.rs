//! `rlhf-eval`: evaluation as a library. Judges ([`Judge`]: the task world's oracle, a reward
//! model, an LLM behind an OpenAI-compatible server) decide between paired responses; a
//! [`Comparison`] (win rate with its interval, mean scores, KL, lengths) is the one typed result
//! that `rlhf eval`, the demo, PPO's in-loop evaluation and the experiments produce and read;
//! best-of-n curves, greedy task accuracy, corpus NLL and the report files complete it.
//!
//! Not here: the statistics and plots (`rlhf-report`), teacher-forced scoring itself
//! (`rlhf_model::score`), training (`rlhf-train`). This file only declares and re-exports.

pub mod accuracy;
pub mod best_of_n;
pub mod compare;
pub mod error;
pub mod evaluate;
pub mod judge;
pub mod llm;
pub mod progress;
pub mod report;
pub mod reward_model;

pub use accuracy::{TaskScore, corpus_nll, greedy_task_score, sample_answers};
pub use best_of_n::{BestOfN, BestOfNConfig, BestOfNPoint, best_indices, best_of_n};
pub use compare::{
    CompareConfig, Comparison, Item, Paired, Response, compare_models, compare_responses,
    kl_per_prompt, sample_responses, summarize, summarize_grouped,
};
pub use error::{EvalError, Result};
pub use evaluate::{EvalInputs, Evaluation, evaluate, read_prompts};
pub use judge::{Judge, JudgeSpec, Oracle, Scorer, Verdicts, scored_verdicts};
pub use llm::LlmJudge;
pub use progress::{Observer, Quiet};
pub use report::{summary_text, write_evaluation};
pub use reward_model::RewardModel;
