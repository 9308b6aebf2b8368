//! Benchmark helper for `bench/grpo-compare.sh`: GRPO iterations through the real `rlhf grpo`
//! iteration (G samples per prompt with the KV cache, the reward, the old and the reference
//! log-probs, group-normalised advantages, one optimizer step over every sample) on a random
//! "micro" Llama with a word-level tokenizer, the same setup as `bench/grpo_trl.py`: `prompts`
//! random `prompt_len`-token prompts per iteration, `group` samples of at most `response_len`
//! tokens each at temperature 1, β = 0.04, a cheap reward (the response's length in
//! characters). Prints one JSON line with the median seconds per iteration.
//!
//! usage: bench_grpo [--threads N] [--iters N] [--warmup N] [--prompts P] [--group G]
//!                   [--prompt-len L] [--response-len R]

mod common;

use std::time::Instant;

use common::{arg, median, micro_config};
use rand::{Rng, SeedableRng};
use rlhf_eval::Scorer;
use rlhf_model::{GenerateConfig, Gpt, Head, Pretrained, Sampling};
use rlhf_tokenizer::Tokenizer;
use rlhf_train::grpo::{GrpoConfig, iteration};
use tch::Device;

/// The response's length in characters.
#[derive(Debug)]
struct Length;

impl Scorer for Length {
    fn key(&self) -> &str {
        "length"
    }
    fn name(&self) -> &str {
        "length"
    }
    fn score(&self, _: &[String], responses: &[String]) -> rlhf_eval::Result<Vec<f64>> {
        Ok(responses.iter().map(|r| r.chars().count() as f64).collect())
    }
}

const VOCAB: i64 = 1024;

/// TRL's benchmark tokenizer: words `t0` … `t1021`, `<pad>` and `<eos>`, split on whitespace.
fn word_tokenizer(dir: &std::path::Path) -> anyhow::Result<Tokenizer> {
    let mut vocab = serde_json::Map::new();
    for i in 0..VOCAB - 2 {
        vocab.insert(format!("t{i}"), i.into());
    }
    vocab.insert("<pad>".into(), (VOCAB - 2).into());
    vocab.insert("<eos>".into(), (VOCAB - 1).into());
    let special = |id: i64, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(VOCAB - 2, "<pad>"), special(VOCAB - 1, "<eos>")],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<eos>", "pad_token": "<pad>"}"#,
    )?;
    Ok(Tokenizer::from_dir(dir)?)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&a, "--threads", 2);
    let iters: usize = arg(&a, "--iters", 5);
    let warmup: usize = arg(&a, "--warmup", 1);
    let prompts: usize = arg(&a, "--prompts", 8);
    let group: usize = arg(&a, "--group", 8);
    let prompt_len: usize = arg(&a, "--prompt-len", 16);
    let response_len: usize = arg(&a, "--response-len", 32);
    rlhf_model::device::set_threads(Some(threads));
    let cfg = micro_config()?;
    let dir = std::env::temp_dir().join(format!("bench_grpo_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tokenizer = word_tokenizer(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    tch::manual_seed(0);
    let policy = Pretrained {
        model: Gpt::new(&cfg, Head::Lm, Device::Cpu),
        tokenizer: tokenizer?,
    };
    tch::manual_seed(0);
    let reference = Gpt::new(&cfg, Head::Lm, Device::Cpu);
    for (_, t) in reference.vs.variables() {
        let _ = t.shallow_clone().set_requires_grad(false);
    }
    let gcfg = GrpoConfig {
        group,
        prompts_per_iteration: prompts,
        epochs: 1,
        minibatches: 1,
        lr: 5e-5,
        beta: 0.04,
        max_new_tokens: response_len,
        temperature: 1.0,
        ..Default::default()
    };
    gcfg.validate()?;
    let mut opt = gcfg.optimizer(&policy.model)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut times, mut sample, mut update) = (Vec::new(), Vec::new(), Vec::new());
    for it in 0..iters + warmup {
        let (mut rows, mut texts) = (Vec::new(), Vec::new());
        for _ in 0..prompts {
            let ids: Vec<i64> = (0..prompt_len)
                .map(|_| rng.random_range(0..VOCAB - 2))
                .collect();
            let text = ids
                .iter()
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(" ");
            for _ in 0..group {
                rows.push(ids.clone());
                texts.push(text.clone());
            }
        }
        let gen_cfg = GenerateConfig {
            max_new_tokens: response_len,
            sampling: Sampling::new(1.0, None, None)?,
            seed: Some(it as u64),
            eos_token_ids: policy.eos_ids(),
            pad_token_id: policy.pad_id(),
        };
        let t = Instant::now();
        let m = iteration(
            &policy,
            Some(&reference),
            &mut opt,
            &Length,
            &rows,
            &texts,
            &gcfg,
            gen_cfg,
            it as u64,
        )?;
        anyhow::ensure!(m["loss"].is_finite(), "non-finite loss");
        if it >= warmup {
            times.push(t.elapsed().as_secs_f64());
            sample.push(m["time/sample_s"]);
            update.push(m["time/update_s"]);
        }
    }
    println!(
        "{}",
        serde_json::json!({"median_s": median(&times), "iters": times,
                           "sample_s_median": median(&sample),
                           "update_s_median": median(&update),
                           "threads": threads, "prompts": prompts, "group": group,
                           "prompt_len": prompt_len, "response_len": response_len})
    );
    Ok(())
}
