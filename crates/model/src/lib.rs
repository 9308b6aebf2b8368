//! `rlhf-model`: one decoder-only transformer for the GPT-2 and Llama/Qwen2 families, loaded from
//! and saved to Hugging Face layout, with an LM head and a scalar head, a preallocated KV cache,
//! batched sampling, padding and teacher-forced scoring (log-probs of responses, reward-model
//! scalars). Tokenizers and GGUF import live in their own crates (no libtorch there).
//! This file only declares and re-exports.

pub mod alloc;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod dist;
pub mod error;
pub mod footprint;
pub mod fused;
pub mod gpt;
pub mod kv_cache;
pub mod layers;
pub mod lora;
pub mod precision;
pub mod pretrained;
pub mod sample;
pub mod score;
pub mod skinny;

pub use batch::{ResponseBatch, Side, pad};
pub use checkpoint::{load_weights, save_weights};
pub use config::{Family, ModelConfig};
pub use device::DeviceArg;
pub use error::{ModelError, Result};
pub use gpt::{Adapter, Batch, Gpt, Head};
pub use kv_cache::KvCache;
pub use lora::{LoraConfig, is_adapter_dir};
pub use precision::{Autocast, Compute, Precision};
pub use pretrained::{Pretrained, PromptFormat, TextGenerateConfig, TextGeneration};
pub use sample::{GenerateConfig, Generation, Sampling};
pub use score::{
    SequenceLogprob, last_token_scalars, response_logprobs, sequence_logprobs, token_logprobs,
};
