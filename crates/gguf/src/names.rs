//! From GGUF tensors to transformers' `LlamaForCausalLM` state dict: names, expected shapes, and
//! the undoing of llama.cpp's q/k row permutation.
//!
//! The name table is the inverse of llama.cpp's `gguf-py/gguf/tensor_mapping.py` for the llama
//! architecture. Shapes here are PyTorch order (outermost first), i.e. the reverse of GGUF's
//! `ne`. This module decides *what* to write; `import.rs` does the writing.

use crate::error::{GgufError, Result};
use crate::llama::LlamaHparams;
use crate::reader::GgufFile;
use crate::types::GgmlType;

/// Per-layer GGUF tensor stem → transformers module path under `model.layers.N.`.
const LAYER_MAP: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Model-level GGUF tensor → transformers name.
const GLOBAL_MAP: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The transformers name for a llama GGUF tensor name, or `None` if it has no counterpart.
///
/// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`, `output.weight` →
/// `lm_head.weight`, and so on; biases map like weights.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    if let Some(&(_, hf)) = GLOBAL_MAP.iter().find(|(g, _)| *g == gguf_name) {
        return Some(hf.to_string());
    }
    let (layer, stem, kind) = split_layer_name(gguf_name)?;
    let (_, module) = LAYER_MAP.iter().find(|(s, _)| *s == stem)?;
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// `blk.N.stem.kind` → `(N, stem, kind)` with `kind` "weight" or "bias".
fn split_layer_name(name: &str) -> Option<(usize, &str, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (stem, kind) = rest.rsplit_once('.')?;
    let layer = layer.parse().ok()?;
    matches!(kind, "weight" | "bias").then_some((layer, stem, kind))
}

/// Inverts llama.cpp's q/k row permutation (`LlamaModel.permute` in `convert_hf_to_gguf.py`).
///
/// transformers applies RoPE with `rotate_half`, pairing dimension `i` of a head with
/// `i + hs/2`; ggml's rope pairs adjacent dimensions `2i, 2i + 1`. So the converter moved HF row
/// `p * hs/2 + i` of each head to row `2i + p`. This puts every row back. `w` is row-major with
/// rows of `row_len` values (1 for a bias); returns `None` when the rows do not split into
/// `n_heads` heads of even size.
pub fn unpermute_rope_rows(w: &[f32], n_heads: usize, row_len: usize) -> Option<Vec<f32>> {
    let rows = w.len().checked_div(row_len)?;
    if w.len() % row_len != 0 || n_heads == 0 || rows % (2 * n_heads) != 0 {
        return None;
    }
    let hs = rows / n_heads; // (nh, hs) rows
    let half = hs / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for p in 0..2 {
                let src = (h * hs + 2 * i + p) * row_len;
                let dst = (h * hs + p * half + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&w[src..src + row_len]);
            }
        }
    }
    Some(out)
}

/// One tensor to write: where it comes from, its transformers name and shape, and whether its
/// rows need un-permuting (with how many heads).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    pub gguf_name: String,
    pub hf_name: String,
    /// PyTorch order.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    pub rope_heads: Option<usize>,
}

/// Expected PyTorch shape and rope head count of a per-layer tensor.
fn layer_shape(stem: &str, kind: &str, hp: &LlamaHparams) -> (Vec<usize>, Option<usize>) {
    // Saturating: forged metadata must end in a shape-mismatch error, not an overflow panic.
    let q_rows = hp.n_head.saturating_mul(hp.head_dim);
    let kv_rows = hp.n_head_kv.saturating_mul(hp.head_dim);
    let (rows, cols, heads) = match stem {
        "attn_q" => (q_rows, hp.n_embd, Some(hp.n_head)),
        "attn_k" => (kv_rows, hp.n_embd, Some(hp.n_head_kv)),
        "attn_v" => (kv_rows, hp.n_embd, None),
        "attn_output" => (hp.n_embd, q_rows, None),
        "ffn_gate" | "ffn_up" => (hp.n_ff, hp.n_embd, None),
        "ffn_down" => (hp.n_embd, hp.n_ff, None),
        // attn_norm, ffn_norm: vectors.
        _ => return (vec![hp.n_embd], None),
    };
    let shape = if kind == "bias" {
        vec![rows]
    } else {
        vec![rows, cols]
    };
    (shape, heads)
}

/// Expected shape and rope heads for any GGUF tensor name, `None` if it has no counterpart.
fn expected(name: &str, hp: &LlamaHparams) -> Option<(Vec<usize>, Option<usize>)> {
    match name {
        "token_embd.weight" | "output.weight" => Some((vec![hp.vocab_size, hp.n_embd], None)),
        "output_norm.weight" => Some((vec![hp.n_embd], None)),
        _ => {
            let (layer, stem, kind) = split_layer_name(name)?;
            if layer >= hp.n_layer || !LAYER_MAP.iter().any(|(s, _)| *s == stem) {
                return None;
            }
            Some(layer_shape(stem, kind, hp))
        }
    }
}

/// The GGUF tensors a complete llama checkpoint must have. Lazy, so a forged layer count fails at
/// the first missing layer instead of building a huge list.
fn required_names(hp: &LlamaHparams) -> impl Iterator<Item = String> + '_ {
    let global = ["token_embd.weight", "output_norm.weight", "output.weight"]
        .into_iter()
        .filter(|n| *n != "output.weight" || !hp.tie_word_embeddings)
        .map(String::from);
    let layers = (0..hp.n_layer).flat_map(|layer| {
        LAYER_MAP
            .iter()
            .map(move |(stem, _)| format!("blk.{layer}.{stem}.weight"))
    });
    global.chain(layers)
}

/// Maps, shape-checks and completeness-checks every tensor of a llama GGUF file.
pub fn plan_tensors(gguf: &GgufFile, hp: &LlamaHparams) -> Result<Vec<TensorPlan>> {
    let bad = |tensor: &str, reason: String| GgufError::BadTensor {
        path: gguf.path().to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    };
    for name in required_names(hp) {
        if gguf.tensor_info(&name).is_none() {
            let reason = format!("is missing; a {}-layer llama model needs it", hp.n_layer);
            return Err(bad(&name, reason));
        }
    }
    let mut plan = Vec::with_capacity(gguf.tensor_infos().len());
    for info in gguf.tensor_infos() {
        let name = info.name.as_str();
        let (Some(hf_name), Some((shape, rope_heads))) = (hf_tensor_name(name), expected(name, hp))
        else {
            let hint = if name == "rope_freqs.weight" {
                " (Llama 3.1-style RoPE frequency factors are not supported)"
            } else {
                ""
            };
            let reason = format!(
                "has no counterpart in transformers' LlamaForCausalLM with {} layers{hint}",
                hp.n_layer
            );
            return Err(bad(name, reason));
        };
        if info.shape() != shape {
            let reason = format!(
                "has shape {:?} (PyTorch order), but the metadata implies {shape:?}",
                info.shape()
            );
            return Err(bad(name, reason));
        }
        plan.push(TensorPlan {
            gguf_name: info.name.clone(),
            hf_name,
            shape,
            ggml_type: info.ggml_type,
            rope_heads,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "blk.12.attn_k.weight",
                "model.layers.12.self_attn.k_proj.weight",
            ),
            ("blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias"),
            (
                "blk.29.attn_output.weight",
                "model.layers.29.self_attn.o_proj.weight",
            ),
            (
                "blk.2.ffn_gate.weight",
                "model.layers.2.mlp.gate_proj.weight",
            ),
            ("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"),
            (
                "blk.2.ffn_down.weight",
                "model.layers.2.mlp.down_proj.weight",
            ),
            (
                "blk.3.attn_norm.weight",
                "model.layers.3.input_layernorm.weight",
            ),
            (
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_tensor_name(gguf).as_deref(), Some(hf), "{gguf}");
        }
        for unknown in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
        ] {
            assert_eq!(hf_tensor_name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute_hand_case() {
        // Two heads of size 4, one value per row. llama.cpp's permute reshapes each head to
        // (2, hs/2), swaps the axes and flattens: HF rows [0 1 2 3] become [0 2 1 3].
        let gguf = [0., 2., 1., 3., 4., 6., 5., 7.];
        let hf = unpermute_rope_rows(&gguf, 2, 1).unwrap();
        assert_eq!(hf, [0., 1., 2., 3., 4., 5., 6., 7.]);
    }

    #[test]
    fn unpermute_moves_whole_rows() {
        // One head of size 6 (rows r0..r5 in HF order), rows of 2 values.
        // GGUF order is r0 r3 r1 r4 r2 r5.
        let row = |r: f32| [10. * r, 10. * r + 1.];
        let gguf: Vec<f32> = [0., 3., 1., 4., 2., 5.]
            .iter()
            .flat_map(|&r| row(r))
            .collect();
        let hf: Vec<f32> = (0..6).flat_map(|r| row(r as f32)).collect();
        assert_eq!(unpermute_rope_rows(&gguf, 1, 2).unwrap(), hf);
    }

    #[test]
    fn unpermute_rejects_odd_geometry() {
        assert_eq!(unpermute_rope_rows(&[0.; 6], 2, 1), None); // head size 3 is odd
        assert_eq!(unpermute_rope_rows(&[0.; 8], 0, 1), None);
        assert_eq!(unpermute_rope_rows(&[0.; 8], 1, 0), None);
        assert_eq!(unpermute_rope_rows(&[0.; 8], 1, 3), None);
    }
}
