//! What the benchmark examples share (`bench_dpo`, `bench_grpo`, `bench_ppo`): their flags, the
//! random "micro" Llama of the TRL comparisons (`bench/trl_micro.py` builds the same one) and a
//! median.

use rlhf_model::ModelConfig;

/// The value after `name` in `args`, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Vocabulary 1024, hidden 128, 4 layers, 4 heads (2 KV), MLP 344, tied embeddings.
#[allow(dead_code)] // bench_ppo takes a shape instead
pub fn micro_config() -> anyhow::Result<ModelConfig> {
    shaped_config(&[])
}

/// [`micro_config`] with any of `--vocab`, `--hidden`, `--layers`, `--heads`, `--kv-heads` and
/// `--intermediate` from the command line (the flags of `bench/ppo_trl.py`).
pub fn shaped_config(args: &[String]) -> anyhow::Result<ModelConfig> {
    let mut j = serde_json::json!({
        "model_type": "llama", "max_position_embeddings": 256, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
    });
    for (flag, key, default) in [
        ("--vocab", "vocab_size", 1024),
        ("--hidden", "hidden_size", 128),
        ("--layers", "num_hidden_layers", 4),
        ("--heads", "num_attention_heads", 4),
        ("--kv-heads", "num_key_value_heads", 2),
        ("--intermediate", "intermediate_size", 344),
    ] {
        j[key] = arg(args, flag, default).into();
    }
    Ok(ModelConfig::from_json(&j, std::path::Path::new("micro"))?)
}

/// The middle value (the upper one of an even count).
#[allow(dead_code)] // not every example reports one
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}
