//! Errors of the client: what was asked (method and URL), what came back, and whether retrying
//! could help.

use thiserror::Error;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The server answered with an error status; `message` is the OpenAI error body's message
    /// when there is one, else an excerpt of the body.
    #[error("{op}: HTTP {status}: {message}")]
    Status {
        op: String,
        status: u16,
        message: String,
        /// The OpenAI error `type` / `code`, when the body had them.
        kind: Option<String>,
        code: Option<String>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("{op}: {source}")]
    Transport {
        op: String,
        #[source]
        source: ureq::Error,
    },
    /// An answer that is not what the API promises.
    #[error("{op}: unexpected response: {message}")]
    Decode { op: String, message: String },
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// Whether a retry may succeed: transport failures, 408, 409, 429 and 5xx (what OpenAI's own
    /// clients retry).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ClientError::Transport { .. } => true,
            ClientError::Decode { .. } | ClientError::Invalid(_) => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
