//! Errors of the serving crate (model loading, the engine, I/O). Errors a client caused are
//! `api::ApiError`, which carry an HTTP status and OpenAI's error body.

use thiserror::Error;

pub type Result<T, E = ServeError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] rlhf_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] rlhf_tokenizer::TokenizerError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("engine: {0}")]
    Engine(String),
    /// A LoRA adapter could not be loaded (bad files, a name in use).
    #[error("{0}")]
    Adapter(String),
    /// No adapter of this name is loaded.
    #[error("the LoRA adapter `{0}` is not loaded")]
    AdapterNotFound(String),
    /// Too many requests are waiting.
    #[error("the server is overloaded: too many requests are waiting")]
    Overloaded,
}
