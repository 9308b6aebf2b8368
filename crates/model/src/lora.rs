//! LoRA adapters (Hu et al., 2021) on the decoder's linear maps, in PEFT's file layout.
//!
//! An adapter adds `scale · B A x` to a frozen linear map, with `A` (r, in) and `B` (out, r), `B`
//! starting at zero so a fresh adapter leaves the model unchanged; `scale` is `alpha / r`, or
//! `alpha / sqrt(r)` with rsLoRA. On disk an adapter is a directory PEFT (and vLLM) read:
//! `adapter_config.json` and `adapter_model.safetensors` with tensors named
//! `base_model.model.{module}.lora_A.weight` / `lora_B.weight`; a scalar head trained with it is
//! saved beside them as `base_model.model.score.weight` (PEFT's `modules_to_save`). The config's
//! `base_model_name_or_path` names the base checkpoint the adapter was trained on.
//!
//! Here: the settings ([`LoraConfig`]), the config file, and reading the tensors. Attaching,
//! merging, saving and the frozen base's view are `Gpt` methods (`gpt.rs`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tch::Tensor;

use crate::error::{ModelError, Result};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix on every adapter tensor name.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The target that selects every linear map of the transformer blocks (PEFT's "all-linear": not
/// the LM head, not the scalar head).
pub const ALL_LINEAR: &str = "all-linear";
/// Adapters on adapters: how many base links `Gpt::load` follows before it calls it a cycle.
pub const MAX_CHAIN: usize = 8;

/// LoRA's settings: the `[lora]` table of a training stage's config (`--lora` turns it on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Train adapters instead of every weight (the `--lora` flag sets this).
    pub enabled: bool,
    /// Rank of the update. 8, PEFT's default.
    pub r: i64,
    /// The update is scaled by `alpha / r` (`alpha / sqrt(r)` with `rslora`). 16: twice the rank.
    pub alpha: f64,
    /// Dropout on the adapter's input while training. 0, PEFT's default (and what PPO needs for a
    /// first-epoch ratio of exactly 1).
    pub dropout: f64,
    /// Modules to adapt, by transformers name or its last parts (`q_proj`, `self_attn.v_proj`,
    /// `c_attn`), as PEFT matches them; or `all-linear` for every linear map of the blocks.
    pub targets: Vec<String>,
    /// rsLoRA's scale `alpha / sqrt(r)`, which keeps the update's size steady across ranks.
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![ALL_LINEAR.to_string()],
            rslora: false,
        }
    }
}

impl LoraConfig {
    /// Checks every value before a model is touched.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Invalid(format!("lora config: {msg}")));
        if !(1..=4096).contains(&self.r) {
            return bad(format!("r must be in 1..=4096, got {}", self.r));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!(
                "alpha must be a positive number, got {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.targets.is_empty() {
            return bad(
                "targets is empty: name modules (e.g. [\"q_proj\", \"v_proj\"]) or \"all-linear\""
                    .into(),
            );
        }
        for t in &self.targets {
            let ok = !t.is_empty()
                && !t.starts_with('.')
                && !t.ends_with('.')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
            if !ok {
                return bad(format!(
                    "target {t:?} is not a module name (letters, digits, '_' and '.'); regular \
                     expressions are not supported"
                ));
            }
        }
        Ok(())
    }

    /// The factor on `B A x`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Whether the linear map named `module` is adapted (PEFT's rule: the whole name, or its
    /// last dot-separated parts).
    pub fn targets_module(&self, module: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t == ALL_LINEAR || module == t || module.ends_with(&format!(".{t}")))
    }
}

/// What `adapter_config.json` says, as far as this implementation uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFile {
    pub lora: LoraConfig,
    /// `base_model_name_or_path`, as written.
    pub base: Option<String>,
    /// PEFT's `task_type` (`CAUSAL_LM`, `SEQ_CLS`, or absent).
    pub task_type: Option<String>,
    /// Whether the adapter carries a scalar head: `task_type` `SEQ_CLS` or `score` among
    /// `modules_to_save` (a reward or value model's adapter).
    pub scalar_head: bool,
}

/// Whether `dir` holds a PEFT adapter (an `adapter_config.json`).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads and checks `dir/adapter_config.json`: LoRA only, without the PEFT features this
/// implementation lacks (DoRA, bias training, per-layer ranks, layer subsets, regex targets),
/// each refused with the field that asks for it.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterFile> {
    let path = dir.join(ADAPTER_CONFIG);
    let v = crate::config::read_json_file(&path)?;
    let err =
        |field: &str, msg: String| ModelError::config(&path, format!("field '{field}': {msg}"));
    let obj = v
        .as_object()
        .ok_or_else(|| ModelError::config(&path, "expected a JSON object"))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(err(
                "peft_type",
                format!("only LoRA adapters are supported, got {other:?}"),
            ));
        }
    }
    let r = get("r")
        .and_then(Value::as_i64)
        .ok_or_else(|| err("r", "expected a positive integer".into()))?;
    let alpha = match get("lora_alpha") {
        None => 8.0, // PEFT's default
        Some(a) => a
            .as_f64()
            .ok_or_else(|| err("lora_alpha", format!("expected a number, got {a}")))?,
    };
    let dropout = get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
    for k in ["use_dora", "lora_bias", "use_qalora"] {
        if flag(k) {
            return Err(err(k, "is not supported (plain LoRA only)".into()));
        }
    }
    if let Some(b) = get("bias").and_then(Value::as_str).filter(|b| *b != "none") {
        return Err(err(
            "bias",
            format!("\"{b}\" is not supported, only \"none\""),
        ));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if get(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(err(
                k,
                "per-module ranks or alphas are not supported".into(),
            ));
        }
    }
    for k in [
        "layers_to_transform",
        "layer_replication",
        "target_parameters",
    ] {
        if get(k).is_some() {
            return Err(err(k, "is not supported".into()));
        }
    }
    let targets = match get("target_modules") {
        None => vec![ALL_LINEAR.to_string()],
        Some(Value::String(s)) if s == ALL_LINEAR => vec![s.clone()],
        Some(Value::String(s)) => {
            return Err(err(
                "target_modules",
                format!("the regular expression {s:?} is not supported; list the module names"),
            ));
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err("target_modules", format!("expected strings, got {t}")))
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(err(
                "target_modules",
                format!("expected a list of names, got {other}"),
            ));
        }
    };
    let lora = LoraConfig {
        enabled: true,
        r,
        alpha,
        dropout,
        targets,
        rslora: flag("use_rslora"),
    };
    lora.validate()
        .map_err(|e| ModelError::config(&path, e.to_string()))?;
    let task_type = get("task_type").and_then(Value::as_str).map(str::to_string);
    let saves_score = get("modules_to_save")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("score")));
    Ok(AdapterFile {
        lora,
        base: get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
        scalar_head: saves_score || task_type.as_deref() == Some("SEQ_CLS"),
        task_type,
    })
}

/// Writes `dir/adapter_config.json` in PEFT's form.
pub fn write_adapter_config(
    dir: &Path,
    cfg: &LoraConfig,
    targets: &[String],
    base: Option<&str>,
    scalar_head: bool,
    fan_in_fan_out: bool,
) -> Result<()> {
    // PEFT types lora_alpha as an int; write one when the value is whole.
    let alpha = if cfg.alpha.fract() == 0.0 && cfg.alpha.abs() < 1e15 {
        json!(cfg.alpha as i64)
    } else {
        json!(cfg.alpha)
    };
    let v = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": alpha,
        "lora_dropout": cfg.dropout,
        "modules_to_save": if scalar_head { json!(["score"]) } else { Value::Null },
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": if scalar_head { "SEQ_CLS" } else { "CAUSAL_LM" },
        "use_dora": false,
        "use_rslora": cfg.rslora,
    });
    let path = dir.join(ADAPTER_CONFIG);
    let text = serde_json::to_string_pretty(&v).expect("a JSON value serialises") + "\n";
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))
}

/// The base checkpoint an adapter names, resolved: an absolute path as is; a relative one
/// against the adapter's directory first, then the working directory. `None` when the config
/// names none or the path does not exist (a hub id, say).
pub fn resolve_base(dir: &Path, base: Option<&str>) -> Option<PathBuf> {
    let base = Path::new(base?);
    let candidates = if base.is_absolute() {
        vec![base.to_path_buf()]
    } else {
        vec![dir.join(base), base.to_path_buf()]
    };
    candidates.into_iter().find(|p| p.is_dir())
}

/// The base checkpoint directory of the adapter in `dir`, or an error that says what to do.
pub fn base_dir(dir: &Path) -> Result<PathBuf> {
    let file = read_adapter_config(dir)?;
    resolve_base(dir, file.base.as_deref()).ok_or_else(|| {
        ModelError::config(
            dir.join(ADAPTER_CONFIG),
            match &file.base {
                Some(b) => format!(
                    "field 'base_model_name_or_path': {b:?} is not a directory here (nothing is \
                     downloaded); point it at the base checkpoint's directory"
                ),
                None => "field 'base_model_name_or_path' is missing: the adapter does not say \
                         which checkpoint it belongs to"
                    .into(),
            },
        )
    })
}

/// Every tensor of `dir/adapter_model.safetensors`, names as stored.
pub fn read_adapter_tensors(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind =
            crate::checkpoint::float_kind(view.dtype()).ok_or_else(|| ModelError::Tensor {
                path: path.clone(),
                name: name.clone(),
                msg: format!("dtype {:?} is not a float type we can load", view.dtype()),
            })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.push((name, Tensor::f_from_data_size(view.data(), &shape, kind)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Where the tokenizer of the model in `dir` lives: `dir` itself, or for an adapter directory
/// without a `tokenizer.json`, its base checkpoint (followed through adapters on adapters).
pub fn tokenizer_dir(dir: &Path) -> Result<PathBuf> {
    let mut dir = dir.to_path_buf();
    for _ in 0..MAX_CHAIN {
        if !is_adapter_dir(&dir) || dir.join("tokenizer.json").exists() {
            return Ok(dir);
        }
        dir = base_dir(&dir)?;
    }
    Ok(dir)
}
