//! `rlhf-serve`: an OpenAI-compatible HTTP API over a checkpoint — `GET /v1/models`,
//! `POST /v1/completions`, `POST /v1/chat/completions` (chat template), streaming as server-sent
//! events — backed by an engine thread that batches the requests waiting for the model.
//! This file only declares and re-exports.

pub mod api;
pub mod engine;
pub mod error;
mod reply;
mod sampler;
pub mod text;

pub use api::{ServeConfig, router};
pub use engine::{Decoder, Engine, EngineConfig, Event, Health, Job, Params, TokenInfo};
pub use error::{Result, ServeError};
pub use text::StopText;
