//! Strict configuration: a TOML file per command, then `--set key.path=value` overrides, then a
//! typed struct. Unknown keys, wrong types and malformed TOML are errors that name the file (or
//! the `--set`) and the key path; nothing is silently ignored (nanoGPT's `configurator.py`, made
//! strict). Also the trainer's own section, [`TrainerConfig`].
//!
//! Not here: what a stage does with its config (each stage crate defines its own struct and
//! embeds `TrainerConfig` as its `trainer` table).
//!
//! Structs loaded through [`load`] should carry `#[serde(deny_unknown_fields, default)]`
//! (`flatten` defeats `deny_unknown_fields` in serde, so nest tables instead).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{Result, TrainError};

/// Reads `file` (or starts from an empty table: every key at its default), applies `overrides`
/// (`"trainer.lr=3e-4"`, in order) and deserializes the result into `T`.
///
/// The file and the overrides are laid over `T::default()` written as TOML, key by key, so a
/// nested table keeps the defaults of its parent: `--set trainer.lr=1e-4` on a command whose
/// default trainer has batch 16 keeps batch 16 (deserializing the partial `[trainer]` table alone
/// would fall back to `TrainerConfig::default()`'s generic values).
pub fn load<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    overrides: &[String],
) -> Result<T> {
    let (origin, text) = match file {
        Some(path) => (path.display().to_string(), read_capped(path)?),
        None => ("defaults".to_string(), String::new()),
    };
    from_str(&text, &origin, overrides)
}

/// The most bytes a configuration file may have. Every stage's full configuration is a few KB
/// of TOML; reading a larger file whole would only cost memory and parse time.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a configuration file, refusing one over [`MAX_CONFIG_BYTES`] before reading it whole.
fn read_capped(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |e| TrainError::io("read the config file", path, e);
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(TrainError::Config(format!(
            "{}: larger than {} KiB; a configuration is a few KB of TOML (is this the right file?)",
            path.display(),
            MAX_CONFIG_BYTES >> 10
        )));
    }
    Ok(text)
}

/// As [`load`], from TOML text; `origin` names the text in error messages.
pub fn from_str<T: DeserializeOwned + Serialize + Default>(
    text: &str,
    origin: &str,
    overrides: &[String],
) -> Result<T> {
    let user: Table = text
        .parse()
        .map_err(|e: toml::de::Error| TrainError::Config(format!("{origin}: {e}")))?;
    let mut table = to_table(&T::default())?;
    merge(&mut table, user);
    let mut applied = Vec::new();
    for raw in overrides {
        let (key, value) = parse_override(raw)?;
        set_path(&mut table, &key, value, raw)?;
        applied.push((key, raw.as_str()));
    }
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let msg = explain(&path, e.into_inner().message());
        let from_set = applied
            .iter()
            .rev()
            .find(|(key, _)| {
                path == *key
                    || path.starts_with(&format!("{key}."))
                    || key.starts_with(&format!("{path}."))
            })
            .map(|(_, raw)| format!(" (from --set {raw})"))
            .unwrap_or_default();
        TrainError::Config(format!("{origin}: {msg}{from_set}"))
    })
}

/// Lays `over` onto `base`: tables merge key by key, any other value replaces.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The config as a TOML table: written to the run folder and into every checkpoint.
pub fn to_table<T: Serialize>(config: &T) -> Result<Table> {
    Table::try_from(config)
        .map_err(|e| TrainError::Config(format!("cannot write the config as TOML: {e}")))
}

/// The most parts a `--set` key path may have.
const MAX_KEY_DEPTH: usize = 16;

/// `a.b.c=value` -> (["a","b","c"] joined, value). The value is parsed as a TOML value
/// (`3e-4`, `true`, `[0.9, 0.95]`, `"x"`), falling back to a bare string (`name=run1`).
fn parse_override(raw: &str) -> Result<(String, Value)> {
    let bad = |why: &str| TrainError::Config(format!("--set {raw}: {why}"));
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| bad("expected key.path=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
        return Err(bad("the key path has an empty part"));
    }
    // Every configuration's keys are a few tables deep; a longer path names nothing, and its
    // tables would nest deeper than the TOML parser allows a file to (dropping and deserializing
    // them recurses: 20,000 parts overflowed the stack).
    let depth = key.split('.').count();
    if depth > MAX_KEY_DEPTH {
        return Err(bad(&format!(
            "the key path has {depth} parts; configuration keys are at most {MAX_KEY_DEPTH} deep"
        )));
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

/// Sets `key` (dotted) in `table`, creating intermediate tables.
fn set_path(table: &mut Table, key: &str, value: Value, raw: &str) -> Result<()> {
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let (last, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut cur = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            TrainError::Config(format!(
                "--set {raw}: '{}' is a value, not a table",
                parts[..=i].join(".")
            ))
        })?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Rewrites serde's unknown-field message as "unknown key 'a.b' (did you mean 'c'?)".
fn explain(path: &str, msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return format!("{path}: {msg}");
    };
    let name = rest.split('`').next().unwrap_or_default();
    // serde lists the expected names in backticks after "expected".
    let expected: Vec<&str> = msg
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let hint = expected
        .iter()
        .map(|cand| (edit_distance(name, cand), *cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min()
        .map(|(_, cand)| format!(" (did you mean '{cand}'?)"))
        .unwrap_or_default();
    let known = if expected.is_empty() {
        String::new()
    } else {
        format!("; known keys: {}", expected.join(", "))
    };
    format!("unknown key '{path}'{hint}{known}")
}

/// Levenshtein distance; config key names are short, so the quadratic table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = diag + usize::from(ca != *cb);
            diag = row[j + 1];
            row[j + 1] = sub.min(row[j] + 1).min(diag + 1);
        }
    }
    row[b.len()]
}

/// How micro-batch losses are combined under gradient accumulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// Weight each micro-batch's mean loss by its `tokens`, so the step minimises the mean over
    /// every token of the step. Micro-batches with different token counts (SFT, padding) then
    /// give the same gradient as one big batch (the transformers 4.46 accumulation fix).
    Tokens,
    /// Plain mean of micro-batch losses (each divided by `grad_accum`), as nanoGPT and minGPT do;
    /// equal to `Tokens` when every micro-batch has the same token count.
    MicroBatch,
}

/// The trainer's section (`[trainer]`): optimizer, schedule, loop cadence. Defaults are
/// nanoGPT's / GPT-3's small-model settings unless said otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Peak learning rate. 6e-4: GPT-3's 125M model and nanoGPT's default.
    pub lr: f64,
    /// Final LR as a fraction of `lr`. 0.1: Chinchilla's cosine to lr/10.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps from ~0 to `lr`. 100: Adam's second moment needs a few hundred
    /// updates to settle; short runs of a few thousand steps lose little to it.
    pub warmup_steps: u64,
    /// Optimizer steps in the run; the cosine reaches `min_lr_ratio * lr` here. 1000: a short
    /// tiny-model run that finishes in minutes on a CPU.
    pub max_steps: u64,
    /// Rows per micro-batch, read by the stage's data source (the trainer only counts tokens).
    /// 8: fits a small model's activations on a CPU.
    pub batch_size: usize,
    /// Micro-batches per optimizer step. 1: no accumulation unless memory demands it.
    pub grad_accum: u64,
    /// How accumulated micro-batch losses are weighted. Tokens: exact for uneven micro-batches.
    pub loss_weighting: LossWeighting,
    /// Decoupled (AdamW) weight decay on matrices only. 0.1: GPT-3, nanoGPT, InstructGPT.
    pub weight_decay: f64,
    /// Adam (beta1, beta2). (0.9, 0.95): GPT-3; 0.95 reacts faster than 0.999 to loss spikes.
    pub betas: [f64; 2],
    /// Adam epsilon. 1e-8: PyTorch's default.
    pub eps: f64,
    /// Clip the global gradient norm to this; 0 disables. 1.0: GPT-3, nanoGPT.
    pub grad_clip: f64,
    /// Run the step's evaluation every N optimizer steps; 0 never. 100: a few evaluations even in
    /// the default 1000-step run.
    pub eval_every: u64,
    /// Write a checkpoint every N optimizer steps (and always at the end); 0 only at the end.
    /// 500: a crash costs at most half the default run.
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk, newest first; 0 keeps all. 2: the newest plus one fallback in
    /// case the newest turns out bad.
    pub keep_checkpoints: usize,
    /// Seeds data order (ChaCha, in Rust) and libtorch (reseeded every step from seed + step).
    /// 1337: nanoGPT's.
    pub seed: u64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            lr: 6e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            max_steps: 1000,
            batch_size: 8,
            grad_accum: 1,
            loss_weighting: LossWeighting::Tokens,
            weight_decay: 0.1,
            betas: [0.9, 0.95],
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 100,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            seed: 1337,
        }
    }
}

impl TrainerConfig {
    /// Range checks, done once before training so that the loop needs none.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        let checks = [
            (
                c.lr.is_finite() && c.lr > 0.0,
                format!("lr must be > 0, got {}", c.lr),
            ),
            (
                (0.0..=1.0).contains(&c.min_lr_ratio),
                format!("min_lr_ratio must be in [0, 1], got {}", c.min_lr_ratio),
            ),
            (c.max_steps > 0, "max_steps must be > 0".to_string()),
            (c.batch_size > 0, "batch_size must be > 0".to_string()),
            (c.grad_accum > 0, "grad_accum must be > 0".to_string()),
            (
                c.weight_decay >= 0.0,
                format!("weight_decay must be >= 0, got {}", c.weight_decay),
            ),
            (
                c.betas.iter().all(|b| (0.0..1.0).contains(b)),
                format!("betas must be in [0, 1), got {:?}", c.betas),
            ),
            (c.eps > 0.0, format!("eps must be > 0, got {}", c.eps)),
            (
                c.grad_clip >= 0.0,
                format!("grad_clip must be >= 0 (0 disables), got {}", c.grad_clip),
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(TrainError::Config(format!("trainer.{msg}"))),
            None => Ok(()),
        }
    }
}
