//! The experiments' error type: every stage's error, plus files and invalid settings.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] rlhf_tokenizer::TokenizerError),
    #[error(transparent)]
    Train(#[from] rlhf_train::TrainError),
    #[error(transparent)]
    Data(#[from] rlhf_data::DataError),
    #[error(transparent)]
    Report(#[from] rlhf_report::ReportError),
    #[error(transparent)]
    Browse(#[from] rlhf_browse::BrowseError),
    #[error(transparent)]
    Eval(#[from] rlhf_eval::EvalError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl ExperimentError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;
