//! What a config implies before anything is allocated: the tensors a checkpoint must hold for it
//! (transformers names and shapes, in model order), the memory the model will take, and the
//! machine's memory to compare that with.
//!
//! The tensor list is produced lazily, so a forged layer count fails at the first layer the
//! checkpoint lacks instead of building a huge list. It must name exactly the variables
//! `Gpt::new` registers; `tests/bad_input.rs` checks that for every family and head. Not here:
//! reading tensors (`checkpoint.rs`) or building the model (`gpt.rs`).

use tch::Device;

use crate::config::{Family, ModelConfig};
use crate::gpt::Head;

/// Overrides the memory ceiling (bytes), e.g. to refuse models above a budget on a shared
/// machine; the property tests set it to keep every fuzz case small.
pub const MAX_MODEL_BYTES_ENV: &str = "RLHF_MAX_MODEL_BYTES";

/// The tensors of `cfg`'s model with `head`: `(name, shape)` under the names `Gpt::new` gives
/// its variables (GPT-2's with the `transformer.` prefix), embeddings first, then layer by layer,
/// then the final norm and the head.
pub fn expected_tensors(
    cfg: &ModelConfig,
    head: Head,
) -> impl Iterator<Item = (String, Vec<i64>)> + '_ {
    let (v, c) = (cfg.vocab_size, cfg.hidden_size);
    let gpt2 = cfg.family == Family::Gpt2;
    let embeddings = if gpt2 {
        vec![
            ("transformer.wte.weight".to_string(), vec![v, c]),
            (
                "transformer.wpe.weight".to_string(),
                vec![cfg.max_positions, c],
            ),
        ]
    } else {
        vec![("model.embed_tokens.weight".to_string(), vec![v, c])]
    };
    let layers = (0..cfg.num_layers).flat_map(move |i| layer_tensors(cfg, i));
    let mut last = if gpt2 {
        vec![
            ("transformer.ln_f.weight".to_string(), vec![c]),
            ("transformer.ln_f.bias".to_string(), vec![c]),
        ]
    } else {
        vec![("model.norm.weight".to_string(), vec![c])]
    };
    match head {
        Head::Lm if !cfg.tie_word_embeddings => last.push(("lm_head.weight".into(), vec![v, c])),
        Head::Lm => {}
        Head::Scalar => {
            last.push(("score.weight".into(), vec![1, c]));
            last.push(("score.bias".into(), vec![1]));
        }
    }
    embeddings.into_iter().chain(layers).chain(last)
}

/// The tensors of layer `i`, in `Block::new`'s order.
fn layer_tensors(cfg: &ModelConfig, i: i64) -> Vec<(String, Vec<i64>)> {
    let (c, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let t = |name: &str, shape: &[i64]| (name.to_string(), shape.to_vec());
    let list = match cfg.family {
        Family::Gpt2 => vec![
            t("ln_1.weight", &[c]),
            t("ln_1.bias", &[c]),
            t("attn.c_attn.weight", &[c, 3 * c]),
            t("attn.c_attn.bias", &[3 * c]),
            t("attn.c_proj.weight", &[c, c]),
            t("attn.c_proj.bias", &[c]),
            t("ln_2.weight", &[c]),
            t("ln_2.bias", &[c]),
            t("mlp.c_fc.weight", &[c, inter]),
            t("mlp.c_fc.bias", &[inter]),
            t("mlp.c_proj.weight", &[inter, c]),
            t("mlp.c_proj.bias", &[c]),
        ],
        Family::Llama | Family::Qwen2 => {
            let q = cfg.num_heads * cfg.head_dim;
            let kv = cfg.num_kv_heads * cfg.head_dim;
            let mut list = vec![t("input_layernorm.weight", &[c])];
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                list.push(t(&format!("self_attn.{name}.weight"), &[rows, c]));
                if cfg.attention_bias {
                    list.push(t(&format!("self_attn.{name}.bias"), &[rows]));
                }
            }
            list.extend([
                t("self_attn.o_proj.weight", &[c, q]),
                t("post_attention_layernorm.weight", &[c]),
                t("mlp.gate_proj.weight", &[inter, c]),
                t("mlp.up_proj.weight", &[inter, c]),
                t("mlp.down_proj.weight", &[c, inter]),
            ]);
            list
        }
    };
    let prefix = match cfg.family {
        Family::Gpt2 => format!("transformer.h.{i}."),
        _ => format!("model.layers.{i}."),
    };
    list.into_iter()
        .map(|(name, shape)| (format!("{prefix}{name}"), shape))
        .collect()
}

/// Parameters of `cfg`'s model with `head` (saturating).
fn params(cfg: &ModelConfig, head: Head) -> u64 {
    expected_tensors(cfg, head)
        .map(|(_, shape)| shape.iter().map(|&d| d.max(0) as u64).product::<u64>())
        .fold(0u64, u64::saturating_add)
}

/// Bytes the model takes once built: every parameter in f32 (the kind `Gpt::new` and the loaders
/// create), plus the peak while the RoPE tables are computed (positions, angles, and the cos and
/// sin tables: about four (P, hs) f32 tensors). Saturates instead of overflowing.
pub fn model_bytes(cfg: &ModelConfig, head: Head) -> u64 {
    let rope = match cfg.family {
        Family::Gpt2 => 0,
        _ => (cfg.max_positions.max(0) as u64).saturating_mul(cfg.head_dim.max(0) as u64 * 16),
    };
    params(cfg, head).saturating_mul(4).saturating_add(rope)
}

/// The most memory a model may take on `device`, with where the figure comes from:
/// `RLHF_MAX_MODEL_BYTES` when set; on the CPU, the machine's RAM plus swap (`/proc/meminfo`);
/// `None` where it is unknown (CUDA, whose memory tch does not report: an oversized model there
/// fails at allocation, as in PyTorch).
pub fn memory_ceiling(device: Device) -> Option<(u64, String)> {
    if let Some(bytes) = std::env::var(MAX_MODEL_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some((bytes, format!("the limit {MAX_MODEL_BYTES_ENV}={bytes}")));
    }
    if device != Device::Cpu {
        return None;
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = kib("MemTotal:")?.saturating_add(kib("SwapTotal:").unwrap_or(0));
    Some((
        total.saturating_mul(1024),
        "this machine's memory (MemTotal + SwapTotal in /proc/meminfo)".to_string(),
    ))
}

/// `Err(why)` when `cfg`'s model with `head` cannot fit the memory `device` has.
pub fn check_fits(cfg: &ModelConfig, head: Head, device: Device) -> Result<(), String> {
    check_within(cfg, head, memory_ceiling(device))
}

/// As [`check_fits`], against an explicit ceiling `(bytes, where the figure comes from)`.
pub fn check_within(
    cfg: &ModelConfig,
    head: Head,
    ceiling: Option<(u64, String)>,
) -> Result<(), String> {
    let need = model_bytes(cfg, head);
    let Some((have, source)) = ceiling else {
        return Ok(());
    };
    if need <= have {
        return Ok(());
    }
    let rope = if cfg.family == Family::Gpt2 {
        ""
    } else {
        " and the RoPE tables"
    };
    Err(format!(
        "the model this config describes needs {} ({} parameters in f32{rope}: vocab_size {}, \
         hidden size {}, {} layers, intermediate size {}, {} positions), more than {source}, {}",
        human(need),
        params(cfg, head),
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.intermediate_size,
        cfg.max_positions,
        human(have),
    ))
}

/// Bytes as GiB, MiB or KiB, whichever reads best.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        b_ if b_ >= 1 << 30 => format!("{:.1} GiB", b / (1u64 << 30) as f64),
        b_ if b_ >= 1 << 20 => format!("{:.1} MiB", b / (1u64 << 20) as f64),
        _ => format!("{:.1} KiB", b / 1024.0),
    }
}
