//! Benchmark helper for `bench/ppo-compare.sh`: PPO iterations (rollouts with the KV cache +
//! scoring by policy, reference, value and reward model + `ppo_epochs` × `minibatches` updates)
//! through the real `rlhf ppo` code, on random "micro" Llama models; the same setup as
//! `bench/ppo_trl.py`. Every response has exactly `response_len` tokens (no stop token).
//! Prints one JSON line with the median seconds per iteration and per phase.
//!
//! usage: bench_ppo [--threads N] [--iters N] [--warmup N] [--batch B] [--prompt-len P]
//!                  [--response-len R] [--ppo-epochs E] [--minibatches M]
//!                  [--precision fp32|bf16]   (fp32; bf16 = bf16 products, fp32 master weights)
//!                  [--vocab V] [--hidden H] [--layers L] [--heads A] [--kv-heads K]
//!                  [--intermediate I]        (the micro Llama by default)
//!                  [--adamw fused|ops]       (fused: libtorch's fused AdamW kernel, the default;
//!                                            ops: the op-by-op update)
//!
//! `RLHF_BENCH_TRACE=FILE` records the last iteration's update with libtorch's op profiler, as a
//! chrome://tracing file.

mod common;

use std::time::Instant;

use common::{arg, median, shaped_config};
use rlhf_model::{Gpt, Head};
use rlhf_train::ppo::{self, PpoConfig};
use rlhf_train::rollout::{self, Models, RolloutConfig};
use tch::Device;

// The allocator the `rlhf` binary runs with (rlhf_model::alloc).
rlhf_model::jemalloc_global_allocator!();

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let threads: i32 = arg(&a, "--threads", 2);
    let iters: usize = arg(&a, "--iters", 3);
    let warmup: usize = arg(&a, "--warmup", 1);
    let batch: usize = arg(&a, "--batch", 32);
    let prompt_len: usize = arg(&a, "--prompt-len", 16);
    let response_len: usize = arg(&a, "--response-len", 32);
    // Allocator tuning and thread count, as every `rlhf` command sets them.
    rlhf_model::device::set_threads(Some(threads as usize));
    let precision: rlhf_model::precision::Precision = arg(&a, "--precision", "fp32".to_string())
        .parse()
        .map_err(anyhow::Error::msg)?;
    rlhf_model::precision::set_default(precision, Device::Cpu);
    let cfg = shaped_config(&a)?;
    let dev = Device::Cpu;
    tch::manual_seed(0);
    let policy = Gpt::new(&cfg, Head::Lm, dev);
    tch::manual_seed(0);
    let reference = Gpt::new(&cfg, Head::Lm, dev);
    let value = Gpt::new(&cfg, Head::Scalar, dev);
    let reward = Gpt::new(&cfg, Head::Scalar, dev);
    let pcfg = PpoConfig {
        rollout_batch: batch,
        minibatches: arg(&a, "--minibatches", 2),
        ppo_epochs: arg(&a, "--ppo-epochs", 4),
        lr: 1e-5,
        max_new_tokens: response_len,
        ..Default::default()
    };
    let rcfg = RolloutConfig {
        temperature: 1.0,
        max_new_tokens: response_len,
        stop_ids: vec![],
        pad_id: 0,
        rm_eos_id: 1,
        score_scale: 1.0,
        missing_eos_penalty: 0.0,
    };
    let mut opt = ppo::optimizer(&policy, &value, &pcfg)?;
    let adamw: String = arg(&a, "--adamw", "fused".to_string());
    anyhow::ensure!(
        matches!(adamw.as_str(), "fused" | "ops"),
        "--adamw: expected fused or ops, got {adamw}"
    );
    opt.set_fused(adamw == "fused");
    let (mut total, mut roll, mut upd) = (Vec::new(), Vec::new(), Vec::new());
    for it in 0..warmup + iters {
        let prompts: Vec<Vec<i64>> = (0..batch)
            .map(|i| {
                (0..prompt_len)
                    .map(|j| 2 + ((i * 131 + j * 17 + it * 7) % 1000) as i64)
                    .collect()
            })
            .collect();
        let t0 = Instant::now();
        let models = Models {
            policy: &policy,
            reference: &reference,
            value: &value,
            reward: rollout::Reward::Model(&reward),
        };
        let ro = rollout::rollout(&models, &prompts, &rcfg, it as u64)?;
        assert!(ro.response_ids.iter().all(|r| r.len() == response_len));
        let t1 = t0.elapsed().as_secs_f64();
        let (adv, ret, _) = ppo::advantages(&ro, &pcfg, pcfg.kl_coef)?;
        let _trace = (it + 1 == warmup + iters)
            .then(|| std::env::var_os("RLHF_BENCH_TRACE"))
            .flatten()
            .and_then(|p| rlhf_model::fused::OpProfile::start(std::path::Path::new(&p)));
        ppo::update(
            &models, &mut opt, &ro, &adv, &ret, &pcfg, None, it as u64, None,
        )?;
        let t2 = t0.elapsed().as_secs_f64();
        if it >= warmup {
            total.push(t2);
            roll.push(t1);
            upd.push(t2 - t1);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "impl": "rlhf", "threads": threads, "precision": precision.to_string(), "adamw": adamw, "sec_per_iter_median": median(&total),
            "iters": total, "rollout_s_median": median(&roll), "update_s_median": median(&upd),
            "config": {"hidden": cfg.hidden_size, "layers": cfg.num_layers, "batch": batch, "prompt_len": prompt_len, "response_len": response_len,
                       "ppo_epochs": pcfg.ppo_epochs, "minibatches": pcfg.minibatches},
        })
    );
    Ok(())
}
