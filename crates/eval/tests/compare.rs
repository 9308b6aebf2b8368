//! The comparison library on a tiny random checkpoint: the log-probs it sums for the KL equal
//! the sampler's, a model against itself ties everywhere with zero KL, and best-of-n picks by
//! the proxy.

use rlhf_eval::{
    BestOfNConfig, CompareConfig, Judge, Oracle, Quiet, Scorer, best_of_n, compare_models,
    kl_per_prompt, sample_responses,
};
use rlhf_model::{Gpt, Head, Pretrained};
use tch::Device;

/// libtorch's random generator is global: the tests seed it and sample with it, so they take
/// turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(dir: &std::path::Path, seed: i64) -> Pretrained {
    let text = "Jane has 12 flowers. The answer is 7. Sort these numbers: 41, 28, 86.";
    let bpe = rlhf_tokenizer::BpeConfig {
        vocab_size: 280,
        ..Default::default()
    };
    let tok = rlhf_tokenizer::train_bpe(std::iter::repeat_n(text, 20), &bpe).unwrap();
    tok.save(dir).unwrap();
    let cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 256, "eos_token_id": tok.eos_id(),
    });
    let cfg = rlhf_model::ModelConfig::from_json(&cfg, &dir.join("config.json")).unwrap();
    tch::manual_seed(seed);
    Gpt::new(&cfg, Head::Lm, Device::Cpu).save(dir).unwrap();
    Pretrained::load(dir, Head::Lm, Device::Cpu).unwrap()
}

fn prompts() -> Vec<String> {
    [
        "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers does \
         she have left?",
        "Sort these numbers from largest to smallest: 41, 28, 86.",
        "Reverse this list: 4, 5, 6.",
    ]
    .map(String::from)
    .to_vec()
}

/// The KL sums log-probabilities from one teacher-forced forward over left-padded prompts;
/// they must equal the ones the sampler reported while decoding with the KV cache (an
/// off-by-one in the positions would break this).
#[test]
fn summed_logprobs_match_the_sampler() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let pre = tiny(dir.path(), 0);
    let other_dir = tempfile::tempdir().unwrap();
    let other = tiny(other_dir.path(), 1);
    let cfg = CompareConfig {
        temperature: 0.7,
        max_new_tokens: 12,
        seed: 1,
        rows: 2,
        ..Default::default()
    };
    let ps = prompts();
    let responses = sample_responses(&pre, &ps, &cfg, &mut Quiet).unwrap();
    let sampled = pre
        .sample_k(
            &ps,
            1,
            rlhf_model::PromptFormat::Chat,
            &rlhf_model::TextGenerateConfig {
                max_new_tokens: 12,
                sampling: rlhf_model::Sampling::new(0.7, None, None).unwrap(),
                seed: Some(1),
                stop: vec![],
            },
            2,
            |_, _| (),
        )
        .unwrap();
    let own = rlhf_eval::compare::response_logprobs(&pre, &ps, &responses, 0.7, 2).unwrap();
    for (g, got) in sampled.iter().zip(&own) {
        let want: f64 = g[0].generation.logprobs.iter().map(|&x| f64::from(x)).sum();
        assert!((want - got).abs() < 1e-4, "{want} vs {got}");
    }
    // Against another model the per-prompt KL is own − other (up to the float noise of other
    // batch shapes), and nonzero.
    let kl = kl_per_prompt(&pre, &other, &ps, &responses, 0.7, 3).unwrap();
    let theirs = rlhf_eval::compare::response_logprobs(&other, &ps, &responses, 0.7, 1).unwrap();
    for ((k, a), b) in kl.iter().zip(&own).zip(&theirs) {
        assert!((k - (a - b)).abs() < 1e-4, "{k} vs {a} - {b}");
    }
    assert!(kl.iter().any(|k| k.abs() > 1e-3));
}

#[test]
fn a_model_against_itself_ties_everywhere_with_zero_kl() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let pre = tiny(dir.path(), 0);
    let again = Pretrained::load(dir.path(), Head::Lm, Device::Cpu).unwrap();
    let c = compare_models(
        &pre,
        &again,
        &prompts(),
        &Judge::Oracle(Oracle),
        &CompareConfig {
            max_new_tokens: 8,
            bootstrap: 200,
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!((c.n, c.ties, c.wins, c.losses), (3, 3, 0, 0));
    assert_eq!(c.win_rate.mean, 0.5);
    assert_eq!(c.kl.map(|k| k.mean), Some(0.0));
    assert_eq!(c.score_a, c.score_b);
    assert_eq!(c.length_a, c.length_b);
    assert_eq!(c.items.len(), 3);
}

/// A proxy that prefers longer responses: its pick's proxy score can only grow with n.
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
        Ok(responses.iter().map(|r| r.len() as f64).collect())
    }
}

#[test]
fn best_of_n_never_lowers_the_proxy_score_of_its_pick() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let pre = tiny(dir.path(), 0);
    let cfg = BestOfNConfig {
        n_max: 8,
        temperature: 1.0,
        max_new_tokens: 10,
        seed: 3,
        rows: 32,
    };
    let curve = best_of_n(&pre, &Length, &Oracle, &prompts(), &cfg).unwrap();
    let ns: Vec<usize> = curve.points.iter().map(|p| p.n).collect();
    assert_eq!(ns, [1, 2, 4, 8]);
    for w in curve.points.windows(2) {
        assert!(w[1].proxy >= w[0].proxy, "{:?}", curve.points);
    }
    assert!(curve.points[3].proxy > curve.points[0].proxy);
}
