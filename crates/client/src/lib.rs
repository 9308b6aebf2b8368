//! A client for OpenAI-compatible servers (OpenAI, vLLM, TGI, llama.cpp, `rlhf serve`) and the
//! wire types of the chat and completions APIs, shared with `rlhf serve` so that both ends agree.
//!
//! [`Endpoint`] is the one parser of `openai:URL` specs, with the defaults every command shares.
//!
//! Not here: the server (crate `rlhf-serve`), prompt design for judges (their callers).

mod client;
pub mod endpoint;
mod error;
pub mod types;

pub use client::{ChatStream, Client, ClientConfig};
pub use endpoint::{Ask, Endpoint, Llm};
pub use error::{ClientError, Result};
pub use types::{
    ChatChoice, ChatChunk, ChatMessage, ChatRequest, ChatResponse, CompletionChoice,
    CompletionRequest, CompletionResponse, ModelCard, Prompt, StopSeq, Usage,
};
