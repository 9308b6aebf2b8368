//! The eval crate's one error type: every lower crate's error converts into it with its cause
//! kept, and `Invalid` says what the caller asked for that cannot be done.

use std::path::{Path, PathBuf};

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What was being done when `source` happened (e.g. which model failed to load).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<EvalError>,
    },
    /// A request that cannot be answered as asked (no prompts, mismatched models, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] rlhf_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] rlhf_data::DataError),
    #[error("the judge: {0}")]
    Client(#[from] rlhf_client::ClientError),
    #[error(transparent)]
    Report(#[from] rlhf_report::ReportError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl EvalError {
    /// This error as the cause of `context`.
    pub fn context(self, context: impl Into<String>) -> Self {
        Self::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
