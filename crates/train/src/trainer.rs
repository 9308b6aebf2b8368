//! The one training loop, for every stage: pull micro-batches, backward each with its loss
//! weight, clip, check for NaN, update (AdamW + warm-up/cosine LR), then evaluate, checkpoint and
//! tell the callbacks on schedule. It knows nothing of the algorithm (`TrainStep`) or the data
//! (`DataSource`).
//!
//! Exact resume: the optimizer state, the data position (with its Rust RNG) and the step are
//! checkpointed, and libtorch's generator, whose state tch cannot read, is reseeded before every
//! step from (seed, step). N steps + resume + N steps then equals 2N steps bit for bit on CPU.
//!
//! Data parallelism (`rlhf_model::dist`, launched by `rlhf launch` or torchrun): every rank runs
//! this loop on its shard of each global batch (the data sources' `sharded`); rank 0's weights
//! are broadcast once at the start; each step all-reduces the step's statistics (loss weight,
//! tokens, loss and metric sums) and then the flat gradient (in buckets), so every rank divides
//! by the global weight and takes the same update as one process on the global batch would.
//! Only rank 0 logs, shows progress and writes checkpoints.
//!
//! Cost per optimizer step beyond the model: ~10 kernels for AdamW on the flat buffer, one
//! `cat` of the gradients, a device-side norm, and one host sync (loss, norm, metrics together),
//! which the NaN check needs before the update.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::callbacks::{Callback, Event, MetricsLog, Progress, StepRecord, Summary};
use crate::config::{LossWeighting, TrainerConfig};
use crate::data::{DataPosition, DataSource};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, ClippedGradients, clip_grad_norm};
use crate::run::{self, RunDir};
pub use crate::run::{Resume, RunOptions};
use crate::schedule::LrSchedule;
use crate::step::{Metrics, StepOutput, TrainStep};

/// The generic trainer; see the crate docs for an example.
pub struct Trainer {
    cfg: TrainerConfig,
    run: RunDir,
    callbacks: Vec<Box<dyn Callback>>,
}

/// Progress of the run, as checkpointed.
struct State {
    step: u64,
    tokens_seen: u64,
    elapsed_before: f64,
    started: Instant,
    /// Latest step and eval metrics, for `rlhf.json`.
    metrics: Metrics,
    /// The data position after the last completed step.
    position: DataPosition,
    last_checkpoint: Option<PathBuf>,
}

impl State {
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }
}

impl Trainer {
    /// Checks the config and opens the run folder (`RunDir::create`): a fresh run refuses a
    /// directory that already holds checkpoints; a resume is checked when `fit` starts.
    pub fn new(cfg: TrainerConfig, run: RunOptions) -> Result<Self> {
        cfg.validate()?;
        let progress = run.progress;
        let run = RunDir::create(run)?;
        let mut callbacks: Vec<Box<dyn Callback>> = Vec::new();
        // Under data parallelism the other ranks would log the same global numbers again.
        if rlhf_model::dist::is_writer() {
            callbacks.push(Box::new(MetricsLog::new(run.dir())));
            if progress {
                callbacks.push(Box::new(Progress::default()));
            }
        }
        Ok(Self {
            cfg,
            run,
            callbacks,
        })
    }

    /// Adds an observer (after the built-in metrics log and progress bar).
    pub fn add_callback(&mut self, callback: impl Callback + 'static) -> &mut Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Trains `model` on `data` up to `max_steps` (or until the data runs out), evaluating and
    /// checkpointing on schedule and always checkpointing at the end.
    pub fn fit<S, D>(&mut self, model: &mut S, data: &mut D) -> Result<Summary>
    where
        S: TrainStep,
        D: DataSource<Batch = S::Batch>,
    {
        let mut opt = AdamW::new(model.parameters(), adamw_config(&self.cfg))?;
        opt.set_one_pass_clip(model.compute() == rlhf_model::Compute::Bf16);
        let mut st = self.restore(model, data, &mut opt)?;
        crate::parallel::start_from_rank0(&opt, rlhf_model::dist::group())?;
        let (max_steps, run_dir) = (self.cfg.max_steps, self.run.dir().to_path_buf());
        self.emit(&Event::Start {
            step: st.step,
            max_steps,
            run_dir: &run_dir,
        })?;
        let schedule = LrSchedule::new(&self.cfg);
        let (mut saved_at, mut last, mut exhausted) = (st.step, None, false);
        while st.step < max_steps {
            let lr = schedule.at(st.step);
            let ctx = StepContext {
                cfg: &self.cfg,
                lr,
                step: st.step + 1,
                last_checkpoint: st.last_checkpoint.as_deref(),
            };
            let Some((record, tokens)) = optimizer_step(&ctx, model, data, &mut opt)? else {
                exhausted = true;
                break;
            };
            st.step = record.step;
            st.tokens_seen += tokens;
            st.position = data.position();
            let record = StepRecord {
                elapsed_s: st.elapsed(),
                ..record
            };
            st.metrics.extend(step_metrics(&record));
            self.emit(&Event::Step(&record))?;
            last = Some(record);
            if every(self.cfg.eval_every, st.step) {
                self.evaluate(model, &mut st)?;
            }
            if every(self.cfg.checkpoint_every, st.step) {
                self.save(model, &opt, &mut st)?;
                saved_at = st.step;
            }
        }
        if saved_at != st.step {
            self.save(model, &opt, &mut st)?;
        }
        let summary = Summary {
            step: st.step,
            tokens_seen: st.tokens_seen,
            elapsed_s: st.elapsed(),
            last,
            checkpoint: st.last_checkpoint.clone(),
            data_exhausted: exhausted,
        };
        self.emit(&Event::End(&summary))?;
        Ok(summary)
    }

    fn emit(&mut self, event: &Event<'_>) -> Result<()> {
        self.callbacks
            .iter_mut()
            .try_for_each(|c| c.on_event(event))
    }

    fn evaluate<S: TrainStep>(&mut self, model: &mut S, st: &mut State) -> Result<()> {
        let metrics = tch::no_grad(|| model.eval())?;
        for (k, v) in &metrics {
            st.metrics.insert(format!("eval/{k}"), *v);
        }
        self.emit(&Event::Eval {
            step: st.step,
            metrics: &metrics,
        })
    }

    fn save<S: TrainStep>(&mut self, model: &S, opt: &AdamW, st: &mut State) -> Result<()> {
        let progress = run::Progress {
            step: st.step,
            tokens_seen: st.tokens_seen,
            elapsed_s: st.elapsed(),
            metrics: st.metrics.clone(),
            data_position: st.position.clone(),
        };
        let dir = self
            .run
            .save_checkpoint(progress, self.cfg.keep_checkpoints, |tmp| {
                rlhf_model::checkpoint::save_tensors(
                    &opt.state(),
                    &tmp.join(crate::checkpoint::OPTIMIZER_FILE),
                )?;
                model.save(tmp)
            })?;
        self.emit(&Event::Checkpoint {
            step: st.step,
            dir: &dir,
        })?;
        st.last_checkpoint = Some(dir);
        Ok(())
    }

    /// The state to start from: fresh, or everything a checkpoint holds put back in place.
    fn restore<S, D>(&self, model: &mut S, data: &mut D, opt: &mut AdamW) -> Result<State>
    where
        S: TrainStep,
        D: DataSource,
    {
        let mut st = State {
            step: 0,
            tokens_seen: 0,
            elapsed_before: 0.0,
            started: Instant::now(),
            metrics: Metrics::new(),
            position: data.position(),
            last_checkpoint: None,
        };
        let Some(point) = self.run.resume_point()? else {
            return Ok(st);
        };
        let (dir, info) = (point.dir, point.info);
        model.load(&dir)?;
        run::load_optimizer(opt, &dir, info.step)?;
        data.seek(&info.data_position)?;
        st.step = info.step;
        st.tokens_seen = info.tokens_seen;
        st.elapsed_before = info.elapsed_s;
        st.metrics = info.metrics;
        st.position = info.data_position;
        st.last_checkpoint = Some(dir);
        Ok(st)
    }
}

fn adamw_config(cfg: &TrainerConfig) -> AdamWConfig {
    AdamWConfig {
        betas: cfg.betas,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    }
}

/// True on multiples of `n`; `n = 0` means never.
fn every(n: u64, step: u64) -> bool {
    n > 0 && step % n == 0
}

fn step_metrics(r: &StepRecord) -> Metrics {
    let mut m = r.metrics.clone();
    m.insert("loss".into(), r.loss);
    m.insert("lr".into(), r.lr);
    m.insert("grad_norm".into(), r.grad_norm);
    m.insert("tokens_per_s".into(), r.tokens_per_s);
    m
}

/// libtorch's seed for step `step`: SplitMix64 of (seed, step), so that any randomness inside a
/// step (sampling, dropout) depends on nothing but the seed and the step number.
fn step_seed(seed: u64, step: u64) -> i64 {
    let mut z = seed.wrapping_add(step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as i64
}

/// What one optimizer step needs besides the model, data and optimizer.
struct StepContext<'a> {
    cfg: &'a TrainerConfig,
    lr: f64,
    /// The number this step will have once completed (1-based).
    step: u64,
    last_checkpoint: Option<&'a Path>,
}

/// Weighted sums over a step's micro-batches, kept on the device.
#[derive(Default)]
struct Accumulator {
    loss: Option<Tensor>,
    metrics: Vec<(String, Tensor)>,
    weight: f64,
    tokens: u64,
}

impl Accumulator {
    fn add(&mut self, out: &StepOutput, weight: f64) -> Result<()> {
        let loss = out.loss.f_detach()?.f_mul_scalar(weight)?;
        self.loss = Some(match self.loss.take() {
            Some(sum) => sum.f_add(&loss)?,
            None => loss,
        });
        for (name, value) in &out.metrics {
            let value = value.f_detach()?.f_mul_scalar(weight)?;
            match self.metrics.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum = sum.f_add(&value)?,
                None => self.metrics.push((name.clone(), value)),
            }
        }
        self.weight += weight;
        self.tokens += out.tokens as u64;
        Ok(())
    }

    /// Sums the weight, tokens, loss and metrics over the data-parallel ranks (one collective),
    /// so that the step divides by the global weight and logs global means.
    fn all_reduce(&mut self, group: &rlhf_model::dist::Group, step: u64) -> Result<()> {
        let Some(loss) = &self.loss else {
            return Ok(());
        };
        let device = loss.device();
        let mut parts = vec![
            Tensor::from(self.weight),
            Tensor::from(self.tokens as f64),
            loss.f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?
                .f_reshape([-1])?,
        ];
        for (name, value) in &self.metrics {
            if value.numel() != 1 {
                return Err(TrainError::Invalid(format!(
                    "'{name}' must be a scalar, got shape {:?}",
                    value.size()
                )));
            }
            let value = value.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
            parts.push(value.f_reshape([-1])?);
        }
        let parts: Vec<Tensor> = parts.iter().map(|t| t.reshape([-1])).collect();
        let packed = Tensor::f_cat(&parts, 0)?;
        group.all_reduce_sum(
            &packed,
            &format!("the all-reduce of step {step}'s statistics"),
        )?;
        let v = Vec::<f64>::try_from(&packed)?;
        self.weight = v[0];
        self.tokens = v[1].round() as u64;
        self.loss = Some(Tensor::from(v[2]).f_to_device(device)?);
        for (i, (_, value)) in self.metrics.iter_mut().enumerate() {
            *value = Tensor::from(v[3 + i]).f_to_device(device)?;
        }
        Ok(())
    }

    /// [mean loss, grad norm, mean metrics...] on the host: the step's one sync.
    fn read(&self, grad_norm: &Tensor) -> Result<Vec<f64>> {
        let device = grad_norm.device();
        let mut parts = Vec::with_capacity(self.metrics.len() + 2);
        let sums = self.loss.iter().chain(self.metrics.iter().map(|(_, t)| t));
        for (i, sum) in sums.enumerate() {
            let mean = sum.f_div_scalar(self.weight)?.f_to_kind(Kind::Double)?;
            let mean = mean
                .f_to_device(device)?
                .f_reshape([] as [i64; 0])
                .map_err(|_| {
                    let name = self.metrics.get(i.wrapping_sub(1)).map_or("loss", |m| &m.0);
                    TrainError::Invalid(format!(
                        "'{name}' must be a scalar, got shape {:?}",
                        sum.size()
                    ))
                })?;
            parts.push(mean);
            if i == 0 {
                parts.push(grad_norm.f_to_kind(Kind::Double)?);
            }
        }
        let host = Tensor::f_stack(&parts, 0)?.f_to_device(Device::Cpu)?;
        Ok(Vec::<f64>::try_from(&host)?)
    }
}

/// One optimizer step: `grad_accum` micro-batches, clip, NaN check, update. `None` when the data
/// ran out (the partial step's gradients are dropped). Returns the record (without elapsed time)
/// and the items consumed.
fn optimizer_step<S, D>(
    ctx: &StepContext<'_>,
    model: &mut S,
    data: &mut D,
    opt: &mut AdamW,
) -> Result<Option<(StepRecord, u64)>>
where
    S: TrainStep,
    D: DataSource<Batch = S::Batch>,
{
    let t0 = Instant::now();
    tch::manual_seed(step_seed(ctx.cfg.seed, ctx.step - 1));
    let mut acc = Accumulator::default();
    for _ in 0..ctx.cfg.grad_accum {
        let Some(batch) = data.next_batch()? else {
            opt.zero_grad();
            return Ok(None);
        };
        let out = model.loss(&batch)?;
        if out.tokens < 0 || out.loss.numel() != 1 {
            return Err(TrainError::Invalid(format!(
                "step {}: a step must return a scalar loss and tokens >= 0, got shape {:?} and {}",
                ctx.step,
                out.loss.size(),
                out.tokens
            )));
        }
        let weight = match ctx.cfg.loss_weighting {
            LossWeighting::Tokens => out.tokens as f64,
            LossWeighting::MicroBatch => 1.0,
        };
        out.loss.f_mul_scalar(weight)?.f_backward()?;
        acc.add(&out, weight)?;
    }
    if acc.weight <= 0.0 {
        return Err(TrainError::Invalid(format!(
            "step {}: the micro-batches covered 0 tokens (StepOutput::tokens), nothing to average",
            ctx.step
        )));
    }
    let group = rlhf_model::dist::group();
    if let Some(group) = group {
        acc.all_reduce(group, ctx.step)?;
    }
    let grad = match group {
        None => opt.clipped_gradients(1.0 / acc.weight, ctx.cfg.grad_clip)?,
        Some(group) => {
            let mut grad = opt.gradients(1.0 / acc.weight)?;
            // Each rank's sum over its shard, already divided by the global weight: their sum
            // is the global batch's gradient.
            group.all_reduce_sum(
                &grad,
                &format!("the gradient all-reduce of step {}", ctx.step),
            )?;
            let norm = clip_grad_norm(&mut grad, ctx.cfg.grad_clip)?;
            ClippedGradients::clipped(grad, norm)
        }
    };
    let values = acc.read(&grad.norm)?;
    let (loss, grad_norm) = (values[0], values[1]);
    for (what, value) in [("the loss", loss), ("the gradient norm", grad_norm)] {
        if !value.is_finite() {
            opt.zero_grad();
            return Err(TrainError::NonFinite {
                step: ctx.step,
                what,
                value,
                last_checkpoint: ctx.last_checkpoint.map(Path::to_path_buf),
            });
        }
    }
    opt.step_clipped(&grad, ctx.lr)?;
    opt.zero_grad();
    let seconds = t0.elapsed().as_secs_f64();
    let metrics = acc
        .metrics
        .iter()
        .map(|(n, _)| n.clone())
        .zip(values[2..].iter().copied());
    let record = StepRecord {
        step: ctx.step,
        loss,
        lr: ctx.lr,
        grad_norm,
        tokens: acc.tokens,
        tokens_per_s: acc.tokens as f64 / seconds.max(1e-9),
        elapsed_s: 0.0,
        metrics: metrics.collect(),
    };
    Ok(Some((record, acc.tokens)))
}

/// Runs `steps` optimizer steps of `model` on `data` with `cfg`'s optimizer, schedule and
/// accumulation, writing nothing (no run directory, log or checkpoint): for benchmarks. Each
/// record's `tokens_per_s` times that step alone, host sync included; `elapsed_s` is cumulative.
pub fn run_steps<S, D>(
    cfg: &TrainerConfig,
    model: &mut S,
    data: &mut D,
    steps: u64,
) -> Result<Vec<StepRecord>>
where
    S: TrainStep,
    D: DataSource<Batch = S::Batch>,
{
    run_steps_with(cfg, model, data, steps, |_| {})
}

/// [`run_steps`] calling `on_step` after every step (for a progress bar): in-memory training
/// for experiments that train many small models and keep none on disk.
pub fn run_steps_with<S, D>(
    cfg: &TrainerConfig,
    model: &mut S,
    data: &mut D,
    steps: u64,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<Vec<StepRecord>>
where
    S: TrainStep,
    D: DataSource<Batch = S::Batch>,
{
    cfg.validate()?;
    let mut opt = AdamW::new(model.parameters(), adamw_config(cfg))?;
    opt.set_one_pass_clip(model.compute() == rlhf_model::Compute::Bf16);
    let schedule = LrSchedule::new(cfg);
    let started = Instant::now();
    let mut records = Vec::new();
    for step in 0..steps {
        let ctx = StepContext {
            cfg,
            lr: schedule.at(step),
            step: step + 1,
            last_checkpoint: None,
        };
        let Some((record, _)) = optimizer_step(&ctx, model, data, &mut opt)? else {
            break;
        };
        let record = StepRecord {
            elapsed_s: started.elapsed().as_secs_f64(),
            ..record
        };
        on_step(&record);
        records.push(record);
    }
    Ok(records)
}
