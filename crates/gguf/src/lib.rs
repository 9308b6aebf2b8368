//! `rlhf-gguf`: reads GGUF files (llama.cpp's model format, v2/v3) and turns llama-architecture
//! models into Hugging Face checkpoint directories in f32 that transformers and `rlhf-model` load.
//!
//! Pipeline: [`GgufFile::open`] (header, metadata, tensor infos) → [`GgufFile::dequantize`]
//! (F32/F16/BF16, legacy Q4/Q5/Q8 and K-quants to f32) → [`import_gguf`] (name mapping, q/k
//! un-permutation, `config.json`, `model.safetensors`, `tokenizer.json`). Pure Rust; it does not
//! depend on libtorch and does not run models. This file only declares and re-exports.

mod dequant;
mod error;
mod import;
mod kquants;
mod llama;
mod metadata;
mod names;
mod reader;
mod tokenizer;
mod types;

pub use error::{GgufError, Result};
pub use import::{ImportSummary, import_gguf};
pub use llama::{LlamaHparams, RopeScaling, hf_config_json, hf_generation_config_json};
pub use metadata::{MetaValue, Metadata};
pub use names::{TensorPlan, hf_tensor_name, plan_tensors, unpermute_rope_rows};
pub use reader::{DEFAULT_ALIGNMENT, GgufFile, TensorInfo};
pub use tokenizer::{TokenizerFiles, build_tokenizer};
pub use types::{DEQUANTIZABLE, GgmlType};
