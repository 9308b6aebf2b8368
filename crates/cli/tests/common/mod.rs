//! Helpers shared by the CLI integration tests: running the binary and tiny random checkpoints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use rlhf_model::{Gpt, Head, ModelConfig};
use rlhf_tokenizer::{BpeConfig, train_bpe};
use serde_json::json;
use tch::Device;

pub const CORPUS: &str = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. \
How many flowers does she have left? The answer is 7. Sort the list: 3, 1, 2. \
Answer in exactly three words. Tom buys 4 apples and eats 1. The answer is 3.";

/// Runs `rlhf --device cpu --threads 1 ARGS` (without the caller's OPENAI_API_KEY).
pub fn rlhf(args: &[&str]) -> Output {
    rlhf_with_env(args, &[])
}

/// `rlhf` with extra environment variables.
pub fn rlhf_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run rlhf")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny random llama checkpoint (LM head, weights from `seed`) with a BPE tokenizer of
/// `vocab` tokens trained on `CORPUS` (deterministic: equal `vocab` gives byte-identical
/// tokenizers), and a context of `context` positions.
pub fn tiny_checkpoint(dir: &Path, vocab: usize, context: i64, seed: i64) {
    tiny_checkpoint_with_head(dir, vocab, context, seed, Head::Lm);
}

/// `tiny_checkpoint` with the given head (a scalar head makes a reward model).
pub fn tiny_checkpoint_with_head(dir: &Path, vocab: usize, context: i64, seed: i64, head: Head) {
    let tok = train_bpe(
        std::iter::repeat_n(CORPUS, 20),
        &BpeConfig {
            vocab_size: vocab,
            ..Default::default()
        },
    )
    .unwrap();
    tok.save(dir).unwrap();
    let cfg = json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(),
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": context,
        "eos_token_id": tok.eos_id(), "bos_token_id": tok.bos_id(), "pad_token_id": tok.pad_id(),
    });
    let cfg = ModelConfig::from_json(&cfg, &dir.join("config.json")).unwrap();
    let _rng = torch_rng();
    tch::manual_seed(seed);
    Gpt::new(&cfg, head, Device::Cpu).save(dir).unwrap();
}

/// Turns at libtorch's global generator between `manual_seed` and the draws of `Gpt::new`, so
/// that a checkpoint's weights come from its seed alone: the tests of a binary run in parallel
/// threads, and these helpers are the only code here that draws in process (the binary under
/// test runs in its own).
pub fn torch_rng() -> MutexGuard<'static, ()> {
    static TORCH_RNG: Mutex<()> = Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `rlhf serve` on a free port (its base URL in `url`), killed on drop.
pub struct Served {
    pub child: Child,
    pub url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rlhf serve --port 0 --model MODEL` and waits for the line with its URL.
pub fn serve(model: &Path) -> Served {
    serve_with(model, &[])
}

/// [`serve`] with extra `rlhf serve` arguments.
pub fn serve_with(model: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args([
            "--device",
            "cpu",
            "--threads",
            "1",
            "serve",
            "--port",
            "0",
            "--model",
        ])
        .arg(model)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("rlhf serve exited").unwrap();
        if let Some((_, url)) = line.split_once(" on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, url }
}
