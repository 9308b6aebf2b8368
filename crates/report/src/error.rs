//! The error type of `rlhf-report`: writing a plot or a file fails with the path in the message.
//! No logic beyond formatting.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// Everything that can go wrong in `rlhf-report`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },

    /// The plotting library failed while drawing or encoding.
    #[error("{path}: cannot draw the plot: {message}", path = path.display())]
    Plot { path: PathBuf, message: String },

    /// Data a plot cannot show (e.g. a non-positive x on a log axis).
    #[error("{path}: {problem}", path = path.display())]
    Data { path: PathBuf, problem: String },
}
