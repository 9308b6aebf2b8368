//! `rlhf flan build|eval` and `rlhf distill` end to end on tiny random models: the held-out
//! protocol in the written files, rank classification picking one of each item's options, bad
//! eval files named by line and field, and distillation from a teacher behind `rlhf serve`
//! whose labels are exactly what the server answers to the same few-shot request.

mod common;

use std::path::Path;

use common::{rlhf, stderr, tiny_checkpoint};
use rlhf_client::types::{ChatMessage, ChatRequest};
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn flan_build_holds_clusters_out_and_eval_scores_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("flan");
    let d = data.to_str().unwrap();
    let o = rlhf(&[
        "flan",
        "build",
        "--out",
        d,
        "--seed",
        "2",
        "--held-out",
        "facts,nli",
        "--set",
        "train_per_cluster=12",
        "--set",
        "eval_per_cluster=4",
        "--set",
        "corpus_docs=10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let train = lines(&data.join("train.jsonl"));
    assert_eq!(train.len(), 12 * 8);
    assert!(
        train
            .iter()
            .all(|r| r["cluster"] != "facts" && r["cluster"] != "nli")
    );
    let held = lines(&data.join("eval-held-out.jsonl"));
    assert_eq!(held.len(), 8);
    assert!(
        held.iter()
            .all(|r| r["cluster"] == "facts" || r["cluster"] == "nli")
    );
    let nli = held.iter().find(|r| r["cluster"] == "nli").unwrap();
    assert!(
        nli["prompt"]
            .as_str()
            .unwrap()
            .contains("\nOPTIONS:\n- yes\n- it is not possible to tell\n- no")
    );
    assert_eq!(lines(&data.join("eval-seen.jsonl")).len(), 8 * 4);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("flan.json")).unwrap()).unwrap();
    assert_eq!(manifest["clusters"].as_array().unwrap().len(), 10);
    assert_eq!(
        std::fs::read_to_string(data.join("corpus.txt"))
            .unwrap()
            .lines()
            .count(),
        10
    );

    let model = dir.path().join("m");
    tiny_checkpoint(&model, 300, 512, 0);
    let scores = dir.path().join("scores.jsonl");
    let o = rlhf(&[
        "flan",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.join("eval-held-out.jsonl").to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| facts |") && table.contains("| nli |") && table.contains("| all |"),
        "{table}"
    );
    let s = lines(&scores);
    assert_eq!(s.len(), held.len());
    for (score, item) in s.iter().zip(&held) {
        let k = item["options"].as_array().unwrap().len() as u64;
        assert!(score["chosen"].as_u64().unwrap() < k);
        let right = item["options"][score["chosen"].as_u64().unwrap() as usize] == item["answer"];
        assert_eq!(score["rank_correct"].as_bool().unwrap(), right);
    }

    // A bad item: its answer is not among its options.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\":\"p\",\"answer\":\"a\",\"options\":[\"a\",\"b\"],\"cluster\":\"nli\"}\n\
         {\"prompt\":\"p\",\"answer\":\"c\",\"options\":[\"a\",\"b\"],\"cluster\":\"nli\"}\n",
    )
    .unwrap();
    let o = rlhf(&[
        "flan",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("bad.jsonl:2") && e.contains("'options'") && e.contains("not among"),
        "{e}"
    );
    let o = rlhf(&["flan", "build", "--out", d, "--held-out", "poetry"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown cluster \"poetry\""),
        "{}",
        stderr(&o)
    );
}

fn write(path: &Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

const QUESTIONS: [&str; 5] = [
    "Jane has 12 flowers.",
    "Sort the list: 3, 1, 2.",
    "Tom buys 4 apples and eats 1.",
    "How many flowers does she have left?",
    "Answer in exactly three words.",
];

#[test]
fn distillation_from_a_teacher_behind_rlhf_serve() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    let student = dir.path().join("student");
    tiny_checkpoint(&teacher, 300, 256, 0);
    tiny_checkpoint(&student, 300, 256, 1);
    let pool = dir.path().join("pool.jsonl");
    write(
        &pool,
        &QUESTIONS.map(|q| serde_json::json!({ "prompt": q })),
    );
    let gold = dir.path().join("gold.jsonl");
    let gold_pairs = [
        ("Jane has 12 flowers.", "The answer is 7."),
        ("Sort 3, 1, 2.", "1, 2, 3"),
    ];
    write(
        &gold,
        &gold_pairs.map(|(p, c)| serde_json::json!({ "prompt": p, "completion": c })),
    );
    let server = common::serve(&teacher);
    let out = dir.path().join("out");
    let o = rlhf(&[
        "distill",
        "--teacher",
        &format!("openai:{}", server.url),
        "--pool",
        pool.to_str().unwrap(),
        "--gold",
        gold.to_str().unwrap(),
        "--student",
        student.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "distill.max_new_tokens=6",
        "--set",
        "distill.shots=2",
        "--set",
        "student.eval_fraction=0",
        "--set",
        "student.trainer.max_steps=2",
        "--set",
        "student.trainer.batch_size=2",
        "--set",
        "student.trainer.warmup_steps=0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let kept = lines(&out.join("labels.jsonl"));
    let dropped = lines(&out.join("dropped.jsonl"));
    assert_eq!(kept.len() + dropped.len(), QUESTIONS.len());
    assert!(!kept.is_empty(), "every label was dropped: {dropped:?}");
    // Each kept label is what the server answers to the same few-shot request.
    let client = rlhf_client::Client::from_url(server.url.clone());
    for label in &kept {
        let q = label["prompt"].as_str().unwrap();
        let mut messages = Vec::new();
        for (p, c) in gold_pairs {
            messages.push(ChatMessage::user(p));
            messages.push(ChatMessage::assistant(c));
        }
        messages.push(ChatMessage::user(q));
        let resp = client
            .chat(&ChatRequest {
                model: "teacher".into(),
                messages,
                max_tokens: Some(6),
                temperature: Some(0.0),
                seed: Some(0),
                ..Default::default()
            })
            .unwrap();
        let text = resp.choices[0].message.content.clone().unwrap_or_default();
        assert_eq!(label["completion"].as_str().unwrap(), text.trim(), "{q}");
    }
    // The student was fine-tuned on them: a checkpoint whose weights moved.
    let before = std::fs::read(student.join("model.safetensors")).unwrap();
    let after = std::fs::read(out.join("student/model.safetensors")).unwrap();
    assert_ne!(before, after);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["pool"], 5);
    assert_eq!(report["kept"].as_u64().unwrap() as usize, kept.len());
    assert_eq!(report["student"]["steps"], 2);
}

#[test]
fn a_local_teacher_is_adapted_on_the_gold_labels_first() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    tiny_checkpoint(&teacher, 300, 256, 0);
    let pool = dir.path().join("pool.jsonl");
    write(
        &pool,
        &QUESTIONS.map(|q| serde_json::json!({ "prompt": q })),
    );
    let gold = dir.path().join("gold.jsonl");
    write(
        &gold,
        &(0..4)
            .map(
                |i| serde_json::json!({ "prompt": QUESTIONS[i], "completion": "The answer is 7." }),
            )
            .collect::<Vec<_>>(),
    );
    let out = dir.path().join("out");
    let o = rlhf(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--pool",
        pool.to_str().unwrap(),
        "--gold",
        gold.to_str().unwrap(),
        "--student",
        teacher.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--label-only",
        "--set",
        "adapt.trainer.max_steps=60",
        "--set",
        "adapt.trainer.batch_size=4",
        "--set",
        "adapt.trainer.warmup_steps=0",
        "--set",
        "adapt.trainer.lr=3e-3",
        "--set",
        "distill.max_new_tokens=8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("teacher/model.safetensors").exists());
    assert!(
        !out.join("student").exists(),
        "--label-only trains no student"
    );
    // Sixty steps at 3e-3 on one answer: the adapted teacher gives it to the pool. (Thirty at
    // 1e-2 overshot now and then, and the trained prompts came back empty.)
    let kept = lines(&out.join("labels.jsonl"));
    let right = kept
        .iter()
        .filter(|l| l["completion"] == "The answer is 7.")
        .count();
    assert!(
        right >= 4,
        "kept {kept:?}\ndropped {:?}\n{}",
        std::fs::read_to_string(out.join("dropped.jsonl")),
        stderr(&o)
    );
    // Bad inputs: a chat record as gold, a bad teacher URL.
    let bad = dir.path().join("bad.jsonl");
    write(
        &bad,
        &[
            serde_json::json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        ],
    );
    let o = rlhf(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--pool",
        pool.to_str().unwrap(),
        "--gold",
        bad.to_str().unwrap(),
        "--student",
        teacher.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.jsonl:1"), "{}", stderr(&o));
    let o = rlhf(&[
        "distill",
        "--teacher",
        "openai:localhost:1",
        "--pool",
        "p",
        "--student",
        "s",
        "--out",
        "o",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("http://"), "{}", stderr(&o));
}
