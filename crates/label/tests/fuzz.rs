//! Generated and mutated requests against the labeling app (in process, SQLite): whatever the
//! body or path, the app answers within bounded time with 2xx or a 4xx whose JSON names the
//! problem — never a panic, a 500 or a hang. Submissions are arbitrary JSON, plausible rankings
//! (permutations, ties, out-of-range and repeated indices, flags, long comments), and valid
//! bodies cut short, bit-flipped or made invalid UTF-8; paths take random submission ids.
//!
//! Cases: PROPTEST_CASES (default 64 per property).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use rlhf_data::SampleRecord;
use rlhf_label::{Db, WebConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    app: Router,
    token: String,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let (app, token) = rt.block_on(async {
            let db = Db::open(&url).await.unwrap();
            let samples: Vec<SampleRecord> = (0..50)
                .map(|i| SampleRecord {
                    prompt: format!("prompt {i}"),
                    responses: (0..4).map(|r| format!("response {r}")).collect(),
                })
                .collect();
            db.load_tasks(&samples).await.unwrap();
            let token = db.add_labeler("fuzz").await.unwrap();
            let cfg = WebConfig {
                overlap: 1000,
                ..Default::default()
            };
            (rlhf_label::router(db, cfg), token)
        });
        Fixture {
            app,
            token,
            rt,
            _dir: dir,
        }
    })
}

/// Sends a request as the labeler; returns the status and the body.
fn send(method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let f = fixture();
    f.rt.block_on(async {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", f.token))
            .body(Body::from(body))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), f.app.clone().oneshot(req))
            .await
            .expect("answered within 30 s")
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    })
}

/// Sends a request; checks the contract of the answer.
fn check(method: &str, path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let (status, bytes) = send(method, path, body);
    prop_assert!(t0.elapsed() < Duration::from_secs(30));
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "status {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() {
        let v: Value = serde_json::from_slice(&bytes).expect("errors are JSON");
        prop_assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    Ok(())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0i64..6).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9 \u{e9}<>\"']{0,20}".prop_map(Value::from),
        (0usize..70_000).prop_map(|n| Value::from("c".repeat(n))),
    ];
    let keys = prop::sample::select(vec![
        "task_id", "ranking", "flags", "comment", "0", "1", "3", "9", "x",
    ]);
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// A submission near the valid ones: the labeler's current task (or another id), a ranking of
/// the 4 responses, sometimes with ties or broken.
fn submission() -> impl Strategy<Value = Value> {
    let group = prop_oneof![
        4 => (0i64..5).prop_map(Value::from),
        1 => prop::collection::vec(0i64..5, 0..4).prop_map(Value::from),
    ];
    let ranking = prop_oneof![
        3 => Just(vec![0, 1, 2, 3]).prop_shuffle().prop_map(|v| json!(v)),
        2 => prop::collection::vec(group, 0..6).prop_map(Value::from),
    ];
    let flags = prop::collection::btree_map(
        (0usize..6).prop_map(|i| i.to_string()),
        prop::collection::vec(
            prop::sample::select(vec!["harmful", "false", "x", "sexual", "violent"]),
            0..3,
        ),
        0..3,
    );
    let comment = prop_oneof![
        Just(String::new()),
        "[a-z \u{e9}]{0,40}".prop_map(String::from),
        (0usize..70_000).prop_map(|n| "c".repeat(n)),
    ];
    let task = prop_oneof![3 => Just(None), 1 => (-3i64..60).prop_map(Some)];
    (task, ranking, flags, comment).prop_map(|(task, ranking, flags, comment)| {
        json!({"task_id": task, "ranking": ranking, "flags": flags, "comment": comment})
    })
}

/// A null `task_id` becomes the labeler's current task (from `/api/next`).
fn with_task(mut body: Value) -> Value {
    if body["task_id"].is_null() {
        let (_, bytes) = send("GET", "/api/next", vec![]);
        let next: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        body["task_id"] = json!(next["task"]["id"].as_i64().unwrap_or(1));
    }
    body
}

proptest! {
    #![proptest_config(rlhf_fuzz::config(64))]

    #[test]
    fn any_json_submission_gets_2xx_or_a_4xx(v in value()) {
        check("POST", "/api/submit", v.to_string().into_bytes())?;
    }

    #[test]
    fn plausible_submissions_get_2xx_or_a_4xx(v in submission()) {
        check("POST", "/api/submit", with_task(v).to_string().into_bytes())?;
    }

    #[test]
    fn mutated_submissions_get_2xx_or_a_4xx(
        v in submission(),
        at in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..6),
        how in 0u8..3,
    ) {
        let mut bytes = with_task(v).to_string().into_bytes();
        match how {
            0 => bytes.truncate(at.index(bytes.len() + 1)),
            1 => {
                for (i, bit) in flips {
                    let j = i.index(bytes.len());
                    bytes[j] ^= 1 << bit;
                }
            }
            _ => {
                let j = at.index(bytes.len() + 1);
                bytes.splice(j..j, [0xff, 0xfe, 0xc3]);
            }
        }
        check("POST", "/api/submit", bytes)?;
    }

    #[test]
    fn submission_paths_get_2xx_or_a_4xx(
        id in prop_oneof![any::<i64>().prop_map(|i| i.to_string()), "[a-z%0-9.]{0,30}"]
    ) {
        check("GET", &format!("/api/submissions/{id}"), vec![])?;
    }
}
