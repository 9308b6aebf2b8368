//! Timing, not correctness (ignored by default): the optimizer step on a ~1M-parameter model,
//! ours (flat buffer; fused kernel and op by op) vs libtorch's C++ `torch::optim::AdamW` (per-parameter, via tch's
//! `nn::AdamW`), and a whole training step. Run with
//! `cargo test --release -p rlhf-train --test speed -- --ignored --nocapture`.

use std::time::Instant;

use rlhf_model::{Gpt, Head, ModelConfig};
use rlhf_train::optim::{AdamW, AdamWConfig, clip_grad_norm};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

/// ~850k parameters in 38 tensors (`big`), or ~140k in 111 small tensors.
fn model(big: bool) -> Gpt {
    let (vocab, hidden, layers) = if big { (2048, 128, 4) } else { (64, 32, 12) };
    let json = serde_json::json!({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 2 * hidden, "max_position_embeddings": 128,
        "tie_word_embeddings": true,
    });
    let cfg = ModelConfig::from_json(&json, std::path::Path::new("m")).expect("config");
    Gpt::new(&cfg, Head::Lm, Device::Cpu)
}

fn fake_grads(gpt: &Gpt) {
    for (_, p) in gpt.vs.variables() {
        (&p * 1e-3).sum(Kind::Float).backward();
    }
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut t: Vec<f64> = (0..50)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

#[test]
#[ignore]
fn optimizer_step_time() {
    for big in [true, false] {
        let gpt = model(big);
        let n = gpt.num_params();
        let count = gpt.vs.variables().len();
        fake_grads(&gpt);
        let params = gpt.vs.variables().into_iter().collect();
        let mut ours = AdamW::new(params, AdamWConfig::default()).expect("adamw");
        let mut ours_ms = [0.0; 2];
        for (i, fused) in [true, false].into_iter().enumerate() {
            ours.set_fused(fused);
            ours_ms[i] = median_ms(|| {
                let mut g = ours.gradients(1.0).expect("grads");
                let _ = clip_grad_norm(&mut g, 1.0).expect("clip");
                ours.step(&g, 1e-3).expect("step");
            });
        }

        let gpt2 = model(big);
        fake_grads(&gpt2);
        let mut theirs = tch::nn::AdamW::default()
            .build(&gpt2.vs, 1e-3)
            .expect("nn::AdamW");
        let theirs_ms = median_ms(|| {
            theirs.clip_grad_norm(1.0);
            theirs.step();
        });
        println!(
            "{n} parameters in {count} tensors, {} threads: ours (gather + clip + AdamW) \
             {:.3} ms fused, {:.3} ms op by op; tch nn::AdamW (clip + step) {theirs_ms:.3} ms",
            tch::get_num_threads(),
            ours_ms[0],
            ours_ms[1]
        );
    }
}

#[test]
#[ignore]
fn training_step_throughput() {
    struct Step(Gpt);
    impl rlhf_train::TrainStep for Step {
        type Batch = Tensor;
        fn parameters(&self) -> Vec<(String, Tensor)> {
            self.0.vs.variables().into_iter().collect()
        }
        fn loss(&mut self, ids: &Tensor) -> rlhf_train::Result<rlhf_train::StepOutput> {
            let batch = rlhf_model::Batch {
                input_ids: ids,
                attention_mask: None,
            };
            let logits = self.0.forward(batch, None)?;
            let (b, t, v) = logits.size3()?;
            let pred = logits.narrow(1, 0, t - 1).reshape([-1, v]);
            let target = ids.narrow(1, 1, t - 1).reshape([-1]);
            Ok(rlhf_train::StepOutput::new(
                pred.cross_entropy_for_logits(&target),
                b * (t - 1),
            ))
        }
        fn save(&self, _: &std::path::Path) -> rlhf_train::Result<()> {
            Ok(())
        }
        fn load(&mut self, _: &std::path::Path) -> rlhf_train::Result<()> {
            Ok(())
        }
    }
    let mut step = Step(model(true));
    let mut data = rlhf_train::RandomTokens::new(2048, 8, 128, 0);
    let cfg = rlhf_train::TrainerConfig::default();
    let records = rlhf_train::run_steps(&cfg, &mut step, &mut data, 30).expect("run");
    let mut tps: Vec<f64> = records[5..].iter().map(|r| r.tokens_per_s).collect();
    tps.sort_by(f64::total_cmp);
    println!(
        "training step, batch 8 x 128, {} params: median {:.0} tokens/s ({:.1} ms/step)",
        step.0.num_params(),
        tps[tps.len() / 2],
        8.0 * 127.0 / tps[tps.len() / 2] * 1e3
    );
}
