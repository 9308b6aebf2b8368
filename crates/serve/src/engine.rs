//! The inference engine: one thread owns the model and decodes every waiting request together in
//! one batch with the KV cache, each row with its own sampling settings and its own seeded random
//! stream (so a seeded request gives the same tokens whatever it is batched with), and reports
//! each row's text as it grows.
//!
//! Requests that arrive while a batch runs join it at the next decoding step when they fit
//! (continuous batching: they are prefilled and their cache rows right-aligned with the running
//! ones); the HTTP side never blocks on the model. Finished rows and rows whose client went away
//! leave the batch, and the cache drops the padding no row needs any more.
//!
//! Not here: HTTP and the wire format (`api.rs`), stop-sequence bookkeeping (`text.rs`).
//!
//! Shapes: B rows in the batch, P prompt length (padded), V vocab.
//!
//! Not here either: choosing tokens (`sampler.rs`).

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlhf_model::sample::left_pad;
use rlhf_model::{Batch, Gpt, Head, KvCache, Pretrained};
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use crate::error::{Result, ServeError};
use crate::sampler::Knobs;
use crate::text::StopText;

/// How one request samples (already validated by the API).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 1 = no nucleus filtering.
    pub top_p: f64,
    /// Seeds the request's random stream; `None` draws one.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Report each sampled token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    /// (token id, bias) pairs added to the logits before penalties, temperature and top_p
    /// (OpenAI's `logit_bias`; ids checked against the vocabulary by the API).
    pub logit_bias: Vec<(i64, f32)>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            stop: vec![],
            logprobs: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: vec![],
        }
    }
}

/// One prompt to complete `n` times.
#[derive(Debug)]
pub struct Job {
    pub prompt: Vec<i64>,
    pub n: usize,
    /// Index of this job's first choice in its events (a completions request with several
    /// prompts shares one channel: prompt i's choices start at i × n).
    pub first_choice: usize,
    pub params: Params,
    /// Where the job's events go. Bounded (`EVENT_BUFFER`): the engine never waits for a
    /// client, and a row whose client reads too slowly to take its events is ended, so a slow
    /// reader costs at most the buffer.
    pub events: Sender<Event>,
    /// The LoRA adapter to decode with, by the name it was loaded under; `None`: the model.
    pub adapter: Option<String>,
}

/// A change to the engine's LoRA adapters, applied between batches; `reply` gets the outcome.
#[derive(Debug)]
pub enum AdapterOp {
    Load {
        name: String,
        path: PathBuf,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Unload {
        name: String,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

/// Events buffered per request (its channel's capacity): far more than a client that keeps up
/// ever has waiting (one per row per decoding step).
pub const EVENT_BUFFER: usize = 4096;

/// What the engine thread receives.
#[derive(Debug)]
enum Msg {
    Job(Job),
    Adapter(AdapterOp),
}

/// A generated token as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// The token's id in the model's vocabulary.
    pub id: i64,
    pub text: String,
    /// Log-probability under the model's own distribution (before temperature and filtering).
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What the engine tells a request, per choice (0..n).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New final text, with the tokens generated since the last event (when logprobs were asked).
    Delta {
        choice: usize,
        text: String,
        tokens: Vec<TokenInfo>,
    },
    /// The choice is complete: "stop" or "length", and how many tokens it generated.
    Finished {
        choice: usize,
        reason: &'static str,
        tokens: usize,
    },
    /// The batch failed; no more events follow.
    Failed(String),
}

/// Limits of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Rows (choices) decoded together. 64 keeps a CPU busy without making one step slow.
    pub max_batch_rows: usize,
    /// Jobs (prompts) allowed to wait for a batch, counted until they start decoding or their
    /// client leaves; beyond that `submit` refuses (the API answers 503).
    pub max_queue: usize,
    /// Let requests join a running batch at the next step (continuous batching); when false
    /// they wait for the batch to finish (static batching, kept for comparison).
    pub continuous: bool,
    /// LoRA adapters loaded at start, by name (requests pick one with `model: NAME`).
    pub adapters: Vec<(String, PathBuf)>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_rows: 64,
            max_queue: 4096,
            continuous: true,
            adapters: vec![],
        }
    }
}

/// The handle the HTTP side holds: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Msg>,
    state: Arc<Shared>,
    max_queue: usize,
    /// The model's context (positions).
    pub context: usize,
}

/// What the engine thread and the handles share.
#[derive(Default)]
struct Shared {
    /// Jobs submitted and not yet decoding (in the channel or deferred by the worker).
    queued: AtomicUsize,
    /// Of those, the ones the worker holds (taken from the channel, waiting for room).
    deferred: AtomicUsize,
    /// The engine thread is running.
    alive: AtomicBool,
    /// Batches that failed (an error or a panic) since the start.
    failed_batches: AtomicUsize,
    /// Test hook: the next batch panics (as a libtorch abort-by-panic would).
    fault: AtomicBool,
}

/// Marks the engine dead when its thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// What `/health` reports about the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub alive: bool,
    pub queued: usize,
    /// Of `queued`, the jobs the engine took but could not fit into a batch yet.
    pub deferred: usize,
    pub max_queue: usize,
    /// Batches that failed (an error or a panic). Counted once the batch has unwound, so a
    /// client can see its request fail a moment before the count includes it.
    pub failed_batches: usize,
}

impl Engine {
    /// Loads the checkpoint on a new thread and starts serving jobs; returns when the model is
    /// loaded (or failed to load).
    pub fn start(dir: PathBuf, device: Device, cfg: EngineConfig) -> Result<Engine> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize>>();
        let state = Arc::new(Shared::default());
        state.alive.store(true, Ordering::SeqCst);
        let shared = state.clone();
        let rows = cfg.max_batch_rows.max(1);
        let continuous = cfg.continuous;
        let adapters = cfg.adapters.clone();
        std::thread::Builder::new()
            .name("rlhf-engine".into())
            .spawn(move || {
                let _alive = AliveGuard(shared.clone());
                let loaded = Pretrained::load(&dir, Head::Lm, device)
                    .map_err(ServeError::from)
                    .and_then(|pre| {
                        let mut decoder = Decoder::new(pre);
                        for (name, path) in adapters {
                            decoder.load_adapter(&name, &path)?;
                        }
                        Ok(decoder)
                    });
                let decoder = match loaded {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(decoder.context()));
                Worker {
                    decoder,
                    max_rows: rows,
                    continuous,
                    deferred: VecDeque::new(),
                    control: VecDeque::new(),
                    shared,
                }
                .run(rx);
            })
            .map_err(|e| ServeError::Io("spawning the engine thread".into(), e))?;
        let context = ready_rx
            .recv()
            .map_err(|_| ServeError::Engine("the engine thread died while loading".into()))??;
        Ok(Engine {
            tx,
            state,
            max_queue: cfg.max_queue,
            context,
        })
    }

    /// Queues a job; `Err(Overloaded)` when the queue is full, `Err(Engine)` when the engine
    /// stopped.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.submit_all(vec![job])
    }

    /// Queues all of a request's jobs or none: their queue slots are reserved in one atomic
    /// step, so concurrent requests can never together pass `max_queue`.
    pub fn submit_all(&self, jobs: Vec<Job>) -> Result<()> {
        if !self.state.alive.load(Ordering::SeqCst) {
            return Err(ServeError::Engine("the engine has stopped".into()));
        }
        let k = jobs.len();
        let max = self.max_queue;
        self.state
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + k <= max).then_some(q + k)
            })
            .map_err(|_| ServeError::Overloaded)?;
        for (i, job) in jobs.into_iter().enumerate() {
            if self.tx.send(Msg::Job(job)).is_err() {
                self.state.queued.fetch_sub(k - i, Ordering::SeqCst);
                return Err(ServeError::Engine("the engine has stopped".into()));
            }
        }
        Ok(())
    }

    /// The engine's state for `/health`.
    pub fn health(&self) -> Health {
        Health {
            alive: self.state.alive.load(Ordering::SeqCst),
            queued: self.state.queued.load(Ordering::SeqCst),
            deferred: self.state.deferred.load(Ordering::SeqCst),
            max_queue: self.max_queue,
            failed_batches: self.state.failed_batches.load(Ordering::SeqCst),
        }
    }

    /// Test hook: makes the next batch panic inside the engine thread.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.state.fault.store(true, Ordering::SeqCst);
    }

    /// Loads the LoRA adapter in `path` under `name` (after the running batch finishes).
    pub async fn load_adapter(&self, name: String, path: PathBuf) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control(AdapterOp::Load { name, path, reply }, rx)
            .await
    }

    /// Drops the adapter `name`; requests already queued for it fail.
    pub async fn unload_adapter(&self, name: String) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control(AdapterOp::Unload { name, reply }, rx).await
    }

    async fn control(
        &self,
        op: AdapterOp,
        rx: tokio::sync::oneshot::Receiver<Result<()>>,
    ) -> Result<()> {
        let stopped = || ServeError::Engine("the engine has stopped".into());
        self.tx.send(Msg::Adapter(op)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// What a running batch can still take (see `Decoder::run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Rows decoding now.
    pub active_rows: usize,
    /// Slots the batch's KV cache holds now.
    pub len: usize,
    /// Most tokens a running row may still generate.
    pub remaining: usize,
    /// The model's context.
    pub context: usize,
}

impl Room {
    /// Whether `job` can join: its prompt and answer, and everyone else's, fit the context once
    /// right-aligned in one cache, and `max_rows` is not exceeded.
    pub fn fits(&self, job: &Job, max_rows: usize) -> bool {
        self.active_rows + job.n <= max_rows
            && self.len.max(job.prompt.len()) + self.remaining.max(job.params.max_tokens)
                <= self.context
    }
}

/// One row of a batch: a choice of a job.
pub(crate) struct Row {
    job: usize,
    choice: usize,
    pub(crate) rng: ChaCha8Rng,
    generated: Vec<i64>,
    text: StopText,
    pending: Vec<TokenInfo>,
}

struct Worker {
    decoder: Decoder,
    max_rows: usize,
    continuous: bool,
    /// Jobs that did not fit into the last batch, first in the next.
    deferred: VecDeque<Job>,
    /// Adapter changes that arrived during a batch, applied after it.
    control: VecDeque<AdapterOp>,
    shared: Arc<Shared>,
}

/// A model with what decoding needs to know about its tokenizer; runs one batch at a time.
pub struct Decoder {
    pre: Pretrained,
    eos: Vec<i64>,
    pad: i64,
    /// LoRA adapters by name, each on the model's base weights (shared, not copied).
    adapters: HashMap<String, Gpt>,
}

impl Decoder {
    pub fn new(pre: Pretrained) -> Self {
        let eos = pre.eos_ids();
        let tok = &pre.tokenizer;
        let pad = tok.padding_id();
        Self {
            pre,
            eos,
            pad,
            adapters: HashMap::new(),
        }
    }

    /// Loads the PEFT adapter in `path` on the model's base weights under `name`.
    pub fn load_adapter(&mut self, name: &str, path: &std::path::Path) -> Result<()> {
        if self.adapters.contains_key(name) {
            return Err(ServeError::Adapter(format!(
                "the LoRA adapter `{name}` is already loaded"
            )));
        }
        let mut model = self.pre.model.base_view()?;
        model
            .load_adapter(path)
            .map_err(|e| ServeError::Adapter(format!("cannot load `{name}`: {e}")))?;
        self.adapters.insert(name.to_string(), model);
        Ok(())
    }

    /// Drops the adapter `name`.
    pub fn unload_adapter(&mut self, name: &str) -> Result<()> {
        match self.adapters.remove(name) {
            Some(_) => Ok(()),
            None => Err(ServeError::AdapterNotFound(name.to_string())),
        }
    }

    /// The model a job decodes with: its adapter's, or the plain one.
    fn model(&self, adapter: Option<&String>) -> Result<&Gpt> {
        match adapter {
            None => Ok(&self.pre.model),
            Some(name) => self
                .adapters
                .get(name)
                .ok_or_else(|| ServeError::AdapterNotFound(name.clone())),
        }
    }

    fn apply(&mut self, op: AdapterOp) {
        match op {
            AdapterOp::Load { name, path, reply } => {
                let _ = reply.send(self.load_adapter(&name, &path));
            }
            AdapterOp::Unload { name, reply } => {
                let _ = reply.send(self.unload_adapter(&name));
            }
        }
    }

    pub fn context(&self) -> usize {
        self.pre.model.cfg.max_positions as usize
    }

    /// Decodes `jobs` together to the end, sending their events. Every prompt plus its
    /// max_tokens must fit the context (the API checks), and so must the longest prompt plus the
    /// longest answer (`Room::fits`).
    pub fn run_batch(&self, jobs: Vec<Job>) -> Result<()> {
        self.run(jobs, |_| vec![])
    }

    /// Like `run_batch`, and before every decoding step asks `admit` for more jobs that fit the
    /// room left; they are prefilled and join the running batch (continuous batching).
    /// On an error every job of the batch is told (`Event::Failed`).
    pub fn run(&self, jobs: Vec<Job>, admit: impl FnMut(&Room) -> Vec<Job>) -> Result<()> {
        let mut jobs = jobs;
        let result = self.decode_batch(&mut jobs, admit);
        if let Err(e) = &result {
            for job in &jobs {
                let _ = job.events.try_send(Event::Failed(e.to_string()));
            }
        }
        result
    }

    fn decode_batch(
        &self,
        jobs: &mut Vec<Job>,
        mut admit: impl FnMut(&Room) -> Vec<Job>,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        // Every job of a batch decodes with the same adapter (`Worker::gather` and `admit`).
        let model = self.model(jobs.first().and_then(|j| j.adapter.as_ref()))?;
        // In bf16 the decode kernels read bf16 copies of the weights for this batch's steps
        // (adapters change only between batches, and never the base weights).
        let _mirrors = model.decode_mirrors();
        let dev = model.device();
        let mut rows: Vec<Row> = Vec::new();
        let longest = jobs.iter().map(|j| j.params.max_tokens).max().unwrap_or(1) as i64;
        let (mut cache, mut logits) = self.prefill(model, jobs, 0, &mut rows, longest)?;
        let mut active: Vec<usize> = (0..rows.len()).collect();
        let params: Vec<&Params> = rows.iter().map(|r| &jobs[r.job].params).collect();
        let mut knobs = Knobs::new(&params, logits.size()[1], dev);
        while !active.is_empty() {
            let remaining = active
                .iter()
                .map(|&r| jobs[rows[r].job].params.max_tokens - rows[r].generated.len())
                .max()
                .unwrap_or(0);
            let room = Room {
                active_rows: active.len(),
                len: cache.len() as usize,
                remaining,
                context: self.context(),
            };
            let new = admit(&room);
            if !new.is_empty() {
                let (first_job, first_row) = (jobs.len(), rows.len());
                jobs.extend(new);
                let (fresh, fresh_logits) =
                    self.prefill(model, &jobs[first_job..], first_job, &mut rows, 0)?;
                let longest = jobs[first_job..].iter().map(|j| j.params.max_tokens).max();
                let len = cache.len().max(fresh.len());
                let capacity = len + remaining.max(longest.unwrap_or(0)) as i64;
                cache = KvCache::concat_rows(&cache, &fresh, capacity)?;
                logits = Tensor::cat(&[&logits, &fresh_logits], 0);
                let params: Vec<&Params> = rows[first_row..]
                    .iter()
                    .map(|r| &jobs[r.job].params)
                    .collect();
                knobs.append(Knobs::new(&params, logits.size()[1], dev));
                active.extend(first_row..rows.len());
            }
            let (tok, picked) = knobs.choose(&logits, &mut rows, &active)?;
            let toks = Vec::<i64>::try_from(&tok.to_device(Device::Cpu))?;
            let mut keep = Vec::with_capacity(active.len());
            for (slot, &r) in active.iter().enumerate() {
                let want = jobs[rows[r].job].params.logprobs;
                let info = match (&picked, want) {
                    (Some(p), Some(k)) => Some(p.info(slot, k, &self.pre)?),
                    _ => None,
                };
                if self.advance(&mut rows[r], jobs, toks[slot], info)? {
                    keep.push(slot as i64);
                }
            }
            if keep.is_empty() {
                break;
            }
            let next = tok.unsqueeze(1); // (B, 1)
            let next = if keep.len() < active.len() {
                let index = Tensor::from_slice(&keep).to_device(dev);
                cache.select_rows(&index);
                cache.trim_left()?;
                knobs.select(&index);
                active = keep.iter().map(|&s| active[s as usize]).collect();
                next.index_select(0, &index)
            } else {
                next
            };
            knobs.count(&next);
            let batch = Batch {
                input_ids: &next,
                attention_mask: None,
            };
            logits = model
                .forward(batch, Some(&mut cache))?
                .select(1, 0)
                .to_kind(Kind::Float);
        }
        Ok(())
    }

    /// Rows for `jobs` (numbered from `job_offset`) appended to `rows`, their prompts run
    /// through the model: a cache of the padded prompts plus `room` free slots, and the
    /// next-token logits (B, V).
    fn prefill(
        &self,
        model: &Gpt,
        jobs: &[Job],
        job_offset: usize,
        rows: &mut Vec<Row>,
        room: i64,
    ) -> Result<(KvCache, Tensor)> {
        let mut prompts: Vec<Vec<i64>> = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let base = job.params.seed.unwrap_or_else(|| rand::rng().random());
            for choice in 0..job.n {
                rows.push(Row {
                    job: job_offset + j,
                    choice,
                    // Choice i of a seeded request always draws from the same stream.
                    rng: ChaCha8Rng::seed_from_u64(base.wrapping_add(choice as u64)),
                    generated: vec![],
                    text: StopText::new(job.params.stop.clone()),
                    pending: vec![],
                });
                prompts.push(job.prompt.clone());
            }
        }
        let (ids, mask) = left_pad(&prompts, self.pad, model.device())?;
        let (b, p) = ids.size2()?;
        let mut cache = model.new_cache(b, p + room);
        let batch = Batch {
            input_ids: &ids,
            attention_mask: Some(&mask),
        };
        let hidden = model
            .forward_hidden(batch, Some(&mut cache))?
            .select(1, p - 1); // (B, C)
        let logits = model.lm_logits(&hidden)?.to_kind(Kind::Float); // (B, V)
        Ok((cache, logits))
    }

    /// Adds a sampled token to a row and tells its client; false when the row is finished.
    fn advance(
        &self,
        row: &mut Row,
        jobs: &[Job],
        token: i64,
        info: Option<TokenInfo>,
    ) -> Result<bool> {
        let job = &jobs[row.job];
        let events = &job.events;
        if events.is_closed() {
            return Ok(false); // the client left
        }
        let choice = job.first_choice + row.choice;
        let eos = self.eos.contains(&token);
        if !eos {
            // EOS is counted but, having no text, is not reported among the tokens.
            row.generated.push(token);
            row.pending.extend(info);
        }
        let n = row.generated.len() + usize::from(eos);
        let full = self.decode(&row.generated)?;
        let (delta, reason) = if eos {
            (row.text.finish(&full), Some("stop"))
        } else {
            let step = row.text.push(&full);
            if step.stopped {
                (step.delta, Some("stop"))
            } else if n >= job.params.max_tokens {
                let mut delta = step.delta;
                delta.push_str(&row.text.finish(&full));
                (delta, Some("length"))
            } else {
                (step.delta, None)
            }
        };
        // A full buffer means the client reads too slowly: its row ends here (the reply sees
        // the answer end early and says so) rather than the engine buffering without bound.
        let sent = |e: Event| !matches!(events.try_send(e), Err(TrySendError::Full(_)));
        if (!delta.is_empty() || (reason.is_some() && !row.pending.is_empty()))
            && !sent(Event::Delta {
                choice,
                text: delta,
                tokens: std::mem::take(&mut row.pending),
            })
        {
            return Ok(false);
        }
        if let Some(reason) = reason {
            sent(Event::Finished {
                choice,
                reason,
                tokens: n,
            });
            return Ok(false);
        }
        Ok(true)
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        Ok(self.pre.tokenizer.decode(&ids, true)?)
    }
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // A job counts as queued from `submit` until it starts decoding or is dropped because
        // its client left (deferred jobs included, so `max_queue` bounds everything waiting).
        // Adapter changes wait in `control` until the running batch is done.
        let mut control = VecDeque::new();
        let received = |msg: Msg, control: &mut VecDeque<AdapterOp>| match msg {
            Msg::Job(job) => Some(job),
            Msg::Adapter(op) => {
                control.push_back(op);
                None
            }
        };
        let shared = self.shared.clone();
        let left = |n: usize| {
            shared.queued.fetch_sub(n, Ordering::SeqCst);
        };
        loop {
            for op in self.control.drain(..).chain(control.drain(..)) {
                self.decoder.apply(op);
            }
            // Jobs whose clients left while they waited free their slots.
            let before = self.deferred.len();
            self.deferred.retain(|j| !j.events.is_closed());
            left(before - self.deferred.len());
            let first = match self.deferred.pop_front() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(msg) => match received(msg, &mut control) {
                        Some(job) => job,
                        None => continue,
                    },
                    Err(_) => return, // every handle dropped: shut down
                },
            };
            let mut pending = VecDeque::new();
            let jobs = self.gather(first, || {
                loop {
                    let msg = rx.try_recv().ok()?;
                    if let Some(job) = received(msg, &mut pending) {
                        return Some(job);
                    }
                }
            });
            self.control.extend(pending);
            left(jobs.len());
            self.shared
                .deferred
                .store(self.deferred.len(), Ordering::SeqCst);
            let live: Vec<Job> = jobs.into_iter().filter(|j| !j.events.is_closed()).collect();
            if live.is_empty() {
                continue;
            }
            let adapter = live[0].adapter.clone();
            let (max_rows, continuous) = (self.max_rows, self.continuous);
            let deferred = &mut self.deferred;
            let held = &mut self.control;
            // Requests that arrive while the batch runs join it at the next step if they fit
            // and decode with the batch's adapter; the first that does not waits (in order).
            let mut since = 0usize;
            let admit = |room: &Room| {
                let mut taken = Vec::new();
                // Joining costs a prefill and a copy of the cache: a batch at least half full
                // takes newcomers every 4th step, so that they come in groups.
                since += 1;
                if !continuous || (room.active_rows * 2 > max_rows && since < 4) {
                    return taken;
                }
                let mut room = *room;
                let mut skipped = VecDeque::new();
                loop {
                    let job = match deferred.pop_front() {
                        Some(job) => job,
                        None => match rx.try_recv() {
                            Ok(msg) => match received(msg, held) {
                                Some(job) => job,
                                None => continue,
                            },
                            Err(_) => break,
                        },
                    };
                    if job.events.is_closed() {
                        left(1);
                        continue;
                    }
                    if job.adapter == adapter && room.fits(&job, max_rows) {
                        room.active_rows += job.n;
                        room.len = room.len.max(job.prompt.len());
                        room.remaining = room.remaining.max(job.params.max_tokens);
                        left(1);
                        taken.push(job);
                    } else {
                        skipped.push_back(job);
                        break;
                    }
                }
                skipped.extend(deferred.drain(..));
                *deferred = skipped;
                shared.deferred.store(deferred.len(), Ordering::SeqCst);
                if !taken.is_empty() {
                    since = 0;
                }
                taken
            };
            let fault = self.shared.fault.swap(false, Ordering::SeqCst);
            let decoder = &self.decoder;
            // A panic inside a batch (a libtorch error surfacing as a panic, an out-of-memory
            // on CUDA) ends that batch only: its requests get an error (their channels close
            // unfinished) and the engine goes on with the next one.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(move || {
                if fault {
                    panic!("injected engine fault (test hook)");
                }
                decoder.run(live, admit)
            }));
            let failed = match outcome {
                Ok(Ok(())) => false,
                Ok(Err(e)) => {
                    tracing::error!("a batch failed: {e}");
                    true
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    tracing::error!("a batch panicked and was abandoned: {what}");
                    true
                }
            };
            if failed {
                self.shared.failed_batches.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The batch: `first` plus whatever is waiting for the same adapter, as long as the rows
    /// fit and every prompt plus the longest answer fits the context (left padding shares one
    /// cache length).
    fn gather(&mut self, first: Job, mut waiting: impl FnMut() -> Option<Job>) -> Vec<Job> {
        let context = self.decoder.context();
        let (mut rows, mut longest_prompt, mut longest_answer) =
            (first.n, first.prompt.len(), first.params.max_tokens);
        let adapter = first.adapter.clone();
        let mut jobs = vec![first];
        let mut skipped = VecDeque::new();
        while rows < self.max_rows {
            let Some(job) = self.deferred.pop_front().or_else(&mut waiting) else {
                break;
            };
            if job.events.is_closed() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let p = longest_prompt.max(job.prompt.len());
            let a = longest_answer.max(job.params.max_tokens);
            if job.adapter != adapter || rows + job.n > self.max_rows || p + a > context {
                skipped.push_back(job);
                continue;
            }
            (rows, longest_prompt, longest_answer) = (rows + job.n, p, a);
            jobs.push(job);
        }
        skipped.extend(self.deferred.drain(..));
        self.deferred = skipped;
        jobs
    }
}
