//! The HTTP API in process (the router called directly, no sockets) on a tiny random model:
//! the limits that keep one request from stalling or starving the others, OpenAI-shaped
//! refusals, and a failed batch that leaves the server answering without leaking internals.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rlhf_serve::{Engine, EngineConfig, ServeConfig};
use rlhf_tokenizer::Tokenizer;
use serde_json::{Value, json};
use tch::Device;
use tower::ServiceExt;

mod common;

struct Server {
    app: Router,
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
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
        ..Default::default()
    };
    let app = rlhf_serve::router(engine.clone(), tokenizer, cfg);
    Server {
        app,
        engine,
        _dir: dir,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends one request; returns the status and the body as JSON (or as a JSON string).
async fn call(
    app: &Router,
    method: &str,
    path: &str,
    ctype: &str,
    body: String,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", path, "application/json", body.to_string()).await
}

fn error_param(v: &Value) -> &str {
    v["error"]["param"].as_str().unwrap_or("")
}

#[test]
fn a_request_for_4000_prompts_is_refused_before_any_work() {
    let s = server();
    runtime().block_on(async {
        let prompts: Vec<String> = (0..4000).map(|i| format!("Jane {i}")).collect();
        let (status, body) = post(
            &s.app,
            "/v1/completions",
            json!({"model": "tiny", "prompt": prompts, "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_param(&body), "prompt");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4000 prompts")
        );
        // 8 prompts × n = 16 is 128 choices, the default cap: accepted; n = 17 is not.
        let eight: Vec<&str> = vec!["Jane"; 8];
        let (status, body) = post(
            &s.app,
            "/v1/completions",
            json!({"model": "tiny", "prompt": eight, "max_tokens": 1, "n": 16}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["choices"].as_array().unwrap().len(), 128);
        let nine: Vec<&str> = vec!["Jane"; 9];
        let (status, _) = post(
            &s.app,
            "/v1/completions",
            json!({"model": "tiny", "prompt": nine, "max_tokens": 1, "n": 16}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    });
    assert_eq!(s.engine.health().queued, 0);
}

#[test]
fn long_stop_sequences_are_refused_and_a_long_legal_one_works() {
    let s = server();
    runtime().block_on(async {
        let huge = "ab".repeat(125_000); // 250 kB
        let (status, body) = post(
            &s.app,
            "/v1/completions",
            json!({"model": "tiny", "prompt": "Jane", "stop": [huge, huge, huge, huge]}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_param(&body), "stop");
        let legal = "ab".repeat(512); // 1024 bytes, the default cap
        let (status, body) = post(
            &s.app,
            "/v1/completions",
            json!({"model": "tiny", "prompt": "Jane", "max_tokens": 20, "n": 4,
                   "stop": [legal, legal, legal, legal]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    });
}

#[test]
fn a_post_that_is_not_json_gets_415() {
    let s = server();
    runtime().block_on(async {
        let body = json!({"model": "tiny", "prompt": "Jane", "max_tokens": 1}).to_string();
        for ctype in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let (status, v) = call(&s.app, "POST", "/v1/completions", ctype, body.clone()).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ctype}: {v}");
            assert_eq!(v["error"]["code"], "unsupported_media_type");
        }
        let ctype = "application/json; charset=utf-8";
        let (status, v) = call(&s.app, "POST", "/v1/completions", ctype, body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    });
}

/// An injected panic inside the engine: the request in that batch gets a 500 whose message
/// holds an error id and none of the internal text; the next request is answered and
/// /health says the engine is alive and counts the failed batch.
#[test]
fn a_panicked_batch_leaves_the_server_answering_and_leaks_nothing() {
    let s = server();
    runtime().block_on(async {
        let ask = json!({"model": "tiny", "prompt": "Jane", "max_tokens": 4});
        s.engine.inject_panic();
        let (status, body) = post(&s.app, "/v1/completions", ask.clone()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("error id"), "{message}");
        for internal in ["panic", "injected", "engine", "libtorch", "thread"] {
            assert!(
                !message.contains(internal),
                "internal text `{internal}` in {message}"
            );
        }
        let (status, body) = post(&s.app, "/v1/completions", ask.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The same through a stream: the injected failure ends it with an error event.
        s.engine.inject_panic();
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let (status, body) = post(&s.app, "/v1/completions", streamed).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.as_str().unwrap();
        assert!(
            text.contains("error id") && !text.contains("injected"),
            "{text}"
        );
        // A client sees its batch fail while the engine unwinds; the count follows a moment
        // later, so /health is polled for it, with a bound.
        let t0 = std::time::Instant::now();
        let health = loop {
            let (status, health) =
                call(&s.app, "GET", "/health", "application/json", String::new()).await;
            assert_eq!(status, StatusCode::OK, "{health}");
            if health["engine"]["failed_batches"] == 2 || t0.elapsed().as_secs() >= 10 {
                break health;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(health["engine"]["alive"], true);
        assert_eq!(health["engine"]["failed_batches"], 2, "{health}");
    });
}

/// A temperature that is positive but below f32's range (1e-300 is 0 in f32) decodes greedily
/// instead of producing NaN probabilities.
#[test]
fn a_vanishing_temperature_is_greedy() {
    let s = server();
    runtime().block_on(async {
        let ask = |t: f64, seed: i64| {
            json!({"model": "tiny", "prompt": "Jane has", "max_tokens": 12, "temperature": t,
                   "seed": seed})
        };
        let (status, greedy) = post(&s.app, "/v1/completions", ask(0.0, 1)).await;
        assert_eq!(status, StatusCode::OK);
        for (t, seed) in [(1e-300, 2), (1e-30, 3), (5e-5, 4)] {
            let (status, tiny) = post(&s.app, "/v1/completions", ask(t, seed)).await;
            assert_eq!(status, StatusCode::OK, "{tiny}");
            assert_eq!(
                tiny["choices"][0]["text"], greedy["choices"][0]["text"],
                "temperature {t}"
            );
        }
    });
}

#[test]
fn chat_roles_and_fields_are_validated_like_openai() {
    let s = server();
    runtime().block_on(async {
        let chat = |messages: Value, extra: Value| {
            let mut body = json!({"model": "tiny", "messages": messages, "max_tokens": 2});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        let user = json!([{"role": "user", "content": "Jane"}]);
        let refused = [
            (
                chat(json!([{"role": "wizard", "content": "hi"}]), json!({})),
                "messages",
            ),
            (
                chat(
                    json!([{"role": "user", "content": "hi", "name": "x"}]),
                    json!({}),
                ),
                "messages",
            ),
            (
                chat(
                    user.clone(),
                    json!({"response_format": {"type": "json_object"}}),
                ),
                "response_format",
            ),
            (
                chat(user.clone(), json!({"tool_choice": "required"})),
                "tool_choice",
            ),
            (chat(user.clone(), json!({"store": true})), "store"),
            (
                chat(user.clone(), json!({"logit_bias": {"99999": 1}})),
                "logit_bias",
            ),
            (
                chat(user.clone(), json!({"logit_bias": {"5": 101}})),
                "logit_bias",
            ),
            (
                chat(user.clone(), json!({"logit_bias": {"a": 1}})),
                "logit_bias",
            ),
        ];
        for (body, param) in refused {
            let (status, v) = post(&s.app, "/v1/chat/completions", body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_eq!(error_param(&v), param, "{body}: {v}");
        }
        let (status, v) = post(
            &s.app,
            "/v1/chat/completions",
            chat(user.clone(), json!({"functions": []})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["code"], "unknown_parameter", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("functions")
        );
        let many: serde_json::Map<String, Value> =
            (0..301).map(|i| (i.to_string(), json!(1))).collect();
        let (status, _) = post(
            &s.app,
            "/v1/chat/completions",
            chat(user.clone(), json!({"logit_bias": many})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Neutral values of the take-only-if-neutral fields, and every role, pass.
        let all_roles = json!([
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Jane"},
            {"role": "assistant", "content": "has"},
            {"role": "user", "content": "12"},
        ]);
        let neutral = json!({"response_format": {"type": "text"}, "tool_choice": "none",
                             "store": false, "user": "u1", "metadata": {"k": "v"},
                             "logit_bias": {"5": -100, "6": 2.5}});
        let (status, v) = post(&s.app, "/v1/chat/completions", chat(all_roles, neutral)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    });
}

/// A +100 bias makes greedy decoding pick that token every step; -100 on the unbiased greedy
/// token makes it never appear.
#[test]
fn logit_bias_forces_and_bans_tokens() {
    let s = server();
    runtime().block_on(async {
        let ask = |bias: Value| {
            json!({"model": "tiny", "prompt": "Jane has", "max_tokens": 6, "temperature": 0,
                   "logprobs": 0, "logit_bias": bias})
        };
        let tokens = |v: &Value| -> Vec<String> {
            v["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        };
        let (_, plain) = post(&s.app, "/v1/completions", ask(json!({}))).await;
        let forced_id = 40; // some ordinary token of the tiny vocabulary
        let (status, forced) = post(
            &s.app,
            "/v1/completions",
            ask(json!({forced_id.to_string(): 100})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{forced}");
        let forced_tokens = tokens(&forced);
        assert_eq!(forced_tokens.len(), 6, "{forced}");
        assert!(
            forced_tokens.iter().all(|t| *t == forced_tokens[0]),
            "{forced_tokens:?}"
        );
        assert_ne!(tokens(&plain), forced_tokens);
        // Ban the first greedy token (its id from a token-id prompt round trip).
        let first = tokens(&plain)[0].clone();
        let tok = Tokenizer::from_dir(s._dir.path()).unwrap();
        let id = tok.encode(&first, false).unwrap()[0];
        let (status, banned) = post(
            &s.app,
            "/v1/completions",
            ask(json!({id.to_string(): -100})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(tokens(&banned)[0], first, "{banned}");
    });
}
