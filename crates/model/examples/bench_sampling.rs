//! Benchmark helper for `bench/sampling.py`: batched sampling with the KV cache from a checkpoint
//! dir, timed inside the process (load excluded). Prints one JSON line per timed repetition.
//!
//! usage: bench_sampling MODEL_DIR BATCH PROMPT_LEN NEW_TOKENS REPS THREADS
//! (RLHF_BENCH_TRACE=FILE: libtorch's op profile of one more run, a chrome://tracing file)

use std::path::PathBuf;
use std::time::Instant;

use rlhf_model::sample::{GenerateConfig, Sampling, generate};
use rlhf_model::{Gpt, Head};

// As in the `rlhf` binary (bench/run-sampling.sh builds with the feature).
#[cfg(feature = "jemalloc")]
rlhf_model::jemalloc_global_allocator!();

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 7,
        "usage: bench_sampling MODEL BATCH PROMPT_LEN NEW REPS THREADS"
    );
    let (batch, plen, new, reps, threads): (usize, usize, usize, usize, i32) = (
        a[2].parse()?,
        a[3].parse()?,
        a[4].parse()?,
        a[5].parse()?,
        a[6].parse()?,
    );
    tch::set_num_threads(threads);
    // RLHF_PRECISION=bf16 decodes from bf16 copies of the weights, as `--precision bf16` does.
    if let Ok(p) = std::env::var("RLHF_PRECISION") {
        let p: rlhf_model::Precision = p.parse().map_err(anyhow::Error::msg)?;
        rlhf_model::precision::set_default(p, tch::Device::Cpu);
    }
    let model = Gpt::load(&PathBuf::from(&a[1]), Head::Lm, tch::Device::Cpu)?;
    let v = model.cfg.vocab_size;
    // Same prompts as the Python side: token i*7 + j*13 mod V, no EOS, so every run is full length.
    let prompts: Vec<Vec<i64>> = (0..batch)
        .map(|i| (0..plen).map(|j| ((i * 7 + j * 13) as i64) % v).collect())
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: new,
        sampling: Sampling::new(1.0, None, None)?,
        seed: Some(0),
        eos_token_ids: vec![],
        pad_token_id: 0,
    };
    generate(&model, &prompts, &cfg, |_, _| false)?; // warm-up
    // RLHF_BENCH_TRACE=FILE: libtorch's op profile of one more (untimed) run.
    if let Some(f) = std::env::var_os("RLHF_BENCH_TRACE") {
        let _p = rlhf_model::fused::OpProfile::start(std::path::Path::new(&f));
        generate(&model, &prompts, &cfg, |_, _| false)?;
    }
    for _ in 0..reps {
        let t0 = Instant::now();
        let out = generate(&model, &prompts, &cfg, |_, _| false)?;
        let secs = t0.elapsed().as_secs_f64();
        let tokens: usize = out.iter().map(|g| g.token_ids.len()).sum();
        println!("{}", serde_json::json!({"tokens": tokens, "seconds": secs}));
    }
    Ok(())
}
