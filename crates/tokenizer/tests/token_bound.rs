//! The bound a reader uses to refuse text before tokenizing it is sound: for any text, its
//! tokens times `TokenBound::max_bytes` cover every byte the tokenizer keeps, so text refused
//! as too long for a context could never have fit it. Checked on generated strings (any
//! character, runs of spaces and digits, control bytes some vocabularies lack, special-token
//! strings) with our tiny byte-level BPE and, when fetched (`scripts/fetch-test-assets.sh`), the
//! GPT-2, Qwen3 and SmolLM2 tokenizers.

use std::path::PathBuf;

use proptest::prelude::*;
use rlhf_tokenizer::{BpeConfig, TokenBound, Tokenizer, token_bound, train_bpe};

fn tokenizers() -> Vec<(String, Tokenizer, TokenBound)> {
    let text = "the cat sat on the mat; 12 + 30 = 42.\n  indented\tand tabbed";
    let cfg = BpeConfig {
        vocab_size: 280,
        ..Default::default()
    };
    let tiny = train_bpe(std::iter::repeat_n(text, 10), &cfg).expect("tiny BPE");
    let mut all = vec![("tiny".to_string(), tiny)];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in [
        ".cache/assets/gpt2-tokenizer",
        ".cache/assets/qwen3-tokenizer",
        ".cache/smollm2-hf",
    ] {
        if let Ok(tok) = Tokenizer::from_dir(root.join(dir)) {
            all.push((dir.to_string(), tok));
        }
    }
    all.into_iter()
        .map(|(name, tok)| {
            let bound = token_bound(&tok).unwrap_or_else(|| panic!("{name}: no bound"));
            (name, tok, bound)
        })
        .collect()
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<char>().prop_map(String::from),
        " {1,40}",
        "[0-9]{1,12}",
        "[a-zA-Z]{1,12}",
        "[\u{0}-\u{1f}]{1,8}",
        Just("<|endoftext|>".to_string()),
        Just("<|im_start|>".to_string()),
        Just("e\u{301}\u{1100}\u{1161}\u{11a8}\u{212a}".to_string()),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
}

proptest! {
    // 64 cases in CI; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn tokens_cover_every_kept_byte(s in text()) {
        for (name, tok, bound) in TOKENIZERS.iter() {
            let ids = tok.encode(&s, false).expect("encode");
            let kept = s.bytes().filter(|b| !bound.dropped.contains(b)).count();
            prop_assert!(
                ids.len() * bound.max_bytes >= kept,
                "{name}: {} tokens x {} bytes < {kept} kept bytes of {s:?}",
                ids.len(),
                bound.max_bytes
            );
        }
    }
}

static TOKENIZERS: std::sync::LazyLock<Vec<(String, Tokenizer, TokenBound)>> =
    std::sync::LazyLock::new(tokenizers);

/// The shipped tokenizers have a bound (none of them can drop arbitrary text).
#[test]
fn shipped_tokenizers_are_bounded() {
    let all = &*TOKENIZERS;
    assert!(!all.is_empty());
    for (name, _, bound) in all {
        assert!(
            bound.max_bytes >= 4 && bound.max_bytes <= 4096,
            "{name}: {bound:?}"
        );
    }
}
