//! The error type of `rlhf-data`: one enum for reading and writing JSONL files, configuring and
//! writing the task world, and asking the oracle about a prompt.
//!
//! Messages follow `file:line: field 'x': what was expected, what was found`, so a message read
//! without context still tells the user which record to fix. This module holds no logic beyond
//! formatting.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong in `rlhf-data`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },

    /// A line that is not valid JSON (or not UTF-8).
    #[error("{path}:{line}: invalid JSON: {message}", path = path.display())]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A JSON line whose content is not the record the reader expected.
    #[error("{path}:{line}: {problem}", path = path.display())]
    Record {
        path: PathBuf,
        line: usize,
        problem: RecordError,
    },

    #[error("cannot serialize a record for {path}: {source}", path = path.display())]
    Serialize {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// A prompt the oracle cannot parse back into a task-world task.
    #[error(
        "the oracle does not recognise the prompt {prompt:?}: {reason}; it scores only prompts of \
         the task world (arithmetic word problems, list operations, exact-word-count and repeat \
         instructions), passed without a chat template"
    )]
    UnknownPrompt { prompt: String, reason: String },

    /// A labeler was asked to rank something that is not a valid set of responses.
    #[error("cannot rank the responses: {problem}")]
    Rank { problem: String },

    /// An error about one record (1-based) of a batch of records.
    #[error("record {record}: {source}")]
    InRecord {
        record: usize,
        source: Box<DataError>,
    },

    /// A `WorldConfig` or `LabelerConfig` value outside its valid range.
    #[error("config field '{field}': {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },

    /// A bad argument to a reasoning tool (an answer pattern, a demonstration without answer).
    #[error("{0}")]
    Invalid(String),

    /// The world cannot supply as many distinct items as asked for.
    #[error(
        "{file}: cannot draw {wanted} distinct {family} prompts from the {split} split (found {got} \
         after {tries} tries); lower the size or enable more families"
    )]
    Exhausted {
        file: &'static str,
        family: &'static str,
        split: &'static str,
        wanted: usize,
        got: usize,
        tries: usize,
    },
}

/// What is wrong with one record, independent of the file it came from.
///
/// Record parsers return this; the reader adds the file and line. `field` is a path such as
/// `responses[2]` or `messages[0].role`, or `None` when the record as a whole is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub field: Option<String>,
    pub problem: String,
}

impl RecordError {
    /// A problem with one field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            problem: problem.into(),
        }
    }

    /// A problem with the record as a whole.
    pub fn record(problem: impl Into<String>) -> Self {
        Self {
            field: None,
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field '{field}': {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for RecordError {}
