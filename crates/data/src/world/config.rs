//! Configuration of the task world: which task families exist, the train/eval split, and
//! `WorldConfig` with the sizes `write_world` produces.
//!
//! It holds no generation logic; it only says what to generate and checks that it makes sense.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::hash_unit;

/// A task family: a generator of (prompt, gold answer, checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Arithmetic word problems with 1–4 steps, answered with chain of thought.
    Arithmetic,
    /// Sort ascending/descending, reverse, count, max, min of a list of numbers.
    Lists,
    /// "Describe a cat in exactly 5 words."
    WordCount,
    /// "Repeat the word red 4 times."
    Repeat,
}

impl Family {
    /// Every family, in a fixed order.
    pub const ALL: [Family; 4] = [
        Family::Arithmetic,
        Family::Lists,
        Family::WordCount,
        Family::Repeat,
    ];

    /// The snake_case name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Family::Arithmetic => "arithmetic",
            Family::Lists => "lists",
            Family::WordCount => "word_count",
            Family::Repeat => "repeat",
        }
    }
}

/// Which side of the train/eval split an entity or operand tuple is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// Share of every entity list and of the operand-tuple space reserved for evaluation.
///
/// One fifth keeps enough eval entities for variety (e.g. 12 of 60 names) while leaving training
/// most of the vocabulary. It is a constant, not a config value: the split is a property of the
/// world that holds for every seed, so an eval file of one seed is disjoint from the training
/// files of every other seed too.
pub const EVAL_FRACTION: f64 = 0.2;

/// The split of a key ("name:Jane", "arith:12|-2|-3", ...) by a stable hash: seed-independent
/// and the same on every platform.
pub fn split_of(key: &str) -> Split {
    if hash_unit(key) < EVAL_FRACTION {
        Split::Eval
    } else {
        Split::Train
    }
}

/// Sizes and knobs of the generated world. Defaults are sized so that a ~1M-parameter model
/// learns something in about a minute on 2 CPU cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Seeds every file; the same seed gives byte-identical files.
    pub seed: u64,
    /// Pretraining documents in `corpus.txt`: 6000 documents are about 1.4 MB of text, about
    /// what a 1M-parameter model sees in a minute of 2-core CPU training (batch 16 × 128
    /// tokens at ~10 steps/s), so one pass covers most of it.
    pub corpus_docs: usize,
    /// SFT demonstrations: 3000 is a few hundred steps at batch 8, enough to learn the formats.
    pub sft_examples: usize,
    /// Distinct prompts for sampling, labeling and PPO; 1000 gives 250 per family.
    pub prompts: usize,
    /// Distinct held-out eval items; 300 gives a ±5.7% 95% CI on a 50% accuracy.
    pub eval_examples: usize,
    /// Most held-out dev items (`dev.jsonl`): eval-split tasks, none of whose prompts is in
    /// `eval.jsonl`, for choosing recipes without looking at the reported eval set. A family
    /// whose held-out space `eval.jsonl` has used up gives fewer (word counts: about 20 of 75
    /// with the defaults, so 246 items in all).
    pub dev_examples: usize,
    /// Share of SFT demonstrations that are flawed (wrong or sloppy): 25% keeps SFT below the
    /// ceiling so preference learning has something to fix, while most demonstrations still
    /// teach the format.
    pub sft_error_rate: f64,
    /// Share of the flawed demonstrations that are wrong (the rest are correct but sloppy).
    /// Half and half gives the reward model both correctness and format signal to learn.
    pub sft_wrong_share: f64,
    /// Families to generate; items cycle through them in this order. All four by default.
    pub families: Vec<Family>,
    /// Most steps in a word problem (1..=4): the seed's 1–4 step problems.
    pub max_steps: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            corpus_docs: 6000,
            sft_examples: 3000,
            prompts: 1000,
            eval_examples: 300,
            dev_examples: 300,
            sft_error_rate: 0.25,
            sft_wrong_share: 0.5,
            families: Family::ALL.to_vec(),
            max_steps: 4,
        }
    }
}

impl WorldConfig {
    /// Rejects values outside their valid ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        let share = |field, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(DataError::Config {
                    field,
                    problem: format!("expected a share in [0, 1], found {v}"),
                })
            }
        };
        share("sft_error_rate", self.sft_error_rate)?;
        share("sft_wrong_share", self.sft_wrong_share)?;
        if self.families.is_empty() {
            return Err(DataError::Config {
                field: "families",
                problem: "expected at least one family, found an empty list".into(),
            });
        }
        for (i, f) in self.families.iter().enumerate() {
            if self.families[..i].contains(f) {
                return Err(DataError::Config {
                    field: "families",
                    problem: format!("'{}' is listed twice", f.name()),
                });
            }
        }
        if !(1..=4).contains(&self.max_steps) {
            return Err(DataError::Config {
                field: "max_steps",
                problem: format!("expected 1..=4, found {}", self.max_steps),
            });
        }
        Ok(())
    }
}
