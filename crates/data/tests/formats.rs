//! Reader and writer tests: every bad-input case gives its `file:line: field` message, nothing
//! panics, and records round-trip through the atomic writer.

use rlhf_data::{
    EvalRecord, PairwiseRecord, PromptRecord, Ranking, RankingRecord, Role, SampleRecord,
    SftRecord, TextRecord, parse_jsonl, read_jsonl, write_jsonl,
};

/// The error message of parsing `text` as records of type `T` from "f.jsonl".
fn err<T: rlhf_data::JsonlRecord + std::fmt::Debug>(text: &str) -> String {
    match parse_jsonl::<T>("f.jsonl", text) {
        Ok(records) => panic!("expected an error, parsed {records:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_field() {
    assert_eq!(
        err::<SftRecord>(r#"{"prompt": "p"}"#),
        "f.jsonl:1: field 'completion': missing; expected a non-empty string"
    );
    assert!(
        err::<SftRecord>(r#"{"completion": "c"}"#)
            .starts_with("f.jsonl:1: field 'prompt': missing; expected a string")
    );
    assert_eq!(
        err::<RankingRecord>(r#"{"prompt": "p", "responses": ["a", "b"]}"#),
        "f.jsonl:1: field 'ranking': missing; expected a list of indices"
    );
    assert_eq!(
        err::<TextRecord>("{}"),
        "f.jsonl:1: field 'text': missing; expected a string"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        err::<SftRecord>(r#"{"prompt": 3, "completion": "c"}"#),
        "f.jsonl:1: field 'prompt': expected a string, found a number 3"
    );
    assert_eq!(
        err::<SampleRecord>(r#"{"prompt": "p", "responses": "a"}"#),
        "f.jsonl:1: field 'responses': expected a list of strings, found a string \"a\""
    );
    assert_eq!(
        err::<EvalRecord>(r#"{"prompt": "p", "answer": [1]}"#),
        "f.jsonl:1: field 'answer': expected a string or a number, found a list [1]"
    );
    assert_eq!(
        err::<SftRecord>("[1, 2]"),
        "f.jsonl:1: expected a JSON object, found a list [1,2]"
    );
}

#[test]
fn invalid_json_reports_the_physical_line() {
    let text = "{\"text\": \"a\"}\n\n{\"text\": \"b\"\n";
    assert_eq!(
        err::<TextRecord>(text),
        "f.jsonl:3: invalid JSON: EOF while parsing an object (column 12)"
    );
    let bad_utf8 = b"{\"text\": \"\xff\"}\n";
    let e = rlhf_data::parse_jsonl::<TextRecord>("f.jsonl", &String::from_utf8_lossy(bad_utf8));
    assert!(e.is_ok(), "lossy text is valid UTF-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, bad_utf8).expect("write");
    let e = read_jsonl::<TextRecord>(&path).expect_err("not UTF-8");
    assert!(
        e.to_string()
            .ends_with("bad.jsonl:1: invalid JSON: not valid UTF-8 at byte 10 of the line")
    );
}

#[test]
fn ranking_validation() {
    let k1 = r#"{"prompt": "p", "responses": ["a"], "ranking": [0]}"#;
    assert_eq!(
        err::<RankingRecord>(k1),
        "f.jsonl:1: field 'responses': expected at least 2 responses, found 1"
    );
    let out = r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 5]}"#;
    assert_eq!(
        err::<RankingRecord>(out),
        "f.jsonl:1: field 'ranking': index 5 is out of range; expected 0..=1 for 2 responses"
    );
    let dup = r#"{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, [1, 0], 2]}"#;
    assert_eq!(
        err::<RankingRecord>(dup),
        "f.jsonl:1: field 'ranking': index 0 appears twice; each response is ranked exactly once"
    );
    let missing = r#"{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0]}"#;
    assert_eq!(
        err::<RankingRecord>(missing),
        "f.jsonl:1: field 'ranking': response 1 is not ranked; expected every index 0..=2 \
         exactly once"
    );
    let bad = r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [0, "b"]}"#;
    assert_eq!(
        err::<RankingRecord>(bad),
        "f.jsonl:1: field 'ranking[1]': expected a response index (a non-negative integer), \
         found a string \"b\""
    );
    let neg = r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[1, -1], 0]}"#;
    assert!(err::<RankingRecord>(neg).starts_with("f.jsonl:1: field 'ranking[0][1]': expected"));
    let empty_group = r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [[], 0, 1]}"#;
    assert_eq!(
        err::<RankingRecord>(empty_group),
        "f.jsonl:1: field 'ranking': expected a non-empty list of tied indices, found []"
    );
}

#[test]
fn empty_completions_and_responses() {
    assert_eq!(
        err::<SftRecord>(r#"{"prompt": "p", "completion": "  "}"#),
        "f.jsonl:1: field 'completion': expected a non-empty string, found a string \"  \""
    );
    assert_eq!(
        err::<SampleRecord>(r#"{"prompt": "p", "responses": ["a", ""]}"#),
        "f.jsonl:1: field 'responses[1]': expected a non-empty string, found a string \"\""
    );
    let r = r#"{"prompt": "p", "responses": ["", "b"], "ranking": [0, 1]}"#;
    assert_eq!(
        err::<RankingRecord>(r),
        "f.jsonl:1: field 'responses[0]': expected a non-empty string, found a string \"\""
    );
    assert_eq!(
        err::<PairwiseRecord>(r#"{"prompt": "p", "chosen": "", "rejected": "b"}"#),
        "f.jsonl:1: field 'chosen': expected a non-empty string, found a string \"\""
    );
    assert_eq!(
        err::<PairwiseRecord>(r#"{"prompt": "p", "chosen": "a", "rejected": "a"}"#),
        "f.jsonl:1: field 'rejected': is identical to 'chosen'; a preference needs two \
         different responses"
    );
}

#[test]
fn chat_messages() {
    let bad_role =
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}"#;
    assert_eq!(
        err::<SftRecord>(bad_role),
        "f.jsonl:1: field 'messages[1].role': expected \"system\", \"user\" or \"assistant\", \
         found a string \"bot\""
    );
    let no_content = r#"{"messages": [{"role": "user"}]}"#;
    assert_eq!(
        err::<SftRecord>(no_content),
        "f.jsonl:1: field 'messages[0].content': missing; expected a string"
    );
    let ends_with_user = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    assert!(
        err::<SftRecord>(ends_with_user)
            .starts_with("f.jsonl:1: field 'messages[0].role': expected the conversation to end")
    );
    let both = r#"{"messages": [], "prompt": "p", "completion": "c"}"#;
    assert!(err::<SftRecord>(both).contains("has both 'messages' and 'prompt'"));
    let good = r#"{"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    let records: Vec<SftRecord> = parse_jsonl("f.jsonl", good).expect("valid chat");
    let messages = records[0].messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2].role, Role::Assistant);
}

#[test]
fn lenient_where_harmless() {
    // Blank lines, CRLF endings, a BOM, extra fields and numeric answers are all fine.
    let text = "\u{feff}{\"prompt\": \"p\", \"answer\": 7, \"family\": \"x\"}\r\n\r\n\
                {\"prompt\": \"q\", \"answer\": \"8\"}\r\n";
    let eval: Vec<EvalRecord> = parse_jsonl("f.jsonl", text).expect("valid");
    assert_eq!(eval.len(), 2);
    assert_eq!(eval[0].answer, "7");
    assert_eq!(eval[0].fields["family"], "x");
    let prompts: Vec<PromptRecord> = parse_jsonl("f.jsonl", text).expect("valid");
    assert_eq!(prompts[1].prompt, "q");
    assert!(
        parse_jsonl::<TextRecord>("f.jsonl", "")
            .expect("empty file")
            .is_empty()
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = read_jsonl::<TextRecord>("/nonexistent/dir/x.jsonl").expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/dir/x.jsonl: cannot read:"),
        "{e}"
    );
}

#[test]
fn ranking_ties_serialize_nested_and_drop_tied_pairs() {
    let ranking = Ranking::new(vec![vec![2], vec![0, 3], vec![1]], 4).expect("valid");
    assert_eq!(
        serde_json::to_string(&ranking).expect("json"),
        "[2,[0,3],1]"
    );
    // C(4, 2) = 6 pairs minus the tied (0, 3).
    assert_eq!(
        ranking.pairs(),
        vec![(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]
    );
    let strict = Ranking::from_order(&[1, 0, 2], 3).expect("valid");
    assert_eq!(strict.pairs().len(), 3);
}

#[test]
fn records_round_trip_through_the_atomic_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rankings.jsonl");
    let responses = vec![
        "a".to_string(),
        "b".to_string(),
        "c".to_string(),
        "d".to_string(),
    ];
    let ranking = Ranking::new(vec![vec![2], vec![0, 3], vec![1]], 4).expect("valid");
    let record = RankingRecord::new("p".into(), responses, ranking).expect("valid");
    write_jsonl(&path, [&record, &record]).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        text.lines().next(),
        Some(r#"{"prompt":"p","responses":["a","b","c","d"],"ranking":[2,[0,3],1]}"#)
    );
    let back: Vec<RankingRecord> = read_jsonl(&path).expect("read back");
    assert_eq!(back, vec![record.clone(), record]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temp file left behind");

    let sft = [SftRecord::Completion {
        prompt: "p".into(),
        completion: "c".into(),
    }];
    let path = dir.path().join("sft.jsonl");
    write_jsonl(&path, &sft).expect("write");
    assert_eq!(read_jsonl::<SftRecord>(&path).expect("read"), sft.to_vec());
}

#[test]
fn writing_into_a_missing_directory_fails_cleanly() {
    let e = write_jsonl(
        "/nonexistent/dir/x.jsonl",
        [TextRecord { text: "a".into() }],
    )
    .expect_err("no such dir");
    assert!(e.to_string().contains("cannot create"), "{e}");
}
