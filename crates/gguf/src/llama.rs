//! Llama hyper-parameters read from GGUF metadata, and the `config.json` / `generation_config.json`
//! that transformers' `LlamaConfig` / `GenerationConfig` would write for them.
//!
//! Metadata keys follow llama.cpp's `LLM_KV_*` names with the `llama.` architecture prefix. The
//! config is written with transformers 4.x key names (`rope_theta`, `rope_scaling`,
//! `torch_dtype`), which is what checkpoints on the Hub carry and what every transformers version
//! reads, plus the transformers 5 spellings (`rope_parameters`, `dtype`) so that a v5 loader does
//! not have to guess. Tensor names and weights are handled in `names.rs`, not here.

use serde::Serialize;

use crate::error::{GgufError, Result};
use crate::reader::GgufFile;

/// Architectures this crate converts (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// Rope scaling as llama.cpp records it (`llama.rope.scaling.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeScaling {
    /// Only `"linear"` is converted; see `LlamaHparams::from_gguf`.
    pub kind: String,
    pub factor: f32,
}

/// The shape-defining numbers of a llama model, as stored in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaHparams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub bos_token_id: Option<usize>,
    pub eos_token_id: Option<usize>,
    pub pad_token_id: Option<usize>,
    /// Extra end-of-turn ids (`eot`, `eom`) that generation should also stop on.
    pub extra_eos_token_ids: Vec<usize>,
    /// True when the file has no `output.weight`: the LM head reuses the embedding.
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl LlamaHparams {
    /// Reads and cross-checks the hyper-parameters of a `llama` GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let md = gguf.metadata();
        check_architecture(gguf)?;
        let n_embd = md.usize("llama.embedding_length", "the hidden size (an integer)")?;
        let n_head = md.usize(
            "llama.attention.head_count",
            "the number of attention heads",
        )?;
        let n_head_kv = md
            .opt_usize(
                "llama.attention.head_count_kv",
                "the number of key/value heads",
            )?
            .unwrap_or(n_head);
        let head_dim = head_dim(gguf, n_embd, n_head)?;
        let eos_token_id = md.opt_usize("tokenizer.ggml.eos_token_id", "a token id")?;
        let hp = LlamaHparams {
            n_layer: md.usize("llama.block_count", "the number of transformer layers")?,
            n_embd,
            n_ff: md.usize("llama.feed_forward_length", "the MLP intermediate size")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ctx: md.usize("llama.context_length", "the training context length")?,
            vocab_size: vocab_size(gguf)?,
            // Required, as in llama.cpp: guessing it would silently change every layer's output.
            rms_norm_eps: md
                .opt_f32(
                    "llama.attention.layer_norm_rms_epsilon",
                    "the RMSNorm epsilon",
                )?
                .ok_or_else(|| GgufError::MissingKey {
                    path: gguf.path().to_path_buf(),
                    key: "llama.attention.layer_norm_rms_epsilon".into(),
                    expected: "the RMSNorm epsilon (a float)",
                })?,
            rope_theta: md
                .opt_f32("llama.rope.freq_base", "the RoPE base frequency")?
                // llama.cpp's default when the key is absent (original LLaMA).
                .unwrap_or(10_000.0),
            rope_scaling: rope_scaling(gguf)?,
            bos_token_id: md.opt_usize("tokenizer.ggml.bos_token_id", "a token id")?,
            eos_token_id,
            pad_token_id: md.opt_usize("tokenizer.ggml.padding_token_id", "a token id")?,
            extra_eos_token_ids: extra_eos_ids(gguf, eos_token_id)?,
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
            attention_bias: gguf.tensor_info("blk.0.attn_q.bias").is_some(),
            mlp_bias: gguf.tensor_info("blk.0.ffn_up.bias").is_some(),
        };
        check_divisibility(gguf, &hp)?;
        check_scalars(gguf, &hp)?;
        Ok(hp)
    }
}

/// Only dense llama files map onto `LlamaForCausalLM`.
fn check_architecture(gguf: &GgufFile) -> Result<()> {
    let md = gguf.metadata();
    let arch = md.str(
        "general.architecture",
        "the model architecture, e.g. \"llama\"",
    )?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        return Err(unsupported(
            gguf,
            format!("architecture '{arch}'"),
            format!("rlhf imports only {SUPPORTED_ARCHITECTURES:?} models"),
        ));
    }
    if md
        .opt_usize("llama.expert_count", "the number of experts")?
        .unwrap_or(0)
        > 0
    {
        let reason = "mixture-of-experts llama files have no LlamaForCausalLM counterpart";
        return Err(unsupported(
            gguf,
            "llama.expert_count > 0".into(),
            reason.into(),
        ));
    }
    Ok(())
}

/// End-of-turn / end-of-message ids (Llama 3's `<|eot_id|>`, `<|eom_id|>`) other than `eos`, which
/// generation must also stop on.
fn extra_eos_ids(gguf: &GgufFile, eos: Option<usize>) -> Result<Vec<usize>> {
    let mut ids = Vec::new();
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(id) = gguf.metadata().opt_usize(key, "a token id")? {
            if Some(id) != eos && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

fn unsupported(gguf: &GgufFile, what: String, reason: String) -> GgufError {
    GgufError::Unsupported {
        path: gguf.path().to_path_buf(),
        what,
        reason,
    }
}

/// Head size: `attention.key_length` when present, else hidden / heads. RoPE must cover the whole
/// head, because transformers' Llama has no partial-rotary option.
fn head_dim(gguf: &GgufFile, n_embd: usize, n_head: usize) -> Result<usize> {
    let md = gguf.metadata();
    let key_len = md.opt_usize("llama.attention.key_length", "the head size")?;
    let value_len = md.opt_usize("llama.attention.value_length", "the head size")?;
    let head_dim = match key_len {
        Some(k) => k,
        None if n_head > 0 && n_embd % n_head == 0 => n_embd / n_head,
        None => {
            let reason = format!("hidden size {n_embd} is not divisible by {n_head} heads");
            return Err(unsupported(gguf, "the attention geometry".into(), reason));
        }
    };
    if value_len.is_some_and(|v| v != head_dim) {
        let reason = format!("key length {head_dim} differs from value length {value_len:?}");
        return Err(unsupported(gguf, "the attention geometry".into(), reason));
    }
    let rope_dims = md.opt_usize("llama.rope.dimension_count", "the rotary dimension count")?;
    if rope_dims.is_some_and(|r| r != head_dim) {
        let reason = format!("RoPE covers {rope_dims:?} of {head_dim} head dimensions");
        return Err(unsupported(
            gguf,
            "partial rotary embeddings".into(),
            reason,
        ));
    }
    Ok(head_dim)
}

/// Vocabulary size: `llama.vocab_size`, else the token list length, else the embedding rows.
fn vocab_size(gguf: &GgufFile) -> Result<usize> {
    let md = gguf.metadata();
    if let Some(v) = md.opt_usize("llama.vocab_size", "the vocabulary size")? {
        return Ok(v);
    }
    if let Some(tokens) = md.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        return Ok(tokens.len());
    }
    match gguf.tensor_info("token_embd.weight") {
        Some(t) if t.ggml_dims.len() == 2 => Ok(t.ggml_dims[1] as usize),
        _ => Err(GgufError::MissingKey {
            path: gguf.path().to_path_buf(),
            key: "llama.vocab_size".into(),
            expected: "the vocabulary size (or tokenizer.ggml.tokens, or token_embd.weight)",
        }),
    }
}

fn rope_scaling(gguf: &GgufFile) -> Result<Option<RopeScaling>> {
    let md = gguf.metadata();
    let kind = md.opt_str("llama.rope.scaling.type", "a RoPE scaling type")?;
    let factor = md.opt_f32("llama.rope.scaling.factor", "a RoPE scaling factor")?;
    let Some(kind) = kind.filter(|k| *k != "none") else {
        return Ok(None);
    };
    // llama.cpp reads a missing or zero factor as 1, i.e. no scaling.
    let factor = factor.filter(|&f| f != 0.0).unwrap_or(1.0);
    if factor == 1.0 {
        return Ok(None);
    }
    if kind != "linear" {
        return Err(unsupported(
            gguf,
            format!("RoPE scaling type '{kind}'"),
            "only 'linear' scaling is converted; yarn and llama3 scaling need parameters GGUF \
             does not keep"
                .into(),
        ));
    }
    Ok(Some(RopeScaling {
        kind: kind.into(),
        factor,
    }))
}

/// The most positions a context may have: the ceiling `rlhf-model` applies to
/// `max_position_embeddings` (the longest released contexts are 1M to 10M). Tensor shapes bound
/// every other size by the file itself; the context is the one size no tensor carries.
const MAX_CONTEXT: usize = 1 << 24;

/// The numbers no tensor shape checks: the context length and the float constants, which would
/// otherwise reach `config.json` as absurd sizes or as `null` (JSON has no NaN).
fn check_scalars(gguf: &GgufFile, hp: &LlamaHparams) -> Result<()> {
    let bad = |key: &str, reason: String| GgufError::BadMetadata {
        path: gguf.path().to_path_buf(),
        what: format!("key '{key}'"),
        reason,
    };
    if hp.n_ctx == 0 || hp.n_ctx > MAX_CONTEXT {
        return Err(bad(
            "llama.context_length",
            format!("{} is not a context length in 1..={MAX_CONTEXT}", hp.n_ctx),
        ));
    }
    if !(hp.rms_norm_eps.is_finite() && (0.0..1.0).contains(&hp.rms_norm_eps)) {
        return Err(bad(
            "llama.attention.layer_norm_rms_epsilon",
            format!("{} is not an epsilon in [0, 1)", hp.rms_norm_eps),
        ));
    }
    if !(hp.rope_theta.is_finite() && hp.rope_theta > 0.0) {
        return Err(bad(
            "llama.rope.freq_base",
            format!("{} is not a positive RoPE base", hp.rope_theta),
        ));
    }
    match &hp.rope_scaling {
        Some(s) if !(s.factor.is_finite() && s.factor > 0.0) => Err(bad(
            "llama.rope.scaling.factor",
            format!("{} is not a positive factor", s.factor),
        )),
        _ => Ok(()),
    }
}

fn check_divisibility(gguf: &GgufFile, hp: &LlamaHparams) -> Result<()> {
    let ok = hp.n_head > 0
        && hp.n_head_kv > 0
        && hp.n_head % hp.n_head_kv == 0
        && hp.head_dim % 2 == 0
        && hp.n_layer > 0;
    if ok {
        return Ok(());
    }
    let reason = format!(
        "{} heads, {} key/value heads, head size {}, {} layers (need heads divisible by kv \
         heads, an even head size and at least one layer)",
        hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_layer
    );
    Err(unsupported(gguf, "the attention geometry".into(), reason))
}

/// Turns an f32 read from GGUF into the f64 with the same shortest decimal form, so the JSON says
/// `1e-5` rather than `9.999999747378752e-6`.
fn short_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// transformers 5's `rope_parameters` object.
#[derive(Serialize)]
struct RopeParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    rope_theta: f64,
    rope_type: String,
}

/// transformers 4.x's `rope_scaling` object.
#[derive(Serialize)]
struct LegacyRopeScaling {
    factor: f64,
    rope_type: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `config.json`, fields in the alphabetical order `PretrainedConfig.to_json_string` uses.
#[derive(Serialize)]
struct HfLlamaConfig {
    architectures: [&'static str; 1],
    attention_bias: bool,
    attention_dropout: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<usize>,
    dtype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<usize>,
    head_dim: usize,
    hidden_act: &'static str,
    hidden_size: usize,
    initializer_range: f64,
    intermediate_size: usize,
    max_position_embeddings: usize,
    mlp_bias: bool,
    model_type: &'static str,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<usize>,
    pretraining_tp: usize,
    rms_norm_eps: f64,
    rope_parameters: RopeParameters,
    rope_scaling: Option<LegacyRopeScaling>,
    rope_theta: f64,
    tie_word_embeddings: bool,
    torch_dtype: &'static str,
    use_cache: bool,
    vocab_size: usize,
}

/// The `config.json` transformers writes for this model in f32.
pub fn hf_config_json(hp: &LlamaHparams) -> serde_json::Value {
    let rope_theta = short_f64(hp.rope_theta);
    let scaling = hp.rope_scaling.as_ref();
    let config = HfLlamaConfig {
        architectures: ["LlamaForCausalLM"],
        attention_bias: hp.attention_bias,
        attention_dropout: 0.0,
        bos_token_id: hp.bos_token_id,
        dtype: "float32",
        eos_token_id: hp.eos_token_id,
        head_dim: hp.head_dim,
        hidden_act: "silu",
        hidden_size: hp.n_embd,
        // LlamaConfig's default; only used to initialise missing weights, and none are missing.
        initializer_range: 0.02,
        intermediate_size: hp.n_ff,
        max_position_embeddings: hp.n_ctx,
        mlp_bias: hp.mlp_bias,
        model_type: "llama",
        num_attention_heads: hp.n_head,
        num_hidden_layers: hp.n_layer,
        num_key_value_heads: hp.n_head_kv,
        pad_token_id: hp.pad_token_id,
        pretraining_tp: 1,
        rms_norm_eps: short_f64(hp.rms_norm_eps),
        rope_parameters: RopeParameters {
            factor: scaling.map(|s| short_f64(s.factor)),
            rope_theta,
            rope_type: scaling.map_or("default".into(), |s| s.kind.clone()),
        },
        rope_scaling: scaling.map(|s| LegacyRopeScaling {
            factor: short_f64(s.factor),
            rope_type: s.kind.clone(),
            kind: s.kind.clone(),
        }),
        rope_theta,
        tie_word_embeddings: hp.tie_word_embeddings,
        torch_dtype: "float32",
        use_cache: true,
        vocab_size: hp.vocab_size,
    };
    // Serialising a struct of plain numbers, strings and options cannot fail.
    serde_json::to_value(config).unwrap_or_default()
}

/// The `generation_config.json` transformers derives from the model config; extra end-of-turn
/// ids turn `eos_token_id` into a list, as in Llama 3's files.
pub fn hf_generation_config_json(hp: &LlamaHparams) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(bos) = hp.bos_token_id {
        map.insert("bos_token_id".into(), bos.into());
    }
    let eos: Vec<usize> = hp
        .eos_token_id
        .into_iter()
        .chain(hp.extra_eos_token_ids.iter().copied())
        .collect();
    match eos.as_slice() {
        [] => {}
        [one] => {
            map.insert("eos_token_id".into(), (*one).into());
        }
        many => {
            map.insert("eos_token_id".into(), many.into());
        }
    }
    if let Some(pad) = hp.pad_token_id {
        map.insert("pad_token_id".into(), pad.into());
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_f64_keeps_the_decimal_the_author_wrote() {
        assert_eq!(short_f64(1e-5), 1e-5);
        assert_eq!(short_f64(100000.0), 100000.0);
        let json = serde_json::to_string(&short_f64(1e-5)).unwrap();
        assert_eq!(json.parse::<f64>().unwrap(), 1e-5, "{json}");
    }
}
