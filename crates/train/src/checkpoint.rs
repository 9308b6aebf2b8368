//! Checkpoint directories: `<run>/checkpoints/step-00000100/` holding the step's model files (from
//! `TrainStep::save`), `optimizer.safetensors` and `rlhf.json` (format version, stage, step,
//! metrics, data position, the resolved config: a checkpoint describes itself).
//!
//! Writes are atomic: everything goes into `.tmp-step-…`, is fsynced, and only then renamed into
//! place, so a crash at any point leaves the previous checkpoints intact and loadable; readers
//! ignore temporary directories, and pruning renames a checkpoint out of sight before deleting it.
//! The final export into the run folder is crash-safe too ([`export_with`]): the folder loads as
//! a model only once every file of the export is in place. Also the Gpt helper that refuses a
//! checkpoint of another model.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use rlhf_model::{Gpt, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::data::DataPosition;
use crate::error::{Result, TrainError};
use crate::step::Metrics;

/// Bumped whenever `rlhf.json` or the directory layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub const INFO_FILE: &str = "rlhf.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PREFIX: &str = "step-";
const TMP_PREFIX: &str = ".tmp-";

/// The content of `rlhf.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub format_version: u32,
    /// The command that wrote it ("pretrain", "sft", ...); resuming under another is an error.
    pub stage: String,
    /// Optimizer steps completed.
    pub step: u64,
    pub tokens_seen: u64,
    /// Training time so far, across resumes.
    pub elapsed_s: f64,
    /// The latest step's metrics and the latest evaluation's (`eval/…`).
    pub metrics: Metrics,
    pub data_position: DataPosition,
    /// The command's resolved configuration.
    pub config: serde_json::Value,
    /// The models and data files the run was started from (absent in older checkpoints).
    #[serde(default)]
    pub inputs: Vec<crate::run::RunInput>,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Complete checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = fs::read_dir(&dir).map_err(|e| TrainError::io("list", &dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io("list", &dir, e))?;
        let name = entry.file_name();
        let step = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(step) = step.filter(|_| entry.path().join(INFO_FILE).is_file()) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop().map(|(_, path)| path))
}

/// Reads and checks a checkpoint's `rlhf.json`.
pub fn read_info(dir: &Path) -> Result<CheckpointInfo> {
    let path = dir.join(INFO_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        TrainError::checkpoint(
            dir,
            format!("cannot read {INFO_FILE} ({e}); a training checkpoint has one (a plain model directory can initialise a run but not resume one)"),
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&path, format!("invalid JSON: {e}")))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(FORMAT_VERSION)) {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "format_version {version:?}, this build reads {FORMAT_VERSION}; use the rlhf \
                 version that wrote it"
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| TrainError::checkpoint(&path, e.to_string()))
}

/// Where [`write`] puts the checkpoint of `step` in `run_dir`.
pub fn step_dir(run_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run_dir).join(format!("{PREFIX}{step:08}"))
}

/// Writes a checkpoint for `info.step` atomically: `fill` writes the model and optimizer files
/// into a temporary directory, then `rlhf.json` is added, everything is fsynced and the directory
/// is renamed into place. On error the temporary directory is removed and nothing else changes.
pub fn write(
    run_dir: &Path,
    info: &CheckpointInfo,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    fs::create_dir_all(&dir).map_err(|e| TrainError::io("create", &dir, e))?;
    remove_temporaries(&dir)?;
    let name = format!("{PREFIX}{:08}", info.step);
    debug_assert_eq!(dir.join(&name), step_dir(run_dir, info.step));
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    fs::create_dir(&tmp).map_err(|e| TrainError::io("create", &tmp, e))?;
    let written = fill(&tmp).and_then(|()| {
        let json = serde_json::to_string_pretty(info)
            .map_err(|e| TrainError::Invalid(format!("cannot serialise {INFO_FILE}: {e}")))?;
        let path = tmp.join(INFO_FILE);
        fs::write(&path, json + "\n").map_err(|e| TrainError::io("write", &path, e))?;
        sync_tree(&tmp)
    });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let target = dir.join(&name);
    if target.exists() {
        // A checkpoint of the same step from an abandoned branch of the run (resumed from an
        // older one): move it aside first, since rename cannot replace a non-empty directory.
        let old = dir.join(format!("{TMP_PREFIX}old-{name}"));
        fs::rename(&target, &old).map_err(|e| TrainError::io("move aside", &target, e))?;
    }
    fs::rename(&tmp, &target).map_err(|e| TrainError::io("rename into place", &tmp, e))?;
    sync_path(&dir)?;
    remove_temporaries(&dir)?;
    Ok(target)
}

/// Deletes all but the newest `keep` checkpoints (0 keeps all).
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list(run_dir)?;
    if keep == 0 || all.len() <= keep {
        return Ok(());
    }
    for (_, path) in &all[..all.len() - keep] {
        // Out of `list`'s sight first, so a crash while deleting leaves no half-deleted
        // checkpoint that still looks complete.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let gone = path.with_file_name(format!("{TMP_PREFIX}pruned-{name}"));
        fs::rename(path, &gone).map_err(|e| TrainError::io("move aside", path, e))?;
        fs::remove_dir_all(&gone).map_err(|e| TrainError::io("remove old checkpoint", &gone, e))?;
    }
    Ok(())
}

/// Leftovers of interrupted writes.
fn remove_temporaries(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| TrainError::io("list", dir, e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| TrainError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// fsyncs every file under `dir` (subdirectories included: PPO's `policy/` and `value/`) and
/// the directories themselves, so the rename publishes data that is on disk, not just in the
/// page cache.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| TrainError::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| TrainError::io("list", dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else if path.is_file() {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

/// Writes `path` through a temporary file in the same directory and a rename, so that a crash
/// leaves the old contents or the new ones, never a truncated file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{TMP_PREFIX}{name}"));
    fs::write(&tmp, contents).map_err(|e| TrainError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TrainError::io("rename into place", &tmp, e))
}

fn sync_path(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io("fsync", path, e))
}

/// Loads a checkpoint written by `Gpt::save` into `gpt` in place, refusing one of another
/// architecture with a message that lists the differences (instead of a shape error on the
/// first tensor that happens to differ).
pub fn load_gpt(gpt: &Gpt, dir: &Path) -> Result<()> {
    if gpt.adapter().is_some() || rlhf_model::is_adapter_dir(dir) {
        // A LoRA run's checkpoints hold the adapter (and a head) only; the base is its input.
        return Ok(gpt.restore_adapter(dir)?);
    }
    let saved = ModelConfig::from_file(&dir.join("config.json"))?;
    let diffs = architecture_diff(&saved, &gpt.cfg);
    if !diffs.is_empty() {
        return Err(TrainError::checkpoint(
            dir,
            format!(
                "holds a different model ({}, checkpoint vs this run); resume from a checkpoint \
                 of the model this run builds, or start a fresh run in a new directory",
                diffs.join(", ")
            ),
        ));
    }
    rlhf_model::load_weights(&gpt.vs, dir, gpt.cfg.family)?;
    Ok(())
}

/// "hidden_size 64 vs 32" for every architectural field that differs.
fn architecture_diff(a: &ModelConfig, b: &ModelConfig) -> Vec<String> {
    let fields: [(&str, String, String); 10] = [
        (
            "family",
            format!("{:?}", a.family),
            format!("{:?}", b.family),
        ),
        (
            "vocab_size",
            a.vocab_size.to_string(),
            b.vocab_size.to_string(),
        ),
        (
            "hidden_size",
            a.hidden_size.to_string(),
            b.hidden_size.to_string(),
        ),
        (
            "num_layers",
            a.num_layers.to_string(),
            b.num_layers.to_string(),
        ),
        (
            "num_heads",
            a.num_heads.to_string(),
            b.num_heads.to_string(),
        ),
        (
            "num_kv_heads",
            a.num_kv_heads.to_string(),
            b.num_kv_heads.to_string(),
        ),
        ("head_dim", a.head_dim.to_string(), b.head_dim.to_string()),
        (
            "intermediate_size",
            a.intermediate_size.to_string(),
            b.intermediate_size.to_string(),
        ),
        (
            "max_positions",
            a.max_positions.to_string(),
            b.max_positions.to_string(),
        ),
        (
            "tie_word_embeddings",
            a.tie_word_embeddings.to_string(),
            b.tie_word_embeddings.to_string(),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(name, x, y)| format!("{name} {x} vs {y}"))
        .collect()
}

/// Files whose presence makes a directory loadable as a model: `config.json` (full weights) and
/// `adapter_config.json` (a LoRA adapter). [`export_with`] removes them first and renames them in
/// last, which makes their arrival the moment the export becomes visible.
const LOAD_MARKERS: [&str; 2] = ["config.json", "adapter_config.json"];
/// The export's staging directory inside the run folder, and the prefix of its leftovers.
const EXPORT_STAGING: &str = ".tmp-export";

/// [`export_with`] with no files besides the model and `rlhf.json`.
pub fn export(gpt: &Gpt, last_checkpoint: Option<&Path>, out: &Path) -> Result<()> {
    export_with(gpt, last_checkpoint, out, |_| Ok(()))
}

/// Writes the trained model into the run folder itself, next to the final checkpoint's
/// `rlhf.json` (format version, stage, step, metrics, config), so that `out` is a complete,
/// self-describing checkpoint dir that later stages take as `--model`; `extra` writes the
/// stage's other files (tokenizer, `reward.json`, `value/`) into the directory it is given.
///
/// Crash-safe: everything is first written into `out/.tmp-export/` and fsynced; then the load
/// markers ([`LOAD_MARKERS`]) of an earlier export are deleted, every other file is renamed into
/// place, and the markers come last. A crash at any point leaves `out` either not loadable or
/// complete, never a model that loads with files missing or from two exports; `--resume`
/// redoes the export from the final checkpoint.
pub fn export_with(
    gpt: &Gpt,
    last_checkpoint: Option<&Path>,
    out: &Path,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    // Under data parallelism every rank holds the same model; rank 0 writes it.
    if !rlhf_model::dist::is_writer() {
        return Ok(());
    }
    fs::create_dir_all(out).map_err(|e| TrainError::io("create", out, e))?;
    remove_export_leftovers(out)?;
    let staging = out.join(EXPORT_STAGING);
    fs::create_dir(&staging).map_err(|e| TrainError::io("create", &staging, e))?;
    gpt.save(&staging)?;
    if let Some(ckpt) = last_checkpoint {
        let (src, dst) = (ckpt.join(INFO_FILE), staging.join(INFO_FILE));
        fs::copy(&src, &dst).map_err(|e| TrainError::io("copy", &src, e))?;
    }
    extra(&staging)?;
    sync_tree(&staging)?;
    publish(&staging, out, &mut || Ok(()))
}

/// Moves every entry of `staging` into `out` in the crash-safe order of [`export_with`] and
/// removes `staging`. `before` runs before each change to `out` (tests inject crashes there).
pub(crate) fn publish(
    staging: &Path,
    out: &Path,
    before: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    for marker in LOAD_MARKERS {
        let path = out.join(marker);
        if path.exists() {
            before()?;
            fs::remove_file(&path).map_err(|e| TrainError::io("remove", &path, e))?;
        }
    }
    sync_path(out)?;
    let entries = fs::read_dir(staging).map_err(|e| TrainError::io("list", staging, e))?;
    let mut names: Vec<OsString> = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| TrainError::io("list", staging, e))?;
    let is_marker = |n: &OsString| LOAD_MARKERS.iter().any(|m| n == m);
    names.sort_by_key(|n| (is_marker(n), n.clone()));
    for name in names {
        before()?;
        replace(&staging.join(&name), &out.join(&name))?;
    }
    sync_path(out)?;
    fs::remove_dir(staging).map_err(|e| TrainError::io("remove", staging, e))
}

/// Renames `src` onto `dst`; a directory that already exists there (`value/` of an earlier
/// export) is moved aside first, since a rename cannot replace a non-empty directory.
fn replace(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() && dst.exists() {
        let name = dst.file_name().unwrap_or_default().to_string_lossy();
        let old = dst.with_file_name(format!("{EXPORT_STAGING}-old-{name}"));
        fs::rename(dst, &old).map_err(|e| TrainError::io("move aside", dst, e))?;
        fs::rename(src, dst).map_err(|e| TrainError::io("rename into place", src, e))?;
        return fs::remove_dir_all(&old).map_err(|e| TrainError::io("remove", &old, e));
    }
    fs::rename(src, dst).map_err(|e| TrainError::io("rename into place", src, e))
}

/// What an interrupted export left in `out`: its staging directory and moved-aside entries.
fn remove_export_leftovers(out: &Path) -> Result<()> {
    let entries = fs::read_dir(out).map_err(|e| TrainError::io("list", out, e))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(EXPORT_STAGING)
        {
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| TrainError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [&str; 5] = [
        "config.json",
        "model.safetensors",
        "rlhf.json",
        "tokenizer.json",
        "value/model.safetensors",
    ];

    /// An export's files, each holding `version`.
    fn write_export(dir: &Path, version: &str) {
        fs::create_dir_all(dir.join("value")).unwrap();
        for f in FILES {
            fs::write(dir.join(f), version).unwrap();
        }
    }

    /// What a loader finds: nothing without `config.json`, else each file's contents.
    fn loadable(out: &Path) -> Option<Vec<Option<String>>> {
        out.join("config.json").exists().then(|| {
            FILES
                .iter()
                .map(|f| fs::read_to_string(out.join(f)).ok())
                .collect()
        })
    }

    /// A crash before each change `publish` makes to the run folder (simulated by an error
    /// there), over an empty folder and over an earlier export: whenever the folder loads, it
    /// holds one whole export, never a mix or a part.
    #[test]
    fn an_export_interrupted_anywhere_never_loads_half_written() {
        for earlier in [false, true] {
            for crash_at in 0.. {
                let tmp = tempfile::tempdir().unwrap();
                let out = tmp.path().join("run");
                fs::create_dir_all(&out).unwrap();
                if earlier {
                    write_export(&out, "old");
                }
                let staging = out.join(EXPORT_STAGING);
                write_export(&staging, "new");
                let mut changes = 0;
                let result = publish(&staging, &out, &mut || {
                    changes += 1;
                    match changes > crash_at {
                        true => Err(TrainError::Invalid("crash".into())),
                        false => Ok(()),
                    }
                });
                if let Some(files) = loadable(&out) {
                    let whole = |v: &str| files.iter().all(|f| f.as_deref() == Some(v));
                    assert!(
                        whole("new") || whole("old"),
                        "crash before change {crash_at} (earlier export: {earlier}): {files:?}"
                    );
                }
                if result.is_ok() {
                    let files = loadable(&out).expect("a finished export loads");
                    assert!(files.iter().all(|f| f.as_deref() == Some("new")));
                    assert!(!staging.exists());
                    assert!(crash_at >= FILES.len() - 1, "{crash_at} changes");
                    break;
                }
            }
        }
    }
}
