//! Hostile tokenizer directories and chat templates: whatever the bytes, loading answers within
//! bounded time with a tokenizer or an error naming the file, and whatever the template, rendering
//! answers within bounded time and output (fuel and an output cap) with text or an error naming
//! the template — never a panic or a hang.
//!
//! Seeds: a tokenizer trained here and saved (tokenizer.json, tokenizer_config.json), plus the
//! checked-in parity fixture. Mutations: truncation, bit flips, numbers set to huge values,
//! deep nesting, invalid UTF-8. Templates are built from Jinja fragments, including nested
//! `range` loops and string repetition that would run for hours or fill memory without limits.
//!
//! Cases: PROPTEST_CASES (default 64 per property); `scripts/fuzz-api.sh`'s sibling campaign is
//! `PROPTEST_CASES=N cargo test --release -p rlhf-tokenizer --test fuzz`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rlhf_tokenizer::{BpeConfig, ChatOptions, ChatTemplate, Message, Tokenizer, train_bpe};

/// (tokenizer.json, tokenizer_config.json) of a small trained tokenizer.
fn seed() -> &'static (Vec<u8>, Vec<u8>) {
    static S: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let corpus = ["hello world, hello tokenizer", "the world says hello"].repeat(20);
        let config = BpeConfig {
            vocab_size: 270,
            ..Default::default()
        };
        train_bpe(corpus, &config)
            .unwrap()
            .save(dir.path())
            .unwrap();
        let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
        (read("tokenizer.json"), read("tokenizer_config.json"))
    })
}

fn parity_fixture() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_parity.json");
    std::fs::read(p).unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(Vec<(prop::sample::Index, u8)>),
    /// The n-th number in the text becomes this.
    HugeNumber(prop::sample::Index, &'static str),
    Nest(usize),
    BadUtf8(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8)
            .prop_map(Mutation::Flip),
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec![
                "18446744073709551615",
                "99999999999999999999999",
                "-1",
                "1e308",
                "4294967296",
                "0"
            ])
        )
            .prop_map(|(i, n)| Mutation::HugeNumber(i, n)),
        (1usize..5000).prop_map(Mutation::Nest),
        any::<prop::sample::Index>().prop_map(Mutation::BadUtf8),
    ]
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match m {
        Mutation::Truncate(i) => b.truncate(i.index(b.len() + 1)),
        Mutation::Flip(flips) => {
            for (i, bit) in flips {
                let at = i.index(b.len());
                b[at] ^= 1 << bit;
            }
        }
        Mutation::HugeNumber(i, n) => {
            let text = String::from_utf8_lossy(&b).into_owned();
            let starts: Vec<usize> = text
                .char_indices()
                .filter(|&(j, c)| {
                    c.is_ascii_digit() && (j == 0 || !text.as_bytes()[j - 1].is_ascii_digit())
                })
                .map(|(j, _)| j)
                .collect();
            if !starts.is_empty() {
                let s = starts[i.index(starts.len())];
                let e = text[s..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(text.len(), |k| s + k);
                b = format!("{}{}{}", &text[..s], n, &text[e..]).into_bytes();
            }
        }
        Mutation::Nest(depth) => {
            let mut v = "[".repeat(*depth).into_bytes();
            v.extend_from_slice(&b);
            v.extend("]".repeat(*depth).into_bytes());
            b = v;
        }
        Mutation::BadUtf8(i) => {
            let at = i.index(b.len() + 1);
            b.splice(at..at, [0xff, 0xc3, 0x28]);
        }
    }
    b
}

/// Loads a directory holding these two files; checks the contract of the answer.
fn load(tokenizer: &[u8], config: &[u8], mutated: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
    let t0 = Instant::now();
    match Tokenizer::from_dir(dir.path()) {
        Ok(tok) => {
            // A tokenizer that loads must also work.
            let _ = tok.encode("hello world, \u{e9}\u{1F600}", true);
            let _ = tok.apply_chat(&[Message::new("user", "hello")], true);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.contains("tokenizer.json") || msg.contains("tokenizer_config.json"),
                "the error names no file (mutated {mutated}): {msg}"
            );
        }
    }
    prop_assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    Ok(())
}

/// Jinja fragments, hostile ones included; a template is a sequence of them.
fn fragment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
        "{% if add_generation_prompt %}assistant:{% endif %}",
        "{{ bos_token }}",
        "{{ messages[0]['content'] | upper }}",
        "{{ raise_exception('no') }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 100000000 }}{{ 'y' * 100000000 }}",
        "{% for i in range(1000) %}{{ 'z' * 100000 }}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{{ messages | tojson }}",
        "{{ messages[99].content }}",
        "{{ 1 / 0 }}",
        "{% set ns = namespace(a=1) %}{% for i in range(50) %}{% set ns.a = ns.a * 2 %}{% endfor %}{{ ns.a }}",
        "{{ (messages * 1000000) | length }}",
        "{% for",
        "{{ }}",
        "{% endfor %}",
        "{{ strftime_now('%Y') }}",
        "\u{e9}\u{1F600} plain text",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(rlhf_fuzz::config(64))]

    #[test]
    fn mutated_tokenizer_json_loads_or_names_the_file(m in mutation(), parity in any::<bool>()) {
        let (tok, cfg) = seed();
        let base = if parity { parity_fixture() } else { tok.clone() };
        load(&mutate(&base, &m), cfg, &format!("tokenizer.json: {m:?}"))?;
    }

    #[test]
    fn mutated_tokenizer_config_loads_or_names_the_file(m in mutation()) {
        let (tok, cfg) = seed();
        load(tok, &mutate(cfg, &m), &format!("tokenizer_config.json: {m:?}"))?;
    }

    #[test]
    fn any_template_renders_or_fails_within_bounds(parts in prop::collection::vec(fragment(), 1..5)) {
        let source = parts.concat();
        let t0 = Instant::now();
        if let Ok(t) = ChatTemplate::new("fuzz", source.clone()) {
            let messages = [Message::new("user", "hello"), Message::new("assistant", "hi")];
            let options = ChatOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            match t.render(&messages, &options) {
                Ok(text) => prop_assert!(text.len() <= 16 << 20),
                Err(e) => prop_assert!(e.to_string().contains("fuzz"), "{e}"),
            }
        }
        prop_assert!(t0.elapsed() < Duration::from_secs(20), "{:?} for {source}", t0.elapsed());
    }
}
