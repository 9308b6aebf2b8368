//! `Task`: one task-world item of any family, with its prompt, gold answer, clean demonstration,
//! metadata and split, generated from a seed or parsed back from its prompt text.
//!
//! The oracle recognises prompts by parsing them with the same templates that rendered them
//! (not by looking them up), so it scores any prompt of the grammar, from any seed or split.
//! Scoring itself is `oracle.rs`.

use rand::RngCore;
use serde_json::{Map, Value, json};

use super::arithmetic::{self, WordProblem};
use super::config::{Family, Split, split_of};
use super::lists::{self, ListTask};
use super::template::normalize_space;
use super::vocab::{entity_split, name_split, object_split, word_split};
use super::words::{self, RepeatTask, WordCountTask};
use crate::error::{DataError, Result};
use crate::rng::range;

/// One task of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Arithmetic(WordProblem),
    Lists(ListTask),
    WordCount(WordCountTask),
    Repeat(RepeatTask),
}

impl Task {
    /// A task of `family` whose entities and operands lie in `split`; word problems get 1 to
    /// `max_steps` steps, uniformly.
    pub fn generate<R: RngCore + ?Sized>(
        rng: &mut R,
        family: Family,
        split: Split,
        max_steps: usize,
    ) -> Task {
        match family {
            Family::Arithmetic => {
                let steps = range(rng, 1, max_steps.max(1) as i64) as usize;
                Task::Arithmetic(arithmetic::generate(rng, split, steps))
            }
            Family::Lists => Task::Lists(lists::generate(rng, split)),
            Family::WordCount => Task::WordCount(words::generate_word_count(rng, split)),
            Family::Repeat => Task::Repeat(words::generate_repeat(rng, split)),
        }
    }

    /// Parses a prompt of the task world (whitespace is normalised first). Fails with
    /// [`DataError::UnknownPrompt`] for anything else, including a prompt inside a chat template.
    pub fn parse(prompt: &str) -> Result<Task> {
        let text = normalize_space(prompt);
        if let Ok(t) = lists::parse(&text) {
            return Ok(Task::Lists(t));
        }
        if let Some(t) = words::parse_word_count(&text) {
            return Ok(Task::WordCount(t));
        }
        if let Some(t) = words::parse_repeat(&text) {
            return Ok(Task::Repeat(t));
        }
        arithmetic::parse(&text)
            .map(Task::Arithmetic)
            .map_err(|reason| {
                let mut shown: String = prompt.chars().take(80).collect();
                if prompt.chars().count() > 80 {
                    shown.push_str("...");
                }
                DataError::UnknownPrompt {
                    prompt: shown,
                    reason: format!(
                        "not a list, word or repeat instruction, and as a word problem: {reason}"
                    ),
                }
            })
    }

    pub fn family(&self) -> Family {
        match self {
            Task::Arithmetic(_) => Family::Arithmetic,
            Task::Lists(_) => Family::Lists,
            Task::WordCount(_) => Family::WordCount,
            Task::Repeat(_) => Family::Repeat,
        }
    }

    pub fn prompt(&self) -> String {
        match self {
            Task::Arithmetic(t) => t.prompt(),
            Task::Lists(t) => t.prompt(),
            Task::WordCount(t) => t.prompt(),
            Task::Repeat(t) => t.prompt(),
        }
    }

    /// The canonical gold answer: "7", "2, 5, 9", "red red red", or for word counts one example
    /// sentence (any sentence of the right length that names the entity is correct).
    pub fn answer(&self) -> String {
        match self {
            Task::Arithmetic(t) => t.answer().to_string(),
            Task::Lists(t) => t.answer_text(),
            Task::WordCount(t) => t.solution(),
            Task::Repeat(t) => t.solution(),
        }
    }

    /// The clean demonstration (chain of thought ending "The answer is N." for word problems).
    pub fn solution(&self) -> String {
        match self {
            Task::Arithmetic(t) => t.solution(),
            Task::Lists(t) => t.solution(),
            Task::WordCount(t) => t.solution(),
            Task::Repeat(t) => t.solution(),
        }
    }

    /// The split of the task's entities and operands, or `None` if they disagree (possible
    /// only for hand-written prompts: generated tasks lie wholly in one split).
    pub fn split(&self) -> Option<Split> {
        let keys: Vec<Split> = match self {
            Task::Arithmetic(t) => {
                let (name, object) = t.entities();
                vec![
                    name_split(name),
                    object_split(object),
                    split_of(&t.operand_key()),
                ]
            }
            Task::Lists(t) => vec![split_of(&t.operand_key())],
            Task::WordCount(t) => vec![entity_split(t.entity().noun)],
            Task::Repeat(t) => vec![word_split(t.word())],
        };
        let first = keys[0];
        keys.iter().all(|&s| s == first).then_some(first)
    }

    /// Task metadata for `prompts.jsonl` and `eval.jsonl`: the family and what a checker needs.
    pub fn fields(&self) -> Map<String, Value> {
        let value = match self {
            Task::Arithmetic(t) => {
                let (name, object) = t.entities();
                json!({"family": "arithmetic", "steps": t.steps().len(), "name": name,
                       "object": object})
            }
            Task::Lists(t) => json!({"family": "lists", "op": t.op().name(), "items": t.items()}),
            Task::WordCount(t) => {
                json!({"family": "word_count", "entity": t.entity().noun, "words": t.words()})
            }
            Task::Repeat(t) => {
                json!({"family": "repeat", "word": t.word(), "times": t.times()})
            }
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}
