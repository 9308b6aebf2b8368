//! The model's hyper-parameters, read from (and written back to) a Hugging Face `config.json`.
//!
//! One struct covers both families this crate implements; the differences between them are
//! explicit fields (`family`, `attention_bias`, `tie_word_embeddings`), not scattered `if`s. Keys we
//! do not use are kept in `extra` so that a checkpoint we load and save keeps its config intact.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{ModelError, Result};

/// Which block layout the checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// GPT-2: learned positions, LayerNorm, GELU (tanh), Conv1D-layout (in, out) weights.
    Gpt2,
    /// Llama / SmolLM: RoPE, RMSNorm, SwiGLU, grouped-query attention.
    Llama,
    /// Qwen2: as Llama, plus biases on the q, k and v projections.
    Qwen2,
}

impl Family {
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    /// Key/value heads (grouped-query attention); equals `num_heads` for GPT-2.
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub intermediate_size: i64,
    pub max_positions: i64,
    pub norm_eps: f64,
    /// RoPE base; unused by GPT-2.
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k, v projections (always for Qwen2 and GPT-2, optional for Llama).
    pub attention_bias: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    pub pad_token_id: Option<i64>,
    /// Every key of the original file, so that saving preserves what we do not interpret.
    pub extra: Map<String, Value>,
}

/// The sizes a config declares, each with a ceiling no released checkpoint comes near. The
/// ceilings stop a forged or corrupt file before any size is multiplied or allocated (their
/// products stay far inside `i64`); whether a plausible model fits is the memory check's call
/// (`crate::footprint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Vocab,
    Hidden,
    Layers,
    Heads,
    KvHeads,
    HeadDim,
    Intermediate,
    Positions,
}

impl Size {
    fn max(self) -> i64 {
        match self {
            Size::Vocab => 1 << 24,
            Size::Hidden => 1 << 17,
            Size::Layers => 1 << 12,
            Size::Heads | Size::KvHeads => 1 << 12,
            Size::HeadDim => 1 << 12,
            Size::Intermediate => 1 << 20,
            Size::Positions => 1 << 24,
        }
    }

    /// What the largest real models have, quoted in the error.
    fn why(self) -> &'static str {
        match self {
            Size::Vocab => "the largest vocabularies have ~256k tokens",
            Size::Hidden => "Llama 3.1 405B has 16384 channels",
            Size::Layers => "Llama 3.1 405B has 126 layers",
            Size::Heads | Size::KvHeads => "Llama 3.1 405B has 128 heads",
            Size::HeadDim => "head sizes are 64 to 256",
            Size::Intermediate => "Llama 3.1 405B's MLP is 53248 wide",
            Size::Positions => "the longest contexts are 1M to 10M positions",
        }
    }
}

/// The most bytes a JSON side file of a checkpoint (`config.json`, the shard index,
/// `adapter_config.json`) may have. Real ones are a few KB (the index of a checkpoint with
/// thousands of tensors, a few hundred KB); a file far larger is not one of them, and reading
/// it whole would only cost memory.
const MAX_JSON_FILE_BYTES: u64 = 16 << 20;

/// Reads and parses a JSON side file, refusing one over [`MAX_JSON_FILE_BYTES`] before reading
/// it. serde_json's recursion limit (128) bounds nesting.
pub(crate) fn read_json_file(path: &Path) -> Result<Value> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_JSON_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ModelError::io(path, e))?;
    if text.len() as u64 > MAX_JSON_FILE_BYTES {
        return Err(ModelError::config(
            path,
            format!(
                "is larger than {} MiB; a model's JSON files are a few KB (is this the right \
                 file?)",
                MAX_JSON_FILE_BYTES >> 20
            ),
        ));
    }
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads one key with a type check; `None` when absent or JSON null.
fn opt<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<T>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            ModelError::config(
                path,
                format!("field '{key}' has the wrong type ({e}): got {v}"),
            )
        }),
    }
}

fn req<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<T> {
    opt(obj, key, path)?
        .ok_or_else(|| ModelError::config(path, format!("missing required field '{key}'")))
}

/// `eos_token_id` may be a list in newer checkpoints; the first entry is the one we stop on.
fn token_id(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<i64>> {
    match obj.get(key) {
        Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_i64)),
        _ => opt(obj, key, path),
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file path.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json_file(path)?, path)
    }

    /// Interprets a parsed `config.json`; `path` is only used in error messages.
    pub fn from_json(value: &Value, path: &Path) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| ModelError::config(path, "expected a JSON object at the top level"))?;
        let model_type: String = req(obj, "model_type", path)?;
        let cfg = match model_type.as_str() {
            "gpt2" => Self::gpt2_from(obj, path)?,
            "llama" => Self::llama_from(obj, path, Family::Llama)?,
            "qwen2" => Self::llama_from(obj, path, Family::Qwen2)?,
            other => {
                return Err(ModelError::config(
                    path,
                    format!("unknown model_type '{other}'; supported: gpt2, llama, qwen2"),
                ));
            }
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn gpt2_from(obj: &Map<String, Value>, path: &Path) -> Result<Self> {
        let hidden: i64 = req(obj, "n_embd", path)?;
        let heads: i64 = req(obj, "n_head", path)?;
        let act: Option<String> = opt(obj, "activation_function", path)?;
        if let Some(act) = act.filter(|a| a != "gelu_new" && a != "gelu_pytorch_tanh") {
            return Err(ModelError::config(
                path,
                format!("activation_function '{act}' is not supported (only gelu_new)"),
            ));
        }
        if opt::<bool>(obj, "scale_attn_by_inverse_layer_idx", path)? == Some(true)
            || opt::<bool>(obj, "reorder_and_upcast_attn", path)? == Some(true)
        {
            return Err(ModelError::config(
                path,
                "scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported",
            ));
        }
        Ok(Self {
            family: Family::Gpt2,
            vocab_size: req(obj, "vocab_size", path)?,
            hidden_size: hidden,
            num_layers: req(obj, "n_layer", path)?,
            num_heads: heads,
            num_kv_heads: heads,
            head_dim: if heads > 0 { hidden / heads } else { 0 },
            intermediate_size: opt(obj, "n_inner", path)?.unwrap_or(4 * hidden),
            max_positions: req(obj, "n_positions", path)?,
            norm_eps: opt(obj, "layer_norm_epsilon", path)?.unwrap_or(1e-5),
            rope_theta: 0.0,
            tie_word_embeddings: opt(obj, "tie_word_embeddings", path)?.unwrap_or(true),
            attention_bias: true,
            bos_token_id: token_id(obj, "bos_token_id", path)?,
            eos_token_id: token_id(obj, "eos_token_id", path)?,
            pad_token_id: token_id(obj, "pad_token_id", path)?,
            extra: obj.clone(),
        })
    }

    fn llama_from(obj: &Map<String, Value>, path: &Path, family: Family) -> Result<Self> {
        let hidden: i64 = req(obj, "hidden_size", path)?;
        let heads: i64 = req(obj, "num_attention_heads", path)?;
        Self::check_rope(obj, path)?;
        let act: Option<String> = opt(obj, "hidden_act", path)?;
        if let Some(act) = act.filter(|a| a != "silu") {
            return Err(ModelError::config(
                path,
                format!("hidden_act '{act}' is not supported"),
            ));
        }
        if opt::<bool>(obj, "mlp_bias", path)? == Some(true) {
            return Err(ModelError::config(path, "mlp_bias = true is not supported"));
        }
        // transformers 5 moved rope_theta into `rope_parameters`; accept both places.
        let rope_theta = match opt::<f64>(obj, "rope_theta", path)? {
            Some(t) => t,
            None => obj
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
        };
        let attention_bias = match family {
            Family::Qwen2 => true,
            _ => opt(obj, "attention_bias", path)?.unwrap_or(false),
        };
        Ok(Self {
            family,
            vocab_size: req(obj, "vocab_size", path)?,
            hidden_size: hidden,
            num_layers: req(obj, "num_hidden_layers", path)?,
            num_heads: heads,
            num_kv_heads: opt(obj, "num_key_value_heads", path)?.unwrap_or(heads),
            head_dim: opt(obj, "head_dim", path)?.unwrap_or(if heads > 0 {
                hidden / heads
            } else {
                0
            }),
            intermediate_size: req(obj, "intermediate_size", path)?,
            max_positions: opt(obj, "max_position_embeddings", path)?.unwrap_or(2048),
            norm_eps: opt(obj, "rms_norm_eps", path)?.unwrap_or(1e-6),
            rope_theta,
            tie_word_embeddings: opt(obj, "tie_word_embeddings", path)?.unwrap_or(false),
            attention_bias,
            bos_token_id: token_id(obj, "bos_token_id", path)?,
            eos_token_id: token_id(obj, "eos_token_id", path)?,
            pad_token_id: token_id(obj, "pad_token_id", path)?,
            extra: obj.clone(),
        })
    }

    /// Only the plain RoPE is implemented; scaled variants would silently give wrong logits.
    fn check_rope(obj: &Map<String, Value>, path: &Path) -> Result<()> {
        for key in ["rope_scaling", "rope_parameters"] {
            let Some(Value::Object(r)) = obj.get(key) else {
                continue;
            };
            let kind = r
                .get("rope_type")
                .or_else(|| r.get("type"))
                .and_then(Value::as_str);
            if let Some(kind) = kind.filter(|k| *k != "default") {
                return Err(ModelError::config(
                    path,
                    format!("{key}.rope_type '{kind}' is not supported (only the default RoPE)"),
                ));
            }
        }
        Ok(())
    }

    /// The `config.json` key each size is read from, for error messages.
    fn key(&self, size: Size) -> &'static str {
        let gpt2 = self.family == Family::Gpt2;
        match size {
            Size::Vocab => "vocab_size",
            Size::Hidden if gpt2 => "n_embd",
            Size::Hidden => "hidden_size",
            Size::Layers if gpt2 => "n_layer",
            Size::Layers => "num_hidden_layers",
            Size::Heads | Size::KvHeads if gpt2 => "n_head",
            Size::Heads => "num_attention_heads",
            Size::KvHeads => "num_key_value_heads",
            Size::HeadDim if gpt2 => "n_embd / n_head",
            Size::HeadDim => "head_dim",
            Size::Intermediate if gpt2 => "n_inner",
            Size::Intermediate => "intermediate_size",
            Size::Positions if gpt2 => "n_positions",
            Size::Positions => "max_position_embeddings",
        }
    }

    /// Every size positive and under its ceiling, heads that divide, finite norm and RoPE
    /// constants: checked on the config alone, before anything is sized from it.
    fn validate(&self, path: &Path) -> Result<()> {
        let sizes = [
            (Size::Vocab, self.vocab_size),
            (Size::Hidden, self.hidden_size),
            (Size::Layers, self.num_layers),
            (Size::Heads, self.num_heads),
            (Size::KvHeads, self.num_kv_heads),
            (Size::HeadDim, self.head_dim),
            (Size::Intermediate, self.intermediate_size),
            (Size::Positions, self.max_positions),
        ];
        for (size, v) in sizes {
            let (key, max) = (self.key(size), size.max());
            if v <= 0 {
                return Err(ModelError::config(
                    path,
                    format!("{key} must be positive, got {v}"),
                ));
            }
            if v > max {
                return Err(ModelError::config(
                    path,
                    format!(
                        "{key} = {v} is more than the {max} this loader accepts ({}); the file \
                         is corrupt or not this model's config",
                        size.why()
                    ),
                ));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(ModelError::config(
                path,
                format!(
                    "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if self.family == Family::Gpt2 && self.hidden_size % self.num_heads != 0 {
            return Err(ModelError::config(
                path,
                format!(
                    "n_embd ({}) must be divisible by n_head ({})",
                    self.hidden_size, self.num_heads
                ),
            ));
        }
        if self.family != Family::Gpt2 && self.head_dim % 2 != 0 {
            return Err(ModelError::config(path, "head_dim must be even for RoPE"));
        }
        let eps_key = match self.family {
            Family::Gpt2 => "layer_norm_epsilon",
            _ => "rms_norm_eps",
        };
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0 && self.norm_eps < 1.0) {
            return Err(ModelError::config(
                path,
                format!("{eps_key} must be in [0, 1), got {}", self.norm_eps),
            ));
        }
        if self.family != Family::Gpt2 && !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ModelError::config(
                path,
                format!(
                    "rope_theta must be a positive number, got {}",
                    self.rope_theta
                ),
            ));
        }
        Ok(())
    }

    /// The `config.json` transformers would write for this model (unknown keys preserved).
    pub fn to_json(&self) -> Value {
        let mut obj = self.extra.clone();
        let ids = json!({
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        });
        let ours = match self.family {
            Family::Gpt2 => json!({
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_layers,
                "n_head": self.num_heads,
                "n_inner": self.intermediate_size,
                "n_positions": self.max_positions,
                "n_ctx": self.max_positions,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": "gelu_new",
                "tie_word_embeddings": self.tie_word_embeddings,
            }),
            Family::Llama | Family::Qwen2 => json!({
                "model_type": self.family.model_type(),
                "architectures": [if self.family == Family::Llama {
                    "LlamaForCausalLM"
                } else {
                    "Qwen2ForCausalLM"
                }],
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "num_key_value_heads": self.num_kv_heads,
                "head_dim": self.head_dim,
                "intermediate_size": self.intermediate_size,
                "max_position_embeddings": self.max_positions,
                "rms_norm_eps": self.norm_eps,
                "rope_theta": self.rope_theta,
                "hidden_act": "silu",
                "tie_word_embeddings": self.tie_word_embeddings,
                "attention_bias": self.attention_bias,
            }),
        };
        for (k, v) in ours
            .as_object()
            .into_iter()
            .flatten()
            .chain(ids.as_object().into_iter().flatten())
        {
            if !obj.contains_key(k) || k != "architectures" {
                obj.insert(k.clone(), v.clone());
            }
        }
        Value::Object(obj)
    }

    /// Writes `config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        std::fs::write(&path, text + "\n").map_err(|e| ModelError::io(path, e))
    }

    /// Parameters of the decoder (embeddings counted once when tied). Cannot overflow for a
    /// validated config: the size ceilings keep every product under 2^56.
    pub fn num_params(&self) -> i64 {
        let (c, v, i) = (self.hidden_size, self.vocab_size, self.intermediate_size);
        let (q, kv) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let head = if self.tie_word_embeddings { 0 } else { v * c };
        let per_layer = match self.family {
            Family::Gpt2 => 4 * c + c * 3 * c + 3 * c + c * c + c + 2 * c * i + i + c,
            _ => {
                let bias = if self.attention_bias { q + 2 * kv } else { 0 };
                2 * c + c * (q + 2 * kv) + bias + q * c + 3 * c * i
            }
        };
        let pos = if self.family == Family::Gpt2 {
            self.max_positions * c
        } else {
            0
        };
        let final_norm = if self.family == Family::Gpt2 {
            2 * c
        } else {
            c
        };
        v * c + pos + self.num_layers * per_layer + final_norm + head
    }
}
