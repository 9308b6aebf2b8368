//! Shared test fixtures: a tiny Llama-family model, a next-token `TrainStep` over it with fault
//! injection (NaN loss, failing save), and a data source replaying fixed batches.
//!
//! libtorch's random generator is global to the process, and the tests of one binary run in
//! parallel threads: a model initialised by `manual_seed(s)` then `Gpt::new` gets whatever another
//! thread's draws (or the trainer's per-step reseeding) left it. So models here draw their
//! initial weights from a Rust RNG ([`seeded_gpt`], [`Lm::new`]), and a test whose result depends
//! on the generator's draws (sampling) holds [`torch_rng`], as does every other test of its
//! binary that draws from or reseeds the generator.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};

use rand::RngCore;
use rlhf_model::{Batch, Gpt, Head, ModelConfig};
use rlhf_train::{
    DataPosition, DataRng, DataSource, Event, Metrics, RandomTokens, Result, Resume, RunOptions,
    StepOutput, TrainError, TrainStep, Trainer, TrainerConfig, checkpoint,
};
use tch::{Device, Kind, Reduction, Tensor};

pub const VOCAB: i64 = 64;

/// Llama family, hidden 32, 2 layers, vocab 64 (~37k parameters).
pub fn tiny_config(hidden: i64) -> ModelConfig {
    let json = serde_json::json!({
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 2 * hidden,
        "max_position_embeddings": 64,
        "tie_word_embeddings": false,
    });
    ModelConfig::from_json(&json, Path::new("tiny")).expect("valid tiny config")
}

/// Next-token cross-entropy; target id 0 is ignored (a padding stand-in), so a micro-batch's
/// token count can vary.
pub struct Lm {
    pub gpt: Gpt,
    /// Return a NaN loss on this (1-based) call of `loss`.
    pub nan_at_call: Option<u64>,
    /// Make the n-th (1-based) `save` fail after writing the model files: a crash between the
    /// temporary write and the rename.
    pub fail_save_at: Option<u64>,
    pub eval_ids: Tensor,
    /// Scale the loss by (1 + 0.01 * U(0, 1)) drawn from libtorch's generator.
    pub noise: bool,
    calls: u64,
    saves: Cell<u64>,
}

impl Lm {
    /// A fresh model whose initialisation depends only on `seed`. Drawn in Rust, not from
    /// libtorch's generator, which is global and shared with tests running in other threads.
    pub fn new(seed: u64, hidden: i64) -> Self {
        let gpt = Gpt::new(&tiny_config(hidden), Head::Lm, Device::Cpu);
        let mut vars: Vec<(String, Tensor)> = gpt.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (name, var)) in vars.iter().enumerate() {
            if name.contains("norm") {
                continue; // RMSNorm gains stay at one
            }
            // Uniform with std 0.02: half-width 0.02 * sqrt(3).
            let mut rng = DataRng::new(seed, i as u64);
            let values: Vec<f32> = (0..var.numel())
                .map(|_| (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * 0.0346)
                .collect();
            let src = Tensor::from_slice(&values).view(var.size().as_slice());
            tch::no_grad(|| var.shallow_clone().copy_(&src));
        }
        let eval_ids = Tensor::arange(32, (Kind::Int64, Device::Cpu))
            .remainder(VOCAB)
            .view([2, 16]);
        Self {
            gpt,
            nan_at_call: None,
            fail_save_at: None,
            eval_ids,
            noise: false,
            calls: 0,
            saves: Cell::new(0),
        }
    }

    /// Mean loss over non-ignored targets and their count.
    pub fn lm_loss(&self, ids: &Tensor) -> Result<(Tensor, i64)> {
        let batch = Batch {
            input_ids: ids,
            attention_mask: None,
        };
        let logits = self.gpt.forward(batch, None)?; // (B, T, V)
        let (_, t, v) = logits.size3()?;
        let pred = logits.narrow(1, 0, t - 1).reshape([-1, v]);
        let target = ids.narrow(1, 1, t - 1).reshape([-1]);
        let tokens = i64::try_from(target.ne(0).sum(Kind::Int64))?;
        let loss = pred.cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, 0, 0.0);
        Ok((loss, tokens))
    }

    /// Every parameter, by name, copied.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self
            .gpt
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

impl TrainStep for Lm {
    type Batch = Tensor;

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.gpt.trainable_parameters()
    }

    fn loss(&mut self, ids: &Tensor) -> Result<StepOutput> {
        self.calls += 1;
        let (loss, tokens) = self.lm_loss(ids)?;
        let loss = if self.nan_at_call == Some(self.calls) {
            loss * f64::NAN
        } else {
            loss
        };
        let loss = if self.noise {
            loss * (Tensor::rand([], (Kind::Float, Device::Cpu)) * 0.01 + 1.0)
        } else {
            loss
        };
        let acc = Tensor::from(0.5); // a constant metric: checks the averaging
        Ok(StepOutput::new(loss, tokens).metric("half", &acc))
    }

    fn eval(&mut self) -> Result<Metrics> {
        let (loss, _) = self.lm_loss(&self.eval_ids)?;
        Ok(Metrics::from([("loss".to_string(), f64::try_from(loss)?)]))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let n = self.saves.get() + 1;
        self.saves.set(n);
        self.gpt.save(dir)?;
        if self.fail_save_at == Some(n) {
            return Err(TrainError::step(
                "simulated crash after writing the model files",
            ));
        }
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_gpt(&self.gpt, dir)
    }
}

/// Replays a fixed list of batches once.
pub struct Batches {
    pub batches: Vec<Tensor>,
    pub next: usize,
}

impl DataSource for Batches {
    type Batch = Tensor;

    fn next_batch(&mut self) -> Result<Option<Tensor>> {
        let b = self.batches.get(self.next).map(Tensor::shallow_clone);
        self.next += 1;
        Ok(b)
    }

    fn position(&self) -> DataPosition {
        DataPosition {
            offset: self.next as u64,
            ..DataPosition::default()
        }
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        self.next = usize::try_from(pos.offset).map_err(TrainError::step)?;
        Ok(())
    }
}

pub fn config() -> TrainerConfig {
    TrainerConfig {
        lr: 1e-2,
        warmup_steps: 2,
        max_steps: 8,
        batch_size: 4,
        grad_accum: 2,
        eval_every: 0,
        checkpoint_every: 4,
        keep_checkpoints: 0,
        seed: 7,
        ..Default::default()
    }
}

pub fn run(dir: &Path, resume: Resume) -> RunOptions {
    RunOptions {
        resume,
        progress: false,
        ..RunOptions::new(dir, "pretrain")
    }
}

pub fn data() -> RandomTokens {
    RandomTokens::new(VOCAB, 4, 16, 11)
}

/// Collects every step's loss; fails the run (an interruption) after `stop_after` steps.
pub fn recorder(trainer: &mut Trainer, stop_after: Option<u64>) -> Rc<RefCell<Vec<f64>>> {
    let losses = Rc::new(RefCell::new(Vec::new()));
    let sink = losses.clone();
    trainer.add_callback(move |event: &Event<'_>| {
        if let Event::Step(r) = event {
            sink.borrow_mut().push(r.loss);
            if stop_after == Some(r.step) {
                return Err(TrainError::step("simulated interruption"));
            }
        }
        Ok(())
    });
    losses
}

/// Turns at libtorch's global generator: held for a whole test by the tests of a binary that
/// sample (their results depend on its draws) and by the others in that binary that draw from
/// or reseed it (building a model, training, sampling).
pub fn torch_rng() -> MutexGuard<'static, ()> {
    static TORCH_RNG: Mutex<()> = Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model with `Gpt::new`'s initialisation (normal(0, 0.02), the residual projections
/// 0.02/√(2·layers), a scalar head N(0, 1/(d+1)), norms at one, biases at zero) drawn from a
/// Rust RNG seeded by `seed`, so that it depends on nothing else.
pub fn seeded_gpt(cfg: &ModelConfig, head: Head, seed: u64) -> Gpt {
    let gpt = Gpt::new(cfg, head, Device::Cpu);
    let mut vars: Vec<(String, Tensor)> = gpt.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, var)) in vars.iter().enumerate() {
        if name.contains("norm") || name.ends_with("bias") {
            continue;
        }
        let std = if name.starts_with("score.") {
            1.0 / ((cfg.hidden_size + 1) as f64).sqrt()
        } else if RESIDUAL.iter().any(|p| name.contains(p)) {
            0.02 / (2.0 * cfg.num_layers as f64).sqrt()
        } else {
            0.02
        };
        let mut rng = DataRng::new(seed, i as u64);
        let values: Vec<f32> = (0..var.numel())
            .map(|_| (normal(&mut rng) * std) as f32)
            .collect();
        let src = Tensor::from_slice(&values).view(var.size().as_slice());
        tch::no_grad(|| var.shallow_clone().copy_(&src));
    }
    gpt
}

/// The projections into the residual stream, initialised smaller (GPT-2).
const RESIDUAL: [&str; 3] = ["o_proj", "down_proj", "c_proj"];

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut DataRng) -> f64 {
    let unit = |r: &mut DataRng| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let (u1, u2) = (1.0 - unit(rng), unit(rng)); // u1 in (0, 1]
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A tiny Llama (hidden 32, 2 layers, tied head) with a byte-level BPE tokenizer trained on a
/// line of task-world text, initialised by `seeded_gpt` with seed 0, and `positions` positions.
pub fn tiny_pretrained(positions: i64) -> rlhf_model::Pretrained {
    use rlhf_tokenizer::{BpeConfig, train_bpe};
    let text = "Jane has 12 flowers. She gives 2 to her mom. The answer is 10. Sort 3, 1, 2.";
    let tok = train_bpe(
        std::iter::repeat_n(text, 20),
        &BpeConfig {
            vocab_size: 300,
            ..Default::default()
        },
    )
    .expect("tokenizer");
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": positions,
        "tie_word_embeddings": true,
    });
    let cfg = ModelConfig::from_json(&json, Path::new("tiny")).expect("valid tiny config");
    rlhf_model::Pretrained {
        model: seeded_gpt(&cfg, Head::Lm, 0),
        tokenizer: tok,
    }
}

/// A GRPO reward for short answers: −(characters) / 10.
#[derive(Debug)]
pub struct Short;

impl rlhf_eval::Scorer for Short {
    fn key(&self) -> &str {
        "short"
    }
    fn name(&self) -> &str {
        "short"
    }
    fn score(&self, _: &[String], responses: &[String]) -> rlhf_eval::Result<Vec<f64>> {
        Ok(responses
            .iter()
            .map(|r| -(r.chars().count() as f64) / 10.0)
            .collect())
    }
}

/// `tiny_pretrained(96)` saved as a checkpoint in `dir/model`, and `n` task-like prompts in
/// `dir/prompts.jsonl`: the inputs of a GRPO run.
pub fn tiny_run_inputs(dir: &Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let pre = tiny_pretrained(96);
    let model = dir.join("model");
    pre.model.save(&model).expect("save model");
    pre.tokenizer.save(&model).expect("save tokenizer");
    let prompts = dir.join("prompts.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"prompt": "Jane has {i} flowers."}}"#))
        .collect();
    std::fs::write(&prompts, lines.join("\n") + "\n").expect("write prompts");
    (model, prompts)
}

/// Runs `f` on one input per rank, each rank a thread of this process with its own c10d Gloo
/// group on loopback (world size = the number of inputs); returns the ranks' results in order.
pub fn on_ranks<T: Send, R: Send>(
    inputs: Vec<T>,
    f: impl Fn(T, &rlhf_model::dist::Group) -> R + Sync,
) -> Vec<R> {
    use rlhf_model::dist::{Group, LaunchEnv};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let world = inputs.len();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(rank, input)| {
                s.spawn(move || {
                    let env = LaunchEnv {
                        rank,
                        world,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        timeout: std::time::Duration::from_secs(60),
                    };
                    let group = Group::join(&env).unwrap();
                    f(input, &group)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
