//! A blocking client for OpenAI-compatible servers: models, completions, chat, and streamed chat,
//! with a timeout per request and retries with exponential backoff (and jitter) on the failures
//! that retrying can fix: no connection, 408, 409, 429 and 5xx, honouring `Retry-After`.
//!
//! Not here: the wire types (`types.rs`), prompts for judges (their callers).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, CompletionRequest, CompletionResponse, ErrorBody,
    ModelCard, ModelList,
};

/// Where the server is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `http://host:port/v1`; `/v1` is added when missing.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`. `ClientConfig::new` reads `OPENAI_API_KEY`.
    pub api_key: Option<String>,
    /// Limit on a whole request (for a stream: on the wait for its first byte and between
    /// bytes). Generous, since a judge on a busy server can take a while.
    pub timeout: Duration,
    /// Retries after the first try (so `max_retries + 1` tries at most). Three, like OpenAI's
    /// clients' two plus one: enough to ride out a restart.
    pub max_retries: u32,
    /// First backoff; doubled after each failure, capped at `max_backoff`, scaled by a random
    /// factor in [0.5, 1] so that many clients do not retry in lockstep.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(120),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// The client. Cheap to clone; share it between threads.
#[derive(Debug, Clone)]
pub struct Client {
    cfg: ClientConfig,
    base: String,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
}

/// What one try gave: a value, or an error plus how long the server asked us to wait.
type Try<T> = std::result::Result<T, (ClientError, Option<Duration>)>;

impl Client {
    pub fn new(cfg: ClientConfig) -> Self {
        let trimmed = cfg.base_url.trim_end_matches('/');
        let base = if trimmed.ends_with("/v1") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1")
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let stream_agent = ureq::Agent::config_builder()
            .timeout_connect(Some(cfg.timeout))
            .timeout_recv_response(Some(cfg.timeout))
            .timeout_per_read(Some(cfg.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            cfg,
            base,
            agent,
            stream_agent,
        }
    }

    /// A client with the default timeout and retries.
    pub fn from_url(base_url: impl Into<String>) -> Self {
        Self::new(ClientConfig::new(base_url))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> Result<Vec<ModelCard>> {
        let op = format!("GET {}/models", self.base);
        let list: ModelList = self.retrying(&op, || {
            let resp = self.authorized(self.agent.get(format!("{}/models", self.base)));
            let resp = resp.call().map_err(|e| transport(&op, e))?;
            decode(&op, read_ok(&op, resp)?)
        })?;
        Ok(list.data)
    }

    /// `POST /v1/completions` (not streamed; `stream` must be unset).
    pub fn completion(&self, req: &CompletionRequest) -> Result<CompletionResponse> {
        if req.stream == Some(true) {
            return Err(ClientError::Invalid(
                "completion() does not stream; unset `stream`".into(),
            ));
        }
        self.post("completions", req)
    }

    /// `POST /v1/chat/completions` (not streamed; `stream` must be unset; see `chat_stream`).
    pub fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        if req.stream == Some(true) {
            return Err(ClientError::Invalid(
                "chat() does not stream; use chat_stream()".into(),
            ));
        }
        self.post("chat/completions", req)
    }

    /// A streamed chat: the chunks as they arrive. Retries apply until the stream starts; a
    /// stream that breaks afterwards yields an error (replaying it could duplicate text).
    pub fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        let mut req = req.clone();
        req.stream = Some(true);
        let url = format!("{}/chat/completions", self.base);
        let op = format!("POST {url} (stream)");
        let body = to_json(&req)?;
        let reader = self.retrying(&op, || {
            let builder = self.stream_agent.post(&url);
            let resp = self
                .authorized(builder)
                .header("Content-Type", "application/json")
                .send(body.as_str())
                .map_err(|e| transport(&op, e))?;
            if !resp.status().is_success() {
                return Err(status_error(&op, resp));
            }
            Ok(resp.into_body().into_reader())
        })?;
        Ok(ChatStream {
            op,
            lines: BufReader::new(Box::new(reader)),
            done: false,
        })
    }

    /// `POST /v1/load_lora_adapter`: vLLM's runtime adapter loading (vLLM with
    /// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`; `rlhf serve --dynamic-adapters`). The adapter
    /// is then served under `name`; `path` is read by the server.
    pub fn load_lora_adapter(&self, name: &str, path: &str) -> Result<()> {
        let body = serde_json::json!({ "lora_name": name, "lora_path": path });
        self.post_text("load_lora_adapter", &body).map(drop)
    }

    /// `POST /v1/unload_lora_adapter`.
    pub fn unload_lora_adapter(&self, name: &str) -> Result<()> {
        let body = serde_json::json!({ "lora_name": name });
        self.post_text("unload_lora_adapter", &body).map(drop)
    }

    /// A POST whose answer is plain text (the adapter endpoints answer "Success: ...").
    fn post_text<Req: Serialize>(&self, path: &str, req: &Req) -> Result<String> {
        let url = format!("{}/{path}", self.base);
        let op = format!("POST {url}");
        let body = to_json(req)?;
        self.retrying(&op, || {
            let resp = self
                .authorized(self.agent.post(&url))
                .header("Content-Type", "application/json")
                .send(body.as_str())
                .map_err(|e| transport(&op, e))?;
            read_ok(&op, resp)
        })
    }

    /// A POST whose answer is JSON (a reply that does not decode is not retried).
    fn post<Req: Serialize, Resp: DeserializeOwned>(&self, path: &str, req: &Req) -> Result<Resp> {
        let text = self.post_text(path, req)?;
        decode(&format!("POST {}/{path}", self.base), text).map_err(|(e, _)| e)
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.cfg.api_key {
            Some(key) => req.header("Authorization", format!("Bearer {key}")),
            None => req,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent.
    fn retrying<T>(&self, op: &str, mut attempt: impl FnMut() -> Try<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err((err, retry_after)) => {
                    if !err.is_retryable() || tries >= self.cfg.max_retries {
                        return Err(err);
                    }
                    let wait = retry_after.unwrap_or_else(|| self.backoff(tries));
                    tracing::debug!("{op}: {err}; retry {} in {wait:?}", tries + 1);
                    std::thread::sleep(wait.min(self.cfg.max_backoff * 4));
                    tries += 1;
                }
            }
        }
    }

    fn backoff(&self, tries: u32) -> Duration {
        let exp = self.cfg.initial_backoff * 2u32.saturating_pow(tries.min(16));
        exp.min(self.cfg.max_backoff)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

fn to_json(req: &impl Serialize) -> Result<String> {
    serde_json::to_string(req).map_err(|e| ClientError::Invalid(e.to_string()))
}

fn transport(op: &str, source: ureq::Error) -> (ClientError, Option<Duration>) {
    let op = op.to_string();
    (ClientError::Transport { op, source }, None)
}

/// The body of a successful answer, or the error (with `Retry-After`) of a failed one.
fn read_ok(op: &str, mut resp: http_types::Response) -> Try<String> {
    if !resp.status().is_success() {
        return Err(status_error(op, resp));
    }
    resp.body_mut()
        .read_to_string()
        .map_err(|e| transport(op, e))
}

fn decode<T: DeserializeOwned>(op: &str, text: String) -> Try<T> {
    serde_json::from_str(&text).map_err(|e| {
        let err = ClientError::Decode {
            op: op.to_string(),
            message: format!("{e}: {}", excerpt(&text)),
        };
        (err, None)
    })
}

/// An error status as a `ClientError`, reading OpenAI's `{"error": {...}}` body when present.
fn status_error(op: &str, mut resp: http_types::Response) -> (ClientError, Option<Duration>) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let (message, kind, code) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.message, Some(body.error.kind), body.error.code),
        Err(_) => (excerpt(&text), None, None),
    };
    let err = ClientError::Status {
        op: op.to_string(),
        status,
        message,
        kind,
        code,
    };
    (err, retry_after)
}

/// The first 300 characters, marked when cut.
fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}…")
    } else {
        t
    }
}

/// ureq's response type, named once.
mod http_types {
    pub type Response = ureq::http::Response<ureq::Body>;
}

/// The chunks of a streamed chat, read as server-sent events up to `data: [DONE]`.
pub struct ChatStream {
    op: String,
    lines: BufReader<Box<dyn Read + Send>>,
    done: bool,
}

impl ChatStream {
    /// Reads the whole stream and joins the text of choice `index`.
    pub fn collect_text(self, index: u32) -> Result<String> {
        let mut text = String::new();
        for chunk in self {
            for c in chunk?.choices.into_iter().filter(|c| c.index == index) {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
        }
        Ok(text)
    }

    fn fail(&mut self, message: String) -> Option<Result<ChatChunk>> {
        self.done = true;
        Some(Err(ClientError::Decode {
            op: self.op.clone(),
            message,
        }))
    }
}

impl Iterator for ChatStream {
    type Item = Result<ChatChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        while !self.done {
            line.clear();
            match self.lines.read_line(&mut line) {
                Ok(0) => return self.fail("the stream ended without data: [DONE]".into()),
                Ok(_) => {}
                Err(e) => return self.fail(format!("reading the stream: {e}")),
            }
            // SSE: `data: …` lines carry the payload; comments (`:`), `event:`/`id:` lines and
            // blank separators carry nothing we need.
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                self.done = true;
                return None;
            }
            if let Ok(err) = serde_json::from_str::<ErrorBody>(data) {
                return self.fail(format!("the server reported: {}", err.error.message));
            }
            return match serde_json::from_str::<ChatChunk>(data) {
                Ok(chunk) => Some(Ok(chunk)),
                Err(e) => self.fail(format!("{e}: {}", excerpt(data))),
            };
        }
        None
    }
}
