//! `rlhf eval` end to end on tiny random models: a model against itself ties everywhere with zero
//! KL, two different models give intervals around their means and every output file, the reward
//! model and LLM judges (the latter against a mock OpenAI-compatible server on loopback) work,
//! and bad inputs exit 1 with a message naming the culprit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use common::{rlhf, rlhf_with_env, stderr};
use rlhf_model::Head;
use serde_json::{Value, json};

/// A tiny random checkpoint (weights from `seed`) with a context of 512.
fn checkpoint(dir: &Path, seed: i64, vocab: usize, head: Head) {
    common::tiny_checkpoint_with_head(dir, vocab, 512, seed, head);
}

/// A dir holding models `a` (seed 0), `b` (seed 1), and the task world's eval prompts.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, seed) in [("a", 0), ("b", 1)] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            checkpoint(&dir.path().join(name), seed, 300, Head::Lm);
        }
        let cfg = rlhf_data::WorldConfig {
            corpus_docs: 8,
            sft_examples: 8,
            prompts: 8,
            eval_examples: 8,
            max_steps: 2,
            ..Default::default()
        };
        rlhf_data::write_world(&dir.path().join("world"), &cfg).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn prompts(&self) -> String {
        self.path("world/eval.jsonl")
    }
}

fn eval(f: &Fixture, a: &str, b: &str, extra: &[&str]) -> Output {
    let (a, b, p) = (f.path(a), f.path(b), f.prompts());
    let args = [
        &["eval", "--model", &a, "--baseline", &b, "--prompts", &p][..],
        &["--max-new-tokens", "8", "--bootstrap", "200"],
        extra,
    ]
    .concat();
    rlhf(&args)
}

fn read_json(path: impl AsRef<Path>) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_ordered(ci: &Value) {
    let (m, lo, hi) = (ci["mean"].as_f64(), ci["lo"].as_f64(), ci["hi"].as_f64());
    let (m, lo, hi) = (m.unwrap(), lo.unwrap(), hi.unwrap());
    assert!(lo <= m && m <= hi, "{ci}");
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

#[test]
fn a_model_against_itself_ties_everywhere_with_zero_kl() {
    let f = Fixture::new();
    let out = f.path("out");
    let r = eval(
        &f,
        "a",
        "a",
        &["--judge", "oracle", "--temperature", "0", "--out", &out],
    );
    assert!(r.status.success(), "{}", stderr(&r));
    let v = read_json(Path::new(&out).join("eval.json"));
    assert_eq!(
        v["win_rate"],
        json!({ "mean": 0.5, "lo": 0.5, "hi": 0.5 }),
        "{v}"
    );
    assert_eq!(v["ties"], v["n"]);
    assert_eq!(v["kl"]["mean"].as_f64(), Some(0.0), "{v}");
    assert!(
        stderr(&r).contains("win rate of A over B"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn two_models_give_intervals_around_the_mean_and_every_file() {
    let f = Fixture::new();
    let out = f.path("out");
    let extra = [
        "--judge", "oracle", "--n", "6", "--seed", "3", "--out", &out,
    ];
    let r = eval(&f, "a", "b", &extra);
    assert!(r.status.success(), "{}", stderr(&r));
    let out = PathBuf::from(out);
    let v = read_json(out.join("eval.json"));
    for key in ["win_rate", "score_a", "score_b", "kl"] {
        assert_ordered(&v[key]);
    }
    assert_eq!(v["n"], 6);
    assert_eq!(v["judge"], "oracle");
    assert_eq!(v["seed"], 3);
    assert_eq!(v["temperature"], 1.0);
    assert!(v["length_a"].as_f64().unwrap() > 0.0 && v["length_b"].as_f64().unwrap() > 0.0);
    assert_eq!(
        ["wins", "ties", "losses"]
            .map(|k| v[k].as_u64().unwrap())
            .iter()
            .sum::<u64>(),
        6
    );
    let lines: Vec<Value> = std::fs::read_to_string(out.join("responses.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        for key in [
            "prompt",
            "response_a",
            "response_b",
            "score_a",
            "score_b",
            "outcome",
        ] {
            assert!(!l[key].is_null(), "{key} missing in {l}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| win rate of A over B |") && md.contains("scores.svg"),
        "{md}"
    );
    assert!(
        std::fs::read_to_string(out.join("scores.svg"))
            .unwrap()
            .contains("<svg")
    );
    assert!(
        std::fs::read(out.join("scores.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
}

#[test]
fn reward_model_judge_scores_both_models() {
    let f = Fixture::new();
    let rm = f.path("rm");
    std::fs::create_dir(&rm).unwrap();
    checkpoint(Path::new(&rm), 2, 300, Head::Scalar);
    let out = f.path("out");
    let judge = format!("rm:{rm}");
    let r = eval(
        &f,
        "a",
        "b",
        &["--judge", &judge, "--n", "4", "--out", &out],
    );
    assert!(r.status.success(), "{}", stderr(&r));
    let v = read_json(Path::new(&out).join("eval.json"));
    assert_ordered(&v["score_a"]);
    assert_ordered(&v["score_b"]);
    assert_eq!(v["judge"], judge);
}

/// A loopback OpenAI-compatible server: `GET /v1/models` lists one model, "judge"; every other
/// request gets `status` and a chat completion whose content is `answer`. Returns its URL and
/// the chat requests it received.
fn mock_judge(status: u16, answer: &str, max_requests: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let body = json!({
        "id": "x", "object": "chat.completion", "model": "judge",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                     "finish_reason": "stop"}],
    })
    .to_string();
    let models =
        json!({ "object": "list", "data": [{ "id": "judge", "object": "model" }] }).to_string();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max_requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head += &line;
            }
            let mut req = vec![0; len];
            let _ = reader.read_exact(&mut req);
            let (status, body) = if head.starts_with("GET /v1/models") {
                (200, models.clone())
            } else {
                log.lock()
                    .unwrap()
                    .push(head + "\r\n" + &String::from_utf8_lossy(&req));
                (status, body.clone())
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

/// The texts shown as Response A and Response B in a judge request.
fn shown(request: &str) -> (String, String) {
    let body: Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let text = body["messages"][1]["content"].as_str().unwrap().to_string();
    let a = text.split("[Response A]\n").nth(1).unwrap();
    let (a, rest) = a.split_once("\n\n[Response B]\n").unwrap();
    let b = rest.split("\n\nAnswer (A or B):").next().unwrap();
    (a.to_string(), b.to_string())
}

#[test]
fn llm_judge_asks_both_orders_so_a_biased_judge_splits() {
    let f = Fixture::new();
    let (url, seen) = mock_judge(200, "A", 100);
    let out = f.path("out");
    let judge = format!("openai:{url}");
    let (a, b, p) = (f.path("a"), f.path("b"), f.prompts());
    let args = [
        "eval",
        "--model",
        &a,
        "--baseline",
        &b,
        "--prompts",
        &p,
        "--judge",
        &judge,
        "--n",
        "3",
        "--max-new-tokens",
        "8",
        "--out",
        &out,
    ];
    let r = rlhf_with_env(&args, &[("OPENAI_API_KEY", "sk-test")]);
    assert!(r.status.success(), "{}", stderr(&r));
    let v = read_json(Path::new(&out).join("eval.json"));
    assert_eq!(v["win_rate"]["mean"], 0.5, "{v}");
    assert_eq!(v["ties"], 3);
    assert!(v["score_a"].is_null());
    let outcomes: Vec<f64> = std::fs::read_to_string(Path::new(&out).join("responses.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["outcome"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(outcomes, vec![0.5; 3]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "two requests per prompt");
    for pair in seen.chunks(2) {
        assert!(
            pair[0].starts_with("POST /v1/chat/completions"),
            "{}",
            pair[0]
        );
        assert!(
            pair[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-test")
        );
        assert!(
            pair[0].contains(r#""model":"judge""#),
            "the model the server lists first: {}",
            pair[0]
        );
        let ((a1, b1), (a2, b2)) = (shown(&pair[0]), shown(&pair[1]));
        assert_eq!((a1, b1), (b2, a2), "the second request swaps the order");
    }
}

#[test]
fn llm_judge_http_error_names_the_url_and_status() {
    let f = Fixture::new();
    let (url, _) = mock_judge(503, "A", 10);
    let judge = format!("openai:{url}");
    let r = eval(
        &f,
        "a",
        "b",
        &["--judge", &judge, "--n", "1", "--judge-retries", "1"],
    );
    assert_clean_failure(&r, &[&format!("{url}/v1/chat/completions"), "503"]);
}

#[test]
fn bad_prompt_line_names_file_and_line() {
    let f = Fixture::new();
    let prompts = f.path("bad.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"Sort the list: 3, 1, 2.\"}\n{\"promt\": \"x\"}\n",
    )
    .unwrap();
    let (a, b) = (f.path("a"), f.path("b"));
    let args = [
        "eval",
        "--model",
        &a,
        "--baseline",
        &b,
        "--prompts",
        &prompts,
        "--judge",
        "oracle",
    ];
    assert_clean_failure(&rlhf(&args), &["bad.jsonl:2"]);

    // Well-formed, but not a task-world prompt: the oracle refuses before any sampling.
    std::fs::write(&prompts, "{\"prompt\": \"Tell me a joke.\"}\n").unwrap();
    assert_clean_failure(&rlhf(&args), &["bad.jsonl: prompt 1", "does not recognise"]);
}

#[test]
fn missing_reward_model_dir_is_a_clear_error() {
    let f = Fixture::new();
    let judge = format!("rm:{}", f.path("no-such-rm"));
    let r = eval(&f, "a", "b", &["--judge", &judge]);
    assert_clean_failure(&r, &["no-such-rm", "no such reward-model directory"]);
}

#[test]
fn models_with_different_tokenizers_are_rejected() {
    let f = Fixture::new();
    let c = f.path("c");
    std::fs::create_dir(&c).unwrap();
    checkpoint(Path::new(&c), 0, 280, Head::Lm);
    let r = eval(&f, "a", "c", &["--judge", "oracle", "--n", "1"]);
    assert_clean_failure(&r, &["share a tokenizer"]);
}

#[test]
fn help_documents_every_option_and_default() {
    let r = rlhf(&["eval", "--help"]);
    assert!(r.status.success());
    let help = String::from_utf8_lossy(&r.stdout);
    for needle in [
        "--model",
        "--baseline",
        "--prompts",
        "--judge",
        "--judge-model",
        "--judge-timeout",
        "--out",
        "--n",
        "--temperature",
        "--max-new-tokens",
        "--seed",
        "--bootstrap",
        "--batch-size",
        "[default: 1]",
        "[default: 64]",
        "[default: 0]",
        "[default: 1000]",
        "[default: 32]",
        "[default: the first model the server lists]",
        "[default: 120]",
        "[default: all]",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in:\n{help}");
    }
}
