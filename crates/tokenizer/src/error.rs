//! The one error type of `rlhf-tokenizer`.
//!
//! Every variant names the file or the operation that failed and what was wrong, so a message
//! read in a log is enough to fix the input. This is not where errors are printed: the binary does
//! that with `anyhow`.

use std::path::PathBuf;

/// Everything that can go wrong loading, running, saving or training a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file the tokenizer directory must contain is not there.
    #[error("missing {path}: {hint}")]
    MissingFile {
        path: PathBuf,
        /// How to get the file.
        hint: String,
    },

    /// Reading or writing a file failed for a reason other than absence.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file is not JSON at all (syntax error, truncated file).
    #[error("invalid JSON in {path} at line {line}, column {column}: {message}")]
    InvalidJson {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A file is JSON but its content is not what it should be.
    #[error("invalid {path} (line {line}, column {column}): {message}")]
    InvalidContent {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A field of `tokenizer_config.json` has the wrong type or an impossible value.
    #[error("invalid `{field}` in {path}: {message}")]
    InvalidConfig {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// `tokenizer_config.json` names a special token that the vocabulary does not contain.
    #[error(
        "`{field}` = {token:?} in {path} is not a token of the vocabulary \
         (neither in the model vocab nor in added_tokens of tokenizer.json)"
    )]
    UnknownSpecialToken {
        path: PathBuf,
        field: String,
        token: String,
    },

    /// The HF `tokenizers` library failed while encoding, decoding, training or serialising.
    #[error("tokenizer {op} failed: {message}")]
    Tokenizers { op: &'static str, message: String },

    /// The tokenizer has no chat template, or none by the requested name.
    #[error("{0}")]
    NoChatTemplate(String),

    /// A chat template does not parse or fails while rendering.
    #[error("chat template {name:?}: {message}")]
    Template { name: String, message: String },

    /// The template called `raise_exception(message)`: it rejects these messages on purpose.
    #[error("chat template {name:?} raised an exception: {message}")]
    TemplateException { name: String, message: String },

    /// The arguments of a call are inconsistent (empty conversation, reserved variable name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Training could not produce the configured vocabulary.
    #[error("BPE training: {0}")]
    Training(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

impl TokenizerError {
    /// Wraps an error of the HF `tokenizers` crate, whose error type is a boxed trait object.
    pub(crate) fn tokenizers(op: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Tokenizers {
            op,
            message: err.to_string(),
        }
    }
}
