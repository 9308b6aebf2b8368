//! Errors of the labeling crate. The web layer maps them to statuses: `Invalid` → 400,
//! `NotFound` → 404, `Expired` → 409, `Busy` → 503, the rest → 500 (whose text stays in the log).

use thiserror::Error;

pub type Result<T, E = LabelError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum LabelError {
    /// The URL is given with its password redacted.
    #[error("cannot open the database {0}")]
    Connect(String, #[source] sqlx::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value that does not parse (the database was edited by hand, or is corrupt).
    #[error("corrupt database: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A submission for an assignment older than the expiry.
    #[error("{0}")]
    Expired(String),
    /// Too many concurrent requests for the same places; the client may retry.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Client(#[from] rlhf_client::ClientError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}
