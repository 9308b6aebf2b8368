//! Benchmark helper for `bench/dpo-compare.sh`: DPO optimizer steps through the real `rlhf dpo`
//! step (policy log-probs of chosen and rejected, the sigmoid loss, backward, AdamW) on a random
//! "micro" Llama, the same setup as `bench/dpo_trl.py`: `batch` pairs of a `prompt_len`-token
//! prompt and two `response_len`-token responses, reference log-probs computed up front (as TRL's
//! `precompute_ref_log_probs`). Prints one JSON line with the median seconds per step.
//!
//! usage: bench_dpo [--threads N] [--steps N] [--warmup N] [--batch B] [--prompt-len P]
//!                  [--response-len R]

mod common;

use common::{arg, median, micro_config};
use rand::{Rng, SeedableRng};
use rlhf_model::{Gpt, Head};
use rlhf_train::dpo::{DpoConfig, DpoStep, PrefData, PrefItem, reference_logprobs};
use rlhf_train::{LossWeighting, TrainerConfig, run_steps};
use tch::Device;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&a, "--threads", 2);
    let steps: usize = arg(&a, "--steps", 10);
    let warmup: usize = arg(&a, "--warmup", 2);
    let batch: usize = arg(&a, "--batch", 8);
    let prompt_len: usize = arg(&a, "--prompt-len", 16);
    let response_len: usize = arg(&a, "--response-len", 32);
    rlhf_model::device::set_threads(Some(threads));
    let cfg = micro_config()?;
    tch::manual_seed(0);
    let policy = Gpt::new(&cfg, Head::Lm, Device::Cpu);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ids = |n: usize| -> Vec<i64> { (0..n).map(|_| rng.random_range(0..1024)).collect() };
    // One response token more than `response_len`: TRL appends EOS to each completion.
    let mut items: Vec<PrefItem> = (0..batch * (steps + warmup))
        .map(|_| PrefItem {
            prompt: ids(prompt_len),
            responses: vec![ids(response_len + 1), ids(response_len + 1)],
            groups: vec![vec![0], vec![1]],
            pairs: vec![(0, 1)],
            oracle_pairs: None,
            ref_logps: vec![],
        })
        .collect();
    reference_logprobs(&policy, &mut items, 0, 32)?;
    let dcfg = DpoConfig::default();
    let tcfg = TrainerConfig {
        lr: 1e-5,
        warmup_steps: 0,
        max_steps: (steps + warmup) as u64,
        batch_size: batch,
        weight_decay: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        loss_weighting: LossWeighting::MicroBatch,
        ..Default::default()
    };
    let n = items.len();
    let mut step = DpoStep {
        gpt: &policy,
        items,
        eval: vec![],
        pad: 0,
        cfg: dcfg,
    };
    let mut data = PrefData::new(n, batch, 0);
    let records = run_steps(&tcfg, &mut step, &mut data, (steps + warmup) as u64)?;
    let times: Vec<f64> = records
        .windows(2)
        .map(|w| w[1].elapsed_s - w[0].elapsed_s)
        .skip(warmup.saturating_sub(1))
        .collect();
    println!(
        "{}",
        serde_json::json!({"median_s": median(&times), "steps": times, "threads": threads, "batch": batch,
                           "prompt_len": prompt_len, "response_len": response_len})
    );
    Ok(())
}
