//! `rlhf-tokenizer`: text ⇄ token ids for the RLHF pipeline, pure Rust (no libtorch).
//!
//! - [`Tokenizer`] loads a checkpoint directory's `tokenizer.json` + `tokenizer_config.json`
//!   and encodes/decodes exactly like Python `tokenizers` (it is the same Rust core).
//! - [`ChatTemplate`] renders conversations byte-identically to transformers'
//!   `apply_chat_template(..., tokenize=False)`; [`CHATML_TEMPLATE`] is the default for models
//!   without one.
//! - [`train_bpe`] trains the byte-level BPE of the embedded tiny model.
//!
//! This crate does not batch, pad or build attention masks for the model; that belongs to the
//! data stage. This file only declares modules and re-exports.

mod bound;
mod chat;
mod config;
mod error;
mod pyjinja;
mod tokenizer;
mod train;

pub use bound::{TokenBound, token_bound};
pub use chat::{CHATML_TEMPLATE, ChatOptions, ChatTemplate, Message};
pub use config::{CHAT_TEMPLATE_FILE, CONFIG_FILE, SpecialTokens, TOKENIZER_FILE};
pub use error::{Result, TokenizerError};
pub use tokenizer::Tokenizer;
pub use train::{BpeConfig, ENDOFTEXT, IM_END, IM_START, PAD, train_bpe, train_bpe_files};
