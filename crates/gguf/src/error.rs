//! The error type of `rlhf-gguf`: one enum for reading, dequantizing and converting GGUF files.
//!
//! Every variant carries the file it concerns and, where there is one, the metadata key or tensor
//! name, and says what was expected, so a message read without context still tells the user what to
//! fix. This module holds no logic beyond formatting.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// Everything that can go wrong between a `.gguf` file and a Hugging Face checkpoint directory.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },

    #[error(
        "{path}: file is truncated: reading {what} needs bytes {start}..{end} but the file has \
         {file_len} bytes (incomplete download?)",
        path = path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error(
        "{path}: not a GGUF file: expected magic bytes \"GGUF\", found {found:?}",
        path = path.display()
    )]
    BadMagic { path: PathBuf, found: [u8; 4] },

    #[error(
        "{path}: unsupported GGUF version {version}; rlhf reads little-endian GGUF v2 and v3{hint}",
        path = path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        hint: &'static str,
    },

    #[error("{path}: metadata {what}: {reason}", path = path.display())]
    BadMetadata {
        path: PathBuf,
        what: String,
        reason: String,
    },

    #[error(
        "{path}: metadata key '{key}' is missing; expected {expected}",
        path = path.display()
    )]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },

    #[error(
        "{path}: metadata key '{key}' holds {found}; expected {expected}",
        path = path.display()
    )]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{path}: tensor '{tensor}': {reason}", path = path.display())]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    #[error(
        "{path}: tensor '{tensor}' has ggml type {type_name} ({id}), which rlhf cannot \
         dequantize; supported: {supported}",
        path = path.display()
    )]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        type_name: String,
        id: u32,
        supported: String,
    },

    #[error("{path}: no tensor named '{tensor}' in the file", path = path.display())]
    TensorNotFound { path: PathBuf, tensor: String },

    #[error("{path}: {what} is not supported: {reason}", path = path.display())]
    Unsupported {
        path: PathBuf,
        what: String,
        reason: String,
    },

    #[error("{path}: cannot write JSON: {source}", path = path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("{path}: cannot write safetensors: {source}", path = path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
}
