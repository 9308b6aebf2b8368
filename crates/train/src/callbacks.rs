//! Observers of the training loop: the [`Callback`] trait (any `FnMut(&Event)` is one), the
//! `metrics.jsonl` writer and the progress bar. Callbacks see events; they cannot change the
//! training state, which is what keeps checkpoint/resume exact.
//!
//! Not here: evaluation and checkpointing themselves (the trainer schedules both, because they
//! need the optimizer and data position).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::step::Metrics;

/// One optimizer step, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Optimizer steps completed, this one included (1 after the first update).
    pub step: u64,
    /// Weighted mean of the micro-batch losses.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Items (`StepOutput::tokens`) in this step.
    pub tokens: u64,
    pub tokens_per_s: f64,
    /// Training time since the run started, across resumes.
    pub elapsed_s: f64,
    /// The step's own metrics (`StepOutput::metrics`), averaged over its micro-batches.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// How a `fit` ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Optimizer steps completed in the run (including those before a resume).
    pub step: u64,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    /// The last step's record (`None` if no step ran in this process).
    pub last: Option<StepRecord>,
    /// The final checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// True when the data ran out before `max_steps`.
    pub data_exhausted: bool,
}

/// What happened in the loop.
#[derive(Debug)]
pub enum Event<'a> {
    /// Before the first step; `step` > 0 after a resume.
    Start {
        step: u64,
        max_steps: u64,
        run_dir: &'a Path,
    },
    Step(&'a StepRecord),
    /// Evaluation results (keys without the `eval/` prefix).
    Eval {
        step: u64,
        metrics: &'a Metrics,
    },
    Checkpoint {
        step: u64,
        dir: &'a Path,
    },
    End(&'a Summary),
}

/// Observes the loop. An error stops training (after the step it came from).
pub trait Callback {
    fn on_event(&mut self, event: &Event<'_>) -> Result<()>;
}

impl<F: FnMut(&Event<'_>) -> Result<()>> Callback for F {
    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        self(event)
    }
}

/// Appends one JSON line per step (and per evaluation, keys prefixed `eval/`) to
/// `<run>/metrics.jsonl`. On resume it first drops lines past the resumed step, so a crash after
/// the last checkpoint leaves no duplicated steps.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: Option<File>,
}

impl MetricsLog {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("metrics.jsonl"),
            file: None,
        }
    }

    /// Opens the log for appending, first dropping lines of steps after `resumed_at` (a crash
    /// after the last checkpoint leaves them; the resumed run writes them again).
    pub fn open(&mut self, resumed_at: u64) -> Result<()> {
        let io = |op, e| TrainError::io(op, &self.path, e);
        if self.path.exists() {
            let text = fs::read_to_string(&self.path).map_err(|e| io("read", e))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    let step = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(serde_json::Value::as_f64));
                    // PPO's lines are all numbers, so their step may be written as 2.0.
                    step.is_some_and(|s| s <= resumed_at as f64)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            // Atomically: a crash mid-rewrite must not lose the lines of the kept steps.
            crate::checkpoint::write_atomic(&self.path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io("open", e))?;
        self.file = Some(file);
        Ok(())
    }

    /// Appends one JSON line (after [`Self::open`]).
    pub fn append(&mut self, value: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(value)
            .map_err(|e| TrainError::Invalid(format!("cannot serialise a metrics line: {e}")))?;
        if let Some(file) = &mut self.file {
            writeln!(file, "{line}").map_err(|e| TrainError::io("append to", &self.path, e))?;
        }
        Ok(())
    }
}

impl Callback for MetricsLog {
    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        match event {
            Event::Start { step, .. } => self.open(*step),
            Event::Step(record) => self.append(record),
            Event::Eval { step, metrics } => {
                let mut line = serde_json::Map::new();
                line.insert("step".into(), (*step).into());
                for (k, v) in *metrics {
                    line.insert(format!("eval/{k}"), (*v).into());
                }
                self.append(&line)
            }
            _ => Ok(()),
        }
    }
}

/// An indicatif bar on stderr: step, loss, LR, tokens/s, ETA. Hidden when stderr is not a
/// terminal (logs and CI), where `metrics.jsonl` is the record.
#[derive(Debug, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Callback for Progress {
    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        match event {
            Event::Start {
                step, max_steps, ..
            } => {
                let style = ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                let bar = ProgressBar::new(*max_steps).with_style(style);
                bar.set_position(*step);
                bar.reset_eta();
                self.bar = Some(bar);
            }
            Event::Step(r) => {
                if let Some(bar) = &self.bar {
                    bar.set_position(r.step);
                    bar.set_message(format!(
                        "loss {:.4} lr {:.2e} {:.0} tok/s",
                        r.loss, r.lr, r.tokens_per_s
                    ));
                }
            }
            Event::Eval { step, metrics } => {
                if let Some(bar) = &self.bar {
                    let parts: Vec<String> =
                        metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                    bar.println(format!("step {step} eval: {}", parts.join(", ")));
                }
            }
            Event::Checkpoint { .. } => {}
            Event::End(_) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish();
                }
            }
        }
        Ok(())
    }
}
