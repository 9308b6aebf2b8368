//! The tiny random model the serving tests run on.

use rlhf_model::{Gpt, Head, ModelConfig};
use rlhf_tokenizer::{BpeConfig, train_bpe};
use serde_json::json;
use tch::Device;

const CORPUS: &str = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. \
How many flowers does she have left? The answer is 7. Sort the list: 3, 1, 2.";

/// Writes a 2-layer llama-shaped checkpoint (context 96) and its tokenizer to `dir`.
pub fn tiny_model(dir: &std::path::Path) {
    let tok = train_bpe(
        std::iter::repeat_n(CORPUS, 20),
        &BpeConfig {
            vocab_size: 300,
            ..Default::default()
        },
    )
    .unwrap();
    tok.save(dir).unwrap();
    let cfg = json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(),
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 96,
        "eos_token_id": tok.eos_id(), "bos_token_id": tok.bos_id(), "pad_token_id": tok.pad_id(),
    });
    let cfg = ModelConfig::from_json(&cfg, &dir.join("config.json")).unwrap();
    // libtorch's generator is global and the tests run on parallel threads: without the
    // lock another test's initialisation can interleave with this one and change the
    // weights (the penalty test once saw a different model in CI and failed).
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(3);
    Gpt::new(&cfg, Head::Lm, Device::Cpu).save(dir).unwrap();
}
