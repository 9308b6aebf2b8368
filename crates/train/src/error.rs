//! The train crate's one error type. Every message says what was being done, on which file or key,
//! and, where there is one, how to fix it; nothing here panics on user input.

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, TrainError>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file-system operation failed; `op` says which ("create the run directory", ...).
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed TOML, an unknown key, a wrong type or an invalid value; the message names the
    /// file (or `--set`) and the key path.
    #[error("{0}")]
    Config(String),
    /// A checkpoint that cannot be resumed from: wrong format, other stage, other model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// The loss or the gradient norm stopped being finite; nothing was updated or saved.
    #[error(
        "step {step}: {what} is {value} (not finite); training stopped before the update. {}",
        match last_checkpoint {
            Some(p) => format!(
                "The last good checkpoint, {}, is untouched: resume from it with a lower lr or \
                 after checking the data.",
                p.display()
            ),
            None => "No checkpoint had been written yet.".to_string(),
        }
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
        last_checkpoint: Option<PathBuf>,
    },
    /// Misuse of the API that a caller can fix (mixed dtypes, a parameter replaced mid-run, ...).
    #[error("{0}")]
    Invalid(String),
    /// A record of a data file that cannot be used: `file:line: field 'x'`, with the cause.
    #[error("{path}:{line}: field '{field}'")]
    Record {
        path: PathBuf,
        line: usize,
        field: String,
        #[source]
        source: Box<TrainError>,
    },
    /// What was being done when `source` happened.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<TrainError>,
    },
    /// An error raised by a `TrainStep` or `DataSource` implementation.
    #[error("{0}")]
    Step(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] rlhf_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] rlhf_data::DataError),
    #[error(transparent)]
    Eval(#[from] rlhf_eval::EvalError),
    #[error(transparent)]
    Client(#[from] rlhf_client::ClientError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn checkpoint(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// This error as the cause of `context`.
    pub fn context(self, context: impl Into<String>) -> Self {
        Self::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// This error as the cause of a bad record at `path:line`, field `field`.
    pub fn at(self, path: impl AsRef<Path>, line: usize, field: impl Into<String>) -> Self {
        Self::Record {
            path: path.as_ref().to_path_buf(),
            line,
            field: field.into(),
            source: Box::new(self),
        }
    }

    /// Wraps any error from a step or data implementation.
    pub fn step(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Step(err.into())
    }
}
