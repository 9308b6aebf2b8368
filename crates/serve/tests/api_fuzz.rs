//! Generated and mutated request bodies against the API (in process, tiny model): whatever the
//! body, the server answers within bounded time with 200 or an OpenAI-shaped 4xx — never a
//! panic, a 500 or a hang. Bodies are JSON built from the endpoints' own field names with values
//! of every type and size (huge numbers, long strings, deep nesting), and valid bodies cut short,
//! bit-flipped or made invalid UTF-8.
//!
//! Cases: PROPTEST_CASES (default 64 per property here, so CI stays short);
//! `scripts/fuzz-api.sh N` runs a long campaign.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use rlhf_serve::{Engine, EngineConfig, ServeConfig};
use rlhf_tokenizer::Tokenizer;
use serde_json::{Value, json};
use tch::Device;
use tower::ServiceExt;

mod common;

struct Fixture {
    app: Router,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::tiny_model(dir.path());
        let engine = Engine::start(
            dir.path().to_path_buf(),
            Device::Cpu,
            EngineConfig::default(),
        )
        .unwrap();
        let tokenizer = Tokenizer::from_dir(dir.path()).unwrap();
        let cfg = ServeConfig {
            model_name: "tiny".into(),
            // Small enough that generated bodies also hit the size limit.
            max_body_bytes: 64 << 10,
            ..Default::default()
        };
        let app = rlhf_serve::router(engine, tokenizer, cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Fixture { app, rt, _dir: dir }
    })
}

const FIELDS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream",
    "stream_options",
    "tools",
    "user",
    "metadata",
    "response_format",
    "tool_choice",
    "store",
    "service_tier",
    "echo",
    "best_of",
    "suffix",
    "role",
    "content",
    "include_usage",
    "type",
    "text",
    "lora_name",
    "lora_path",
    "wizard",
];

/// Any JSON value, nested up to 6 deep, with keys mostly from the API's own names.
fn value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        (0u64..40).prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1e-300)),
    ];
    let string = prop_oneof![
        Just(Value::from("tiny")),
        Just(Value::from("user")),
        Just(Value::from("assistant")),
        "[a-zA-Z0-9 .,\\n\u{e9}\u{1F600}]{0,40}".prop_map(Value::from),
        (0usize..20_000).prop_map(|n| Value::from("ab".repeat(n))),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number,
        string,
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// Sampling settings around their valid ranges (each often absent, sometimes out of range).
fn settings() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let text = "[a-zA-Z0-9 .,\\n\u{e9}]{0,12}";
    let bias = prop::collection::btree_map(
        prop_oneof![
            9 => (0u32..310).prop_map(|i| i.to_string()),
            1 => text.prop_map(String::from),
        ],
        -101.0f64..101.0,
        0..4,
    );
    (
        (
            prop::option::of(-0.1f64..2.1),
            prop::option::of(-0.05f64..1.05),
            prop::option::of(0u32..18),
            prop::option::of(-1i64..70),
            prop::option::of(any::<i64>()),
        ),
        (
            prop::option::of(-2.1f64..2.1),
            prop::option::of(prop_oneof![
                text.prop_map(Value::from),
                prop::collection::vec(text, 0..6).prop_map(Value::from),
            ]),
            prop::option::of(any::<bool>()),
            prop::option::of(0u32..6),
            prop::option::of(bias),
        ),
    )
        .prop_map(|((t, p, n, m, seed), (pen, stop, stream, lp, bias))| {
            let mut o = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    o.insert(k.to_string(), v);
                }
            };
            put("temperature", t.map(Value::from));
            put("top_p", p.map(Value::from));
            put("n", n.map(Value::from));
            put("max_tokens", m.map(Value::from));
            put("seed", seed.map(Value::from));
            put("frequency_penalty", pen.map(Value::from));
            put("stop", stop);
            put("stream", stream.map(Value::from));
            put("logprobs", lp.map(Value::from));
            put("logit_bias", bias.map(|b| json!(b)));
            o
        })
}

/// A body of either endpoint with random settings, now and then an arbitrary extra field.
fn plausible() -> impl Strategy<Value = (&'static str, Value)> {
    let content = prop_oneof![
        8 => "[a-zA-Z0-9 .,?\\n\u{e9}\u{1F600}]{0,60}".prop_map(Value::from),
        1 => value(),
    ];
    let role = prop_oneof![
        6 => Just("user"),
        1 => Just("system"),
        1 => Just("assistant"),
        1 => Just("developer"),
        1 => Just("wizard"),
    ];
    let extra = || prop::option::weighted(0.2, (prop::sample::select(FIELDS), value()));
    let chat = (
        prop::collection::vec((role, content.clone()), 1..4),
        settings(),
        extra(),
    )
        .prop_map(|(messages, mut b, extra)| {
            b.insert("model".into(), json!("tiny"));
            let m: Vec<Value> = messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect();
            b.insert("messages".into(), json!(m));
            // Chat takes logprobs as a boolean (completions as a count).
            if let Some(k) = b.get("logprobs").and_then(Value::as_u64) {
                b.insert("logprobs".into(), json!(k % 2 == 1));
            }
            if let Some((k, v)) = extra {
                b.insert(k.to_string(), v);
            }
            ("/v1/chat/completions", Value::Object(b))
        });
    let completion = (content, settings(), extra()).prop_map(|(prompt, mut b, extra)| {
        b.insert("model".into(), json!("tiny"));
        b.insert("prompt".into(), prompt);
        if let Some((k, v)) = extra {
            b.insert(k.to_string(), v);
        }
        ("/v1/completions", Value::Object(b))
    });
    prop_oneof![chat, completion]
}

/// Sends `body`; checks the answer's contract and returns its status.
fn check(path: &str, body: Vec<u8>) -> Result<StatusCode, TestCaseError> {
    let f = fixture();
    let t0 = Instant::now();
    let (status, bytes) = f.rt.block_on(async {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), f.app.clone().oneshot(req))
            .await
            .expect("answered within 60 s")
            .unwrap();
        let status = resp.status();
        let bytes = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
            .await
            .expect("body within 60 s")
            .unwrap()
            .to_bytes();
        (status, bytes)
    });
    prop_assert!(t0.elapsed() < Duration::from_secs(60));
    if std::env::var_os("FUZZ_TRACE").is_some() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let why = v["error"]["param"].as_str().unwrap_or("-").to_string();
        eprintln!("FUZZ {path} {status} {why}");
    }
    prop_assert!(
        [200u16, 400, 404, 413].contains(&status.as_u16()),
        "status {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status != StatusCode::OK {
        let v: Value = serde_json::from_slice(&bytes).expect("errors are JSON");
        prop_assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        prop_assert_eq!(v["error"]["type"].as_str(), Some("invalid_request_error"));
    }
    Ok(status)
}

proptest! {
    #![proptest_config(rlhf_fuzz::config(64))]

    /// Arbitrary JSON to both endpoints.
    #[test]
    fn any_json_gets_200_or_an_openai_4xx(v in value(), chat in any::<bool>()) {
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        check(path, v.to_string().into_bytes())?;
    }

    /// Well-formed requests with random settings and extra fields.
    #[test]
    fn plausible_requests_get_200_or_an_openai_4xx((path, body) in plausible()) {
        check(path, body.to_string().into_bytes())?;
    }

    /// A valid request's bytes cut short, bit-flipped, or with invalid UTF-8 spliced in.
    #[test]
    fn mutated_bytes_get_200_or_an_openai_4xx(
        (path, body) in plausible(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..6),
        junk in prop::collection::vec(prop_oneof![Just(0xffu8), Just(0xc3), Just(0x80), Just(0)], 0..4),
        how in 0u8..3,
    ) {
        let mut bytes = body.to_string().into_bytes();
        match how {
            0 => bytes.truncate(cut.index(bytes.len() + 1)),
            1 => {
                for (at, bit) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= 1 << bit;
                }
            }
            _ => {
                let at = cut.index(bytes.len() + 1);
                bytes.splice(at..at, junk);
            }
        }
        check(path, bytes)?;
    }
}
