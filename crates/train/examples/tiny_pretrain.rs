//! A runnable pretraining sketch on synthetic tokens: a tiny Llama, the generic trainer, the
//! progress bar, checkpoints and `--resume`. Not a stage: the pretrain crate owns real data.
//!
//! `cargo run --release -p rlhf-train --example tiny_pretrain -- RUN_DIR [--resume] [KEY=VALUE...]`
//! (e.g. `trainer.max_steps=200 trainer.lr=1e-3`).

use std::path::Path;

use rlhf_model::{Batch, Gpt, Head, ModelConfig};
use rlhf_train::{RandomTokens, Result, Resume, RunOptions, StepOutput, TrainError, TrainStep};
use rlhf_train::{Trainer, TrainerConfig, checkpoint, config};
use tch::{Device, Tensor};

/// Next-token prediction on (B, T) token ids.
struct Pretrain {
    gpt: Gpt,
}

impl TrainStep for Pretrain {
    type Batch = Tensor;

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.gpt.vs.variables().into_iter().collect()
    }

    fn loss(&mut self, ids: &Tensor) -> Result<StepOutput> {
        let batch = Batch {
            input_ids: ids,
            attention_mask: None,
        };
        let logits = self.gpt.forward(batch, None)?; // (B, T, V)
        let (b, t, v) = logits.size3()?;
        let pred = logits.narrow(1, 0, t - 1).reshape([-1, v]); // (B*(T-1), V)
        let target = ids.narrow(1, 1, t - 1).reshape([-1]);
        Ok(StepOutput::new(
            pred.cross_entropy_for_logits(&target),
            b * (t - 1),
        ))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Ok(self.gpt.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_gpt(&self.gpt, dir)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TinyConfig {
    trainer: TrainerConfig,
    /// Tokens per row. 64: long enough for attention to matter, short enough for a CPU.
    seq_len: i64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            trainer: TrainerConfig {
                max_steps: 200,
                warmup_steps: 20,
                lr: 3e-3,
                eval_every: 0,
                checkpoint_every: 50,
                ..Default::default()
            },
            seq_len: 64,
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> std::result::Result<(), TrainError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "runs/tiny".into());
    let resume = args.iter().any(|a| a == "--resume");
    let sets: Vec<String> = args
        .iter()
        .skip(1)
        .filter(|a| a.contains('='))
        .cloned()
        .collect();
    let cfg: TinyConfig = config::load(None, &sets)?;
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
        "max_position_embeddings": cfg.seq_len, "tie_word_embeddings": true,
    });
    let model_cfg = ModelConfig::from_json(&json, Path::new("tiny"))?;
    tch::manual_seed(cfg.trainer.seed as i64); // the model's initialisation
    let mut step = Pretrain {
        gpt: Gpt::new(&model_cfg, Head::Lm, Device::Cpu),
    };
    let batch = cfg.trainer.batch_size as i64;
    let mut data = RandomTokens::new(256, batch, cfg.seq_len, cfg.trainer.seed);
    let mut run = RunOptions::new(&dir, "pretrain");
    run.config = config::to_table(&cfg)?;
    run.resume = if resume { Resume::Latest } else { Resume::No };
    let summary = Trainer::new(cfg.trainer.clone(), run)?.fit(&mut step, &mut data)?;
    let loss = summary.last.map_or(f64::NAN, |r| r.loss);
    println!(
        "step {}: loss {loss:.4}, {:.1} s",
        summary.step, summary.elapsed_s
    );
    Ok(())
}
