//! `PreferenceRecord`: our rankings and TRL's preference shapes (standard, conversational,
//! implicit prompt, a shared system prompt) read to the same record; every bad input gives its
//! `file:line: field` message.

use rlhf_data::{PreferenceRecord, Role, parse_jsonl};

fn one(text: &str) -> PreferenceRecord {
    parse_jsonl::<PreferenceRecord>("p.jsonl", text)
        .expect("parses")
        .remove(0)
}

fn err(text: &str) -> String {
    match parse_jsonl::<PreferenceRecord>("p.jsonl", &format!("{text}\n")) {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn roles(r: &PreferenceRecord) -> Vec<(Role, &str)> {
    r.prompt
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect()
}

#[test]
fn every_shape_reads_to_the_same_pair() {
    let shapes = [
        r#"{"prompt": "2+2?", "chosen": "4", "rejected": "5"}"#,
        r#"{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}"#,
        r#"{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}"#,
        r#"{"prompt": "2+2?", "responses": ["4", "5"], "ranking": [0, 1]}"#,
    ];
    for s in shapes {
        let r = one(s);
        assert_eq!(roles(&r), vec![(Role::User, "2+2?")], "{s}");
        assert_eq!(r.responses, vec!["4", "5"], "{s}");
        assert_eq!(r.ranking.pairs(), vec![(0, 1)], "{s}");
    }
    // A ranking keeps its ties and order; fields name where each response came from.
    let r = one(r#"{"prompt": "q", "responses": ["a", "b", "c"], "ranking": [2, [0, 1]]}"#);
    assert_eq!(r.ranking.pairs(), vec![(2, 0), (2, 1)]);
    assert_eq!(
        r.fields,
        vec!["responses[0]", "responses[1]", "responses[2]"]
    );
    assert_eq!(
        one(r#"{"prompt": "q", "chosen": "a", "rejected": "b"}"#).fields,
        vec!["chosen", "rejected"]
    );
}

#[test]
fn system_prompts() {
    let r = one(r#"{"system": "Be brief.", "prompt": "q", "chosen": "a", "rejected": "b"}"#);
    assert_eq!(
        roles(&r),
        vec![(Role::System, "Be brief."), (Role::User, "q")]
    );
    // A prompt that has its own system message keeps it.
    let r = one(
        r#"{"system": "ignored", "prompt": [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}"#,
    );
    assert_eq!(roles(&r), vec![(Role::System, "own"), (Role::User, "q")]);
    // A multi-turn implicit prompt.
    let r = one(
        r#"{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}"#,
    );
    assert_eq!(r.prompt.len(), 3);
    assert_eq!(r.responses, vec!["a", "b"]);
}

#[test]
fn bad_preferences_name_line_and_field() {
    let cases = [
        (
            r#"{"prompt": "q", "chosen": "a"}"#,
            "p.jsonl:1: field 'rejected': missing",
        ),
        (
            r#"{"prompt": "q", "rejected": "a"}"#,
            "p.jsonl:1: field 'chosen': missing",
        ),
        (r#"{"prompt": "q"}"#, "p.jsonl:1: expected a ranking"),
        (
            r#"{"prompt": "q", "chosen": "", "rejected": "b"}"#,
            "field 'chosen'",
        ),
        (
            r#"{"prompt": "q", "chosen": "  ", "rejected": "b"}"#,
            "field 'chosen': expected a non-empty",
        ),
        (
            r#"{"prompt": "q", "chosen": "a", "rejected": "a"}"#,
            "field 'rejected': is identical to 'chosen'",
        ),
        (
            r#"{"prompt": 3, "chosen": "a", "rejected": "b"}"#,
            "field 'prompt'",
        ),
        (
            r#"{"chosen": "a", "rejected": "b"}"#,
            "field 'prompt': missing",
        ),
        (
            r#"{"prompt": "q", "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}], "rejected": "b"}"#,
            "field 'chosen': expected one assistant message",
        ),
        (
            r#"{"prompt": "q", "chosen": [{"role": "wizard", "content": "a"}], "rejected": "b"}"#,
            "field 'chosen[0].role'",
        ),
        (
            r#"{"chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}"#,
            "field 'rejected': its messages before the last differ",
        ),
        (
            r#"{"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
            "field 'prompt': missing",
        ),
        (
            r#"{"chosen": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}"#,
            "field 'chosen': expected the conversation to end",
        ),
        (
            r#"{"system": 1, "prompt": "q", "chosen": "a", "rejected": "b"}"#,
            "field 'system'",
        ),
        (
            r#"{"prompt": "q", "responses": ["a", "b"], "ranking": [0, 0]}"#,
            "field 'ranking'",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.contains(want),
            "{text}\n  expected {want:?}\n  got {got}"
        );
    }
    // The line number is the file's line.
    let got = match parse_jsonl::<PreferenceRecord>(
        "p.jsonl",
        "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n\n{\"prompt\": \"q\", \"chosen\": \"a\"}\n",
    ) {
        Ok(_) => panic!("parsed"),
        Err(e) => e.to_string(),
    };
    assert!(got.starts_with("p.jsonl:3: field 'rejected'"), "{got}");
}
