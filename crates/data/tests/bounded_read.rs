//! The reader's bounds: a line is never read past its cap, and with a model's [`TextBudget`] a
//! record whose text cannot fit the context is refused from its byte length, before any
//! tokenizer sees it; both errors name the file, the line and the field.

use std::time::Instant;

use rlhf_data::{
    DEFAULT_MAX_LINE_BYTES, PreferenceRecord, PromptRecord, SftRecord, TextBudget, TextRecord,
    read_jsonl, read_jsonl_within,
};

fn write(name: &str, lines: &[String]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (dir, path)
}

fn sft_line(prompt: &str) -> String {
    serde_json::json!({"prompt": prompt, "completion": "5"}).to_string()
}

/// The case: the second record holds a 50 MB prompt. With a tiny model's budget (256
/// tokens of at most 13 bytes) the line is cut at ~4 MB and refused at once.
#[test]
fn a_50_mb_prompt_is_refused_from_its_length() {
    let big = "x".repeat(50 << 20);
    let (_dir, path) = write("sft.jsonl", &[sft_line("2+3?"), sft_line(&big)]);
    drop(big);
    let budget = TextBudget::new(256, 13, &[]);
    let t0 = Instant::now();
    let e = read_jsonl_within::<SftRecord>(&path, Some(&budget)).unwrap_err();
    assert!(t0.elapsed().as_secs_f64() < 1.0, "{:?}", t0.elapsed());
    let msg = e.to_string();
    assert!(
        msg.contains("sft.jsonl:2: field 'prompt': the line is longer than 4214272 bytes")
            && msg.contains("context of 256 tokens holds at most 3328 bytes"),
        "{msg}"
    );
}

/// A line under the cap whose text still cannot fit: measured after parsing, before tokenizing,
/// and blamed on the longest field of the sequence.
#[test]
fn text_beyond_the_context_names_its_field() {
    let chat = serde_json::json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "y".repeat(5000)},
    ]});
    let (_dir, path) = write("chat.jsonl", &[sft_line("ok"), chat.to_string()]);
    let budget = TextBudget::new(256, 13, &[]);
    let msg = read_jsonl_within::<SftRecord>(&path, Some(&budget))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("chat.jsonl:2: field 'messages[1].content': with the rest of its sequence"),
        "{msg}"
    );
    assert!(
        msg.contains("5002 bytes of text") && msg.contains("at most 3328"),
        "{msg}"
    );

    // Preferences: the prompt with each response is one sequence.
    let pref = serde_json::json!({"prompt": "q", "chosen": "a", "rejected": "b".repeat(400)});
    let (_dir, path) = write("pref.jsonl", &[pref.to_string()]);
    let budget = TextBudget::new(100, 4, &[]);
    let msg = read_jsonl_within::<PreferenceRecord>(&path, Some(&budget))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("pref.jsonl:1: field 'rejected'"), "{msg}");
}

/// Never refuse what could fit: text exactly at the budget passes, and so does a line made
/// long by JSON escapes (`\u0079` is six bytes for one) and surrounding whitespace.
#[test]
fn records_that_could_fit_are_kept() {
    let budget = TextBudget::new(10, 4, &[]);
    let exact = "y".repeat(40);
    let escaped = format!("{{\"text\":   \"{}\"   }}", "\\u0079".repeat(40));
    let (_dir, path) = write(
        "t.jsonl",
        &[
            format!("{{\"text\": \"{exact}\"}}"),
            escaped,
            format!("{{\"text\": \"  {exact}\\n\"}}"),
        ],
    );
    let records = read_jsonl_within::<TextRecord>(&path, Some(&budget)).unwrap();
    assert_eq!(records.len(), 3);
    let (_dir, path) = write("t.jsonl", &[format!("{{\"text\": \"{exact}y\"}}")]);
    let msg = read_jsonl_within::<TextRecord>(&path, Some(&budget))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("t.jsonl:1: field 'text': holds 41 bytes"),
        "{msg}"
    );
}

/// Bytes the tokenizer drops count for nothing, and then escapes of them could pad a line that
/// fits, so the cap falls back to the default.
#[test]
fn dropped_bytes_are_not_counted() {
    let budget = TextBudget::new(10, 1, &[0x04]);
    assert_eq!(budget.measure("a\u{4}\u{4}b"), 2);
    assert_eq!(budget.max_line_bytes(), DEFAULT_MAX_LINE_BYTES);
    let line = format!("{{\"prompt\": \"{}ok\"}}", "\\u0004".repeat(1000));
    let (_dir, path) = write("p.jsonl", &[line]);
    let records = read_jsonl_within::<PromptRecord>(&path, Some(&budget)).unwrap();
    assert_eq!(records.len(), 1);
}

/// Without a model, a line is still capped (64 MiB), and the field it runs past is named even
/// when it is nested.
#[test]
fn the_default_cap_holds_without_a_model() {
    let big = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "z".repeat(DEFAULT_MAX_LINE_BYTES + 10)
    );
    let (_dir, path) = write("big.jsonl", &[sft_line("fine"), big]);
    let t0 = Instant::now();
    let msg = read_jsonl::<SftRecord>(&path).unwrap_err().to_string();
    assert!(t0.elapsed().as_secs_f64() < 2.0, "{:?}", t0.elapsed());
    assert!(
        msg.contains("big.jsonl:2: field 'messages[0].content': the line is longer than 67108864"),
        "{msg}"
    );
}

/// Invalid UTF-8, a truncated last line without a newline, deep nesting and a byte-order mark.
#[test]
fn odd_lines_are_errors_or_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.jsonl");
    std::fs::write(&path, b"\xEF\xBB\xBF{\"text\": \"a\"}\r\n{\"text\": \"b\"}").unwrap();
    assert_eq!(read_jsonl::<TextRecord>(&path).unwrap().len(), 2);
    std::fs::write(&path, b"{\"text\": \"a\xff\"}\n").unwrap();
    let msg = read_jsonl::<TextRecord>(&path).unwrap_err().to_string();
    assert!(
        msg.contains("odd.jsonl:1: invalid JSON: not valid UTF-8"),
        "{msg}"
    );
    let deep = format!(
        "{{\"text\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&path, deep).unwrap();
    let msg = read_jsonl::<TextRecord>(&path).unwrap_err().to_string();
    assert!(
        msg.contains("odd.jsonl:1: invalid JSON: recursion limit exceeded"),
        "{msg}"
    );
}
