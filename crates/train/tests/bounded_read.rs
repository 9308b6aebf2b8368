//! Hostile data files against a real (tiny) model: a record far longer than the context is
//! refused from its byte length before it is tokenized, naming the file, line and field, within
//! a second, by every stage reader that checks the context (SFT, DPO, reward).

mod common;

use std::time::Instant;

use serde_json::json;

/// A JSONL file whose second record holds a 50 MB string in `field` of `big`.
fn file_with_huge_second_record(
    first: serde_json::Value,
    mut big: serde_json::Value,
    field: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    big[field] = json!("x".repeat(50 << 20));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    std::fs::write(&path, format!("{first}\n{big}\n")).unwrap();
    (dir, path)
}

fn assert_quick_and_named(t0: Instant, msg: &str, field: &str) {
    assert!(
        t0.elapsed().as_secs_f64() < 1.0,
        "{:?}: {msg}",
        t0.elapsed()
    );
    assert!(
        msg.contains("data.jsonl:2") && msg.contains(&format!("field '{field}'")),
        "{msg}"
    );
    assert!(msg.contains("the line is longer than"), "{msg}");
}

#[test]
fn sft_refuses_a_50_mb_prompt_before_tokenizing() {
    let pre = common::tiny_pretrained(64);
    let ok = json!({"prompt": "2+3?", "completion": "5"});
    let (_dir, path) = file_with_huge_second_record(ok.clone(), ok, "prompt");
    let t0 = Instant::now();
    let e = rlhf_train::sft::load_examples(&pre, &path).unwrap_err();
    assert_quick_and_named(t0, &e.to_string(), "prompt");
}

#[test]
fn dpo_and_reward_refuse_a_50_mb_response_before_tokenizing() {
    let pre = common::tiny_pretrained(64);
    let ok = json!({"prompt": "2+3?", "chosen": "5", "rejected": "6"});
    let (_dir, path) = file_with_huge_second_record(ok.clone(), ok, "rejected");
    let t0 = Instant::now();
    let e = rlhf_train::dpo::encode_items(&pre, &path).unwrap_err();
    assert_quick_and_named(t0, &e.to_string(), "rejected");
    let t0 = Instant::now();
    let Err(e) = rlhf_train::reward::encode_all(&pre, &path) else {
        panic!("a 50 MB response must be refused");
    };
    assert_quick_and_named(t0, &e.to_string(), "rejected");
}

/// Under the line cap but over the text the context can hold: refused after parsing, still
/// before tokenizing, with the arithmetic in the message.
#[test]
fn text_that_cannot_fit_is_refused_from_its_length() {
    let pre = common::tiny_pretrained(64);
    let bound = rlhf_tokenizer::token_bound(&pre.tokenizer).unwrap();
    let too_long = "y".repeat(64 * bound.max_bytes + 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    let line = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": too_long},
    ]});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let msg = rlhf_train::sft::load_examples(&pre, &path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("data.jsonl:1: field 'messages[1].content'")
            && msg.contains("more than the model's context of 64 tokens can hold"),
        "{msg}"
    );
}
