//! `rlhf serve` through the library's own client (`rlhf-client`): the same round trip as the
//! Python tests with the official client, plus the client's retries, backoff and timeout
//! against mock servers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tiny_checkpoint;
use rlhf_client::types::{ChatMessage, ChatRequest, CompletionRequest, Prompt, StopSeq};
use rlhf_client::{Client, ClientConfig, ClientError};

/// A running `rlhf serve` of a tiny random model, killed on drop.
struct Server {
    _proc: common::Served,
    url: String,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    tiny_checkpoint(&model, 300, 128, 0);
    let proc = common::serve(&model);
    Server {
        url: proc.url.clone(),
        _proc: proc,
        _dir: dir,
    }
}

fn client(url: &str, retries: u32) -> Client {
    Client::new(ClientConfig {
        max_retries: retries,
        initial_backoff: Duration::from_millis(10),
        ..ClientConfig::new(url)
    })
}

fn chat_req(extra: impl FnOnce(&mut ChatRequest)) -> ChatRequest {
    let mut r = ChatRequest {
        model: "m".into(),
        messages: vec![ChatMessage::user("Jane has 12 flowers. How many?")],
        max_tokens: Some(20),
        temperature: Some(0.0),
        ..Default::default()
    };
    extra(&mut r);
    r
}

#[test]
fn rust_client_round_trip_against_rlhf_serve() {
    let srv = server();
    let c = client(&srv.url, 0);
    let models = c.models().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, "m");

    let comp = c
        .completion(&CompletionRequest {
            model: "m".into(),
            prompt: Prompt::Texts(vec!["Jane has".into(), "Tom buys".into()]),
            max_tokens: Some(6),
            temperature: Some(0.0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(comp.choices.len(), 2);
    let usage = comp.usage.unwrap();
    assert!(usage.completion_tokens >= 2 && usage.completion_tokens <= 12);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let whole = c.chat(&chat_req(|_| {})).unwrap();
    let text = whole.choices[0].message.content.clone().unwrap();
    assert!(
        text.len() >= 6,
        "a random tiny model says something: {text:?}"
    );
    let streamed = c
        .chat_stream(&chat_req(|_| {}))
        .unwrap()
        .collect_text(0)
        .unwrap();
    assert_eq!(streamed, text);

    // n = 2 with a seed: reproducible, and the two choices differ.
    let seeded = |seed| {
        c.chat(&chat_req(|r| {
            (r.n, r.temperature, r.seed) = (Some(2), Some(1.0), Some(seed));
        }))
        .unwrap()
        .choices
        .into_iter()
        .map(|ch| ch.message.content.unwrap())
        .collect::<Vec<_>>()
    };
    let (a, b) = (seeded(5), seeded(5));
    assert_eq!(a, b);
    assert_ne!(a[0], a[1]);

    // A stop sequence taken from the middle of the greedy answer cuts it there.
    let mid = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop: String = text[mid..].chars().take(2).collect();
    let cut = c
        .chat(&chat_req(|r| r.stop = Some(StopSeq::One(stop.clone()))))
        .unwrap();
    assert_eq!(
        cut.choices[0].message.content.as_deref(),
        Some(&text[..text.find(&stop).unwrap()])
    );
    assert_eq!(cut.choices[0].finish_reason.as_deref(), Some("stop"));

    // Errors come back as statuses with OpenAI's body, and are not retried.
    let err = c
        .chat(&chat_req(|r| r.model = "gpt-4o".into()))
        .unwrap_err();
    match &err {
        ClientError::Status { status, code, .. } => {
            assert_eq!((*status, code.as_deref()), (404, Some("model_not_found")));
        }
        e => panic!("expected a 404, got {e}"),
    }
    let err = c
        .chat(&chat_req(|r| r.max_tokens = Some(1000)))
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("context"), "{err}");
}

/// A one-thread HTTP server answering the first `fails` requests with 503 (Retry-After: 0),
/// then 200 with a model list; returns its URL and the request counter.
fn flaky(fails: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = if n < fails {
                (
                    "503 Service Unavailable",
                    r#"{"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded"}}"#,
                )
            } else {
                (
                    "200 OK",
                    r#"{"object":"list","data":[{"id":"x","object":"model","created":0,"owned_by":"me"}]}"#,
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 0\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn client_retries_server_errors_then_gives_up() {
    let (url, seen) = flaky(2);
    assert_eq!(client(&url, 3).models().unwrap()[0].id, "x");
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    let (url, seen) = flaky(5);
    let err = client(&url, 1).models().unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), 2, "one try plus one retry");
    match err {
        ClientError::Status {
            status, message, ..
        } => assert_eq!((status, message.as_str()), (503, "busy")),
        e => panic!("expected the 503, got {e}"),
    }
}

#[test]
fn client_times_out_and_backs_off_exponentially() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(vec![]));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            keep.lock().unwrap().push(s);
        }
    });
    let c = Client::new(ClientConfig {
        timeout: Duration::from_millis(200),
        max_retries: 2,
        initial_backoff: Duration::from_millis(100),
        ..ClientConfig::new(&url)
    });
    let t0 = Instant::now();
    let err = c.models().unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    // Three tries of 200 ms, plus backoffs of 50–100 ms and 100–200 ms.
    assert!(took >= Duration::from_millis(750), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(held.lock().unwrap().len(), 3);
}
