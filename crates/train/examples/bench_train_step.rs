//! Benchmark helper for `bench/train_step.py`: full training steps (forward, loss, backward,
//! clipping, AdamW) of a checkpoint's model on fixed random tokens, through the real trainer code
//! (`run_steps`). Prints {"tokens_per_s": ...} counting B*T tokens per step, like the Python side.
//!
//! usage: bench_train_step MODEL_DIR BATCH SEQ_LEN STEPS THREADS [fp32|bf16|auto]
//!
//! `RLHF_BENCH_PROFILE=1` then times forward, backward and the update apart over STEPS more
//! steps; with `RLHF_BENCH_TRACE=FILE` too, libtorch's op profiler records those steps as a
//! chrome://tracing file (each op's name and span on each thread).

use std::path::{Path, PathBuf};

// The allocator the `rlhf` binary runs with (rlhf_model::alloc).
rlhf_model::jemalloc_global_allocator!();

use rlhf_model::{Gpt, Head};
use rlhf_train::pretrain::lm_loss;
use rlhf_train::{RandomTokens, Result, StepOutput, TrainStep, TrainerConfig, run_steps};
use tch::Tensor;

struct Step(Gpt);

impl TrainStep for Step {
    type Batch = Tensor;
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.0.vs.variables().into_iter().collect()
    }
    // RLHF_BENCH_ONE_PASS_CLIP=0 keeps the op-by-op gather, norm and clip in a bf16 run (for
    // side-by-side runs of one binary); only the optimizer path reads this.
    fn compute(&self) -> rlhf_model::Compute {
        match std::env::var("RLHF_BENCH_ONE_PASS_CLIP").as_deref() {
            Ok("0") => rlhf_model::Compute::Fp32,
            _ => self.0.compute(),
        }
    }
    fn loss(&mut self, ids: &Tensor) -> Result<StepOutput> {
        let (b, t) = ids.size2()?;
        Ok(StepOutput::new(lm_loss(&self.0, ids)?, b * t))
    }
    fn save(&self, _: &Path) -> Result<()> {
        Ok(())
    }
    fn load(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 6 || a.len() == 7,
        "usage: bench_train_step MODEL BATCH SEQ_LEN STEPS THREADS [fp32|bf16|auto]"
    );
    let (b, t, steps, threads): (i64, i64, u64, i32) =
        (a[2].parse()?, a[3].parse()?, a[4].parse()?, a[5].parse()?);
    let precision: rlhf_model::Precision = a
        .get(6)
        .map_or(Ok(rlhf_model::Precision::Fp32), |p| p.parse())
        .map_err(anyhow::Error::msg)?;
    rlhf_model::precision::set_default(precision, tch::Device::Cpu);
    rlhf_model::device::set_threads(Some(threads as usize));
    let gpt = Gpt::load(&PathBuf::from(&a[1]), Head::Lm, tch::Device::Cpu)?;
    let vocab = gpt.cfg.vocab_size;
    let mut step = Step(gpt);
    let mut data = RandomTokens::new(vocab, b, t, 0);
    let cfg = TrainerConfig {
        lr: 3e-4,
        warmup_steps: 0,
        weight_decay: 0.1,
        grad_clip: 1.0,
        ..Default::default()
    };
    let warm = 3;
    let recs = run_steps(&cfg, &mut step, &mut data, warm + steps)?;
    let t0 = recs[warm as usize - 1].elapsed_s;
    let secs = recs.last().map_or(0.0, |r| r.elapsed_s) - t0;
    let tps = (b * t) as f64 * steps as f64 / secs;
    if std::env::var_os("RLHF_BENCH_PROFILE").is_some() {
        profile(&mut step, &mut data, steps)?;
    }
    println!(
        "{}",
        serde_json::json!({"tokens_per_s": tps, "seconds": secs})
    );
    Ok(())
}

/// Where one step's time goes: forward + loss, backward, gradient gather + clip + AdamW.
fn profile(step: &mut Step, data: &mut RandomTokens, steps: u64) -> anyhow::Result<()> {
    use rlhf_train::{AdamW, AdamWConfig, DataSource};
    use std::time::Instant;
    let mut opt = AdamW::new(step.parameters(), AdamWConfig::default())?;
    // The trainer's choice (see `run_steps`).
    opt.set_one_pass_clip(step.compute() == rlhf_model::Compute::Bf16);
    let mut t = [0.0f64; 3];
    let mut trace = None;
    for i in 0..steps + 2 {
        if i == 2 {
            trace = std::env::var_os("RLHF_BENCH_TRACE")
                .and_then(|p| rlhf_model::fused::OpProfile::start(std::path::Path::new(&p)));
        }
        let ids = data.next_batch()?.expect("endless data");
        let t0 = Instant::now();
        let loss = lm_loss(&step.0, &ids)?;
        let _ = f64::try_from(&loss)?; // sync
        let t1 = Instant::now();
        loss.backward();
        let t2 = Instant::now();
        let grad = opt.clipped_gradients(1.0, 1.0)?;
        opt.step_clipped(&grad, 3e-4)?;
        opt.zero_grad();
        let _ = f64::try_from(&grad.norm)?;
        let t3 = Instant::now();
        if i >= 2 {
            t[0] += (t1 - t0).as_secs_f64();
            t[1] += (t2 - t1).as_secs_f64();
            t[2] += (t3 - t2).as_secs_f64();
        }
    }
    drop(trace);
    let total: f64 = t.iter().sum();
    let names = ["forward+loss", "backward", "gather+clip+AdamW"];
    let parts: Vec<String> = names
        .iter()
        .zip(t)
        .map(|(n, x)| {
            format!(
                "{n} {:.1} ms ({:.0}%)",
                1e3 * x / steps as f64,
                100.0 * x / total
            )
        })
        .collect();
    eprintln!("profile per step: {}", parts.join(", "));
    Ok(())
}
