//! Errors of the browsing environment.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("{path}: {problem}")]
    BadIndex { path: PathBuf, problem: String },
    #[error("{0}")]
    Invalid(String),
    /// The policy's model failed (tokenizing an observation, generating a command).
    #[error("the policy: {0}")]
    Model(#[from] rlhf_model::ModelError),
}

impl BrowseError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = BrowseError> = std::result::Result<T, E>;
