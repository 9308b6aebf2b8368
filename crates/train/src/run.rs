//! The run folder, written by every training stage through this one piece of code: the resolved
//! `config.toml`, `metrics.jsonl`, atomic checkpoints under `checkpoints/` (pruned to the newest
//! few), and resume with its consistency checks: the checkpoint must come from the same stage,
//! the same configuration (up to the keys that may change between sessions, such as the number
//! of steps) and the same input models and data files (compared by fingerprint, so a moved
//! folder still resumes and a retrained one does not).
//!
//! Not here: the checkpoint format and its atomic write (`checkpoint.rs`), the training loops
//! (`trainer.rs`, `ppo.rs`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{self, CheckpointInfo, FORMAT_VERSION, OPTIMIZER_FILE};
use crate::data::DataPosition;
use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use crate::step::Metrics;

/// Where a run starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resume {
    /// A fresh run; the run directory must not hold checkpoints yet.
    #[default]
    No,
    /// The newest checkpoint of the run directory (an error if there is none).
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

/// Configuration keys (by their last path component) that may differ between a checkpoint and
/// the run resuming it: how long to run and how often to evaluate and checkpoint. Every other
/// key changes what the run computes, so a resume with another value is refused.
pub const MAY_CHANGE_ON_RESUME: [&str; 6] = [
    "max_steps",
    "iterations",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "rollout_staleness",
];

/// The key of a checkpoint's recorded config (`rlhf.json`, not `config.toml`) that holds the
/// products' precision (`rlhf_model::precision::run_tag`).
pub const PRECISION_KEY: &str = "precision";

/// The key under which a checkpoint's config records the number of data-parallel processes
/// that wrote it (1 for checkpoints from before data parallelism): with another number the
/// data would be split otherwise, so a resume must use the same one.
pub const WORLD_SIZE_KEY: &str = "world_size";

/// A model directory or data file a run was started from, identified by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInput {
    /// What the run uses it as ("model", "policy", "reward", "data", ...). The reward is a
    /// model directory, or a scorer's name with a fingerprint of that name.
    pub role: String,
    pub path: PathBuf,
    /// FNV-1a over the size and the first and last MiB of each file (`config.json` and the
    /// weights for a model directory), as hex.
    pub fingerprint: String,
}

impl RunInput {
    /// Fingerprints a model directory (its `config.json` and `*.safetensors`) or a file. A
    /// path that does not exist gets the fingerprint "absent" (the loader then says what is
    /// missing, better than a fingerprint could).
    pub fn new(role: &str, path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self {
                role: role.into(),
                path: path.to_path_buf(),
                fingerprint: "absent".into(),
            });
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| TrainError::io("list", path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().is_some_and(|n| n == "config.json")
                        || p.extension().is_some_and(|e| e == "safetensors")
                })
                .collect();
            f.sort();
            f
        } else {
            vec![path.to_path_buf()]
        };
        for file in &files {
            parts.push(file_sample(file)?);
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Ok(Self {
            role: role.into(),
            path: path.to_path_buf(),
            fingerprint: format!("{:016x}", rlhf_data::rng::fnv1a(&refs)),
        })
    }

    /// The reward a run optimises (role "reward"): the reward model's directory when the
    /// scorer is one, else the scorer's name ("oracle", "answer"), so that a resume cannot
    /// switch rewards unseen.
    pub fn reward(scorer: &dyn rlhf_eval::Scorer) -> Result<Self> {
        match scorer.source() {
            Some(dir) => Self::new("reward", dir),
            None => Ok(Self {
                role: "reward".into(),
                path: PathBuf::from(scorer.key()),
                fingerprint: format!(
                    "{:016x}",
                    rlhf_data::rng::fnv1a(&[b"scorer:", scorer.key().as_bytes()])
                ),
            }),
        }
    }
}

/// A file's length followed by its first and last MiB (the whole file when smaller).
fn file_sample(path: &Path) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io("read", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| TrainError::io("read", path, e))?
        .len();
    let mut out = len.to_le_bytes().to_vec();
    let io = |e| TrainError::io("read", path, e);
    if len <= 2 * MIB {
        f.read_to_end(&mut out).map_err(io)?;
    } else {
        let mut buf = vec![0; MIB as usize];
        f.read_exact(&mut buf).map_err(io)?;
        out.extend_from_slice(&buf);
        f.seek(SeekFrom::End(-(MIB as i64))).map_err(io)?;
        f.read_exact(&mut buf).map_err(io)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// Everything about a run that is not a hyper-parameter.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run folder: `config.toml`, `metrics.jsonl`, `checkpoints/`.
    pub dir: PathBuf,
    /// The command ("pretrain", "sft", "reward", "ppo"), recorded in checkpoints.
    pub stage: String,
    /// The command's whole resolved config (`config::to_table`), written to `config.toml` and
    /// into every checkpoint.
    pub config: toml::Table,
    /// The models and files the run reads; a resume must read the same ones.
    pub inputs: Vec<RunInput>,
    pub resume: Resume,
    /// Show the progress bar (it hides itself anyway when stderr is not a terminal).
    pub progress: bool,
}

impl RunOptions {
    pub fn new(dir: impl Into<PathBuf>, stage: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            stage: stage.into(),
            config: toml::Table::new(),
            inputs: Vec::new(),
            resume: Resume::No,
            progress: true,
        }
    }

    /// A stage's run: its whole resolved `config`, its inputs as (role, path) to fingerprint,
    /// and where it starts.
    pub fn stage<C: Serialize>(
        dir: impl Into<PathBuf>,
        stage: &str,
        config: &C,
        inputs: &[(&str, &Path)],
        resume: Resume,
    ) -> Result<Self> {
        Ok(Self {
            config: crate::config::to_table(config)?,
            inputs: inputs
                .iter()
                .map(|(role, path)| RunInput::new(role, path))
                .collect::<Result<_>>()?,
            resume,
            ..Self::new(dir, stage)
        })
    }
}

/// The checkpoint a run resumes from.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub dir: PathBuf,
    pub info: CheckpointInfo,
}

/// What a checkpoint records about the run's progress.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub step: u64,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    pub metrics: Metrics,
    pub data_position: DataPosition,
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    opts: RunOptions,
    config: Value,
}

impl RunDir {
    /// Creates the folder. A fresh run refuses a folder that already holds checkpoints and
    /// writes `config.toml` at once; a resume writes it only once [`Self::resume_point`] has
    /// accepted the checkpoint, so a refused resume leaves the folder as it was.
    ///
    /// Under data parallelism only rank 0 writes; the other ranks check the same things (a
    /// fresh run over checkpoints, a resume's config) and write nothing.
    pub fn create(opts: RunOptions) -> Result<Self> {
        if rlhf_model::dist::is_writer() {
            std::fs::create_dir_all(&opts.dir)
                .map_err(|e| TrainError::io("create the run directory", &opts.dir, e))?;
        }
        let mut config = serde_json::to_value(&opts.config)
            .map_err(|e| TrainError::Config(format!("cannot convert the config: {e}")))?;
        // The products' precision changes what a run computes: every checkpoint records it
        // beside the config, and a resume compares it. Not in `config.toml`, which stays a
        // valid `--config` file of the command.
        if let Value::Object(o) = &mut config {
            o.insert(
                PRECISION_KEY.into(),
                Value::String(rlhf_model::precision::run_tag()),
            );
            o.insert(
                WORLD_SIZE_KEY.into(),
                Value::from(rlhf_model::dist::world() as u64),
            );
        }
        let run = Self { opts, config };
        if run.opts.resume == Resume::No {
            if let Some(found) = checkpoint::latest(&run.opts.dir)? {
                return Err(TrainError::checkpoint(
                    &found,
                    "the run directory already holds checkpoints: resume the run (`--resume`), or start a \
                     fresh one in a new directory",
                ));
            }
            run.write_config()?;
        }
        Ok(run)
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    pub fn stage(&self) -> &str {
        &self.opts.stage
    }

    pub fn progress_bar(&self) -> bool {
        self.opts.progress
    }

    fn write_config(&self) -> Result<()> {
        if !rlhf_model::dist::is_writer() {
            return Ok(());
        }
        let text = toml::to_string(&self.opts.config)
            .map_err(|e| TrainError::Config(format!("cannot write the config as TOML: {e}")))?;
        checkpoint::write_atomic(&self.opts.dir.join("config.toml"), text.as_bytes())
    }

    /// The checkpoint to resume from (`None` for a fresh run), after checking that it was
    /// written by this stage, with this configuration and these inputs.
    pub fn resume_point(&self) -> Result<Option<ResumePoint>> {
        let dir = match &self.opts.resume {
            Resume::No => return Ok(None),
            Resume::Latest => checkpoint::latest(&self.opts.dir)?.ok_or_else(|| {
                TrainError::checkpoint(
                    checkpoint::checkpoints_dir(&self.opts.dir),
                    "no checkpoint to resume from (a step-* directory with rlhf.json)",
                )
            })?,
            Resume::From(dir) => dir.clone(),
        };
        let info = checkpoint::read_info(&dir)?;
        if info.stage != self.opts.stage {
            return Err(TrainError::checkpoint(
                &dir,
                format!(
                    "was written by stage '{}', this run is '{}'; to start a new stage from its \
                     weights, load the model as an initialisation instead of resuming",
                    info.stage, self.opts.stage
                ),
            ));
        }
        // Checkpoints from before `--precision` existed were all fp32.
        let mut old = info.config.clone();
        if let Value::Object(o) = &mut old {
            o.entry(PRECISION_KEY)
                .or_insert_with(|| Value::String("fp32".into()));
            o.entry(WORLD_SIZE_KEY).or_insert_with(|| Value::from(1u64));
        }
        let diffs = config_diff(&old, &self.config);
        if !diffs.is_empty() {
            return Err(TrainError::checkpoint(
                &dir,
                format!(
                    "was written with another configuration ({}; checkpoint vs now). Resume with \
                     the run's own config.toml (only {} may change), or start a fresh run in a \
                     new directory",
                    diffs.join(", "),
                    MAY_CHANGE_ON_RESUME.join(", ")
                ),
            ));
        }
        for old in &info.inputs {
            let Some(new) = self.opts.inputs.iter().find(|i| i.role == old.role) else {
                continue;
            };
            if new.fingerprint != old.fingerprint {
                return Err(TrainError::checkpoint(
                    &dir,
                    format!(
                        "was trained from another {} ({}, now {} with other contents); resume \
                         with the inputs the run started from, or start a fresh run in a new \
                         directory",
                        old.role,
                        old.path.display(),
                        new.path.display()
                    ),
                ));
            }
        }
        self.write_config()?;
        Ok(Some(ResumePoint { dir, info }))
    }

    /// Writes a checkpoint atomically (`fill` writes the model, optimizer and state files into
    /// a temporary directory), then prunes all but the newest `keep` (0 keeps all).
    pub fn save_checkpoint(
        &self,
        progress: Progress,
        keep: usize,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let info = CheckpointInfo {
            format_version: FORMAT_VERSION,
            stage: self.opts.stage.clone(),
            step: progress.step,
            tokens_seen: progress.tokens_seen,
            elapsed_s: progress.elapsed_s,
            metrics: progress.metrics,
            data_position: progress.data_position,
            config: self.config.clone(),
            inputs: self.opts.inputs.clone(),
        };
        if !rlhf_model::dist::is_writer() {
            // The other ranks hold the same state; they learn where rank 0 put it.
            return Ok(checkpoint::step_dir(&self.opts.dir, info.step));
        }
        let dir = checkpoint::write(&self.opts.dir, &info, fill)?;
        checkpoint::prune(&self.opts.dir, keep)?;
        Ok(dir)
    }
}

/// Loads `dir`'s optimizer state into `opt` and checks that it holds `step` updates (a
/// checkpoint assembled from two different ones would not).
pub fn load_optimizer(opt: &mut AdamW, dir: &Path, step: u64) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    let state = tch::Tensor::read_safetensors(&path)
        .map_err(|e| TrainError::checkpoint(&path, format!("cannot read optimizer state: {e}")))?;
    opt.load_state(state, &path)?;
    if opt.steps() != step {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "holds {} optimizer steps but rlhf.json says {step}: the files are from \
                 different checkpoints",
                opt.steps()
            ),
        ));
    }
    Ok(())
}

/// "lr 0.0003 vs 0.001" for every leaf of two configs that differs, except the keys in
/// [`MAY_CHANGE_ON_RESUME`]; dotted paths for nested keys.
pub fn config_diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    out
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    if MAY_CHANGE_ON_RESUME.contains(&leaf) {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                diff_into(&p, x, y, out);
            }
        }
        (a, b) if !same_value(a, b) => out.push(format!("{path} {a} vs {b}")),
        _ => {}
    }
}

/// Equal, with numbers compared as f64 (TOML may write 1.0 where JSON kept 1).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_differences_skip_the_keys_that_may_change() {
        let old = serde_json::json!({"lr": 1e-3, "iterations": 10,
            "trainer": {"max_steps": 5, "seed": 0, "betas": [0.9, 0.95]}});
        let new = serde_json::json!({"lr": 3e-4, "iterations": 20,
            "trainer": {"max_steps": 9, "seed": 1, "betas": [0.9, 0.95], "extra": true}});
        assert_eq!(
            config_diff(&old, &new),
            [
                "lr 0.001 vs 0.0003",
                "trainer.extra null vs true",
                "trainer.seed 0 vs 1"
            ]
        );
        assert!(config_diff(&old, &old).is_empty());
        assert!(
            config_diff(&serde_json::json!({"a": 1}), &serde_json::json!({"a": 1.0})).is_empty()
        );
    }

    #[test]
    fn fingerprints_follow_the_contents_not_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
        std::fs::write(&a, "{\"prompt\": \"x\"}\n").unwrap();
        std::fs::write(&b, "{\"prompt\": \"x\"}\n").unwrap();
        let (fa, fb) = (
            RunInput::new("data", &a).unwrap(),
            RunInput::new("data", &b).unwrap(),
        );
        assert_eq!(fa.fingerprint, fb.fingerprint);
        std::fs::write(&b, "{\"prompt\": \"y\"}\n").unwrap();
        assert_ne!(
            fa.fingerprint,
            RunInput::new("data", &b).unwrap().fingerprint
        );
        // Large files: the first and last MiB and the length.
        let big = vec![7u8; 3 << 20];
        std::fs::write(&a, &big).unwrap();
        let mut changed = big.clone();
        changed[(3 << 20) - 1] = 8;
        std::fs::write(&b, &changed).unwrap();
        assert_ne!(
            RunInput::new("data", &a).unwrap().fingerprint,
            RunInput::new("data", &b).unwrap().fingerprint
        );
    }
}
