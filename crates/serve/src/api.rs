//! The HTTP side: routes, authentication, request validation and OpenAI's error shape.
//!
//! Every handler parses its own body (so malformed JSON is a 400 with OpenAI's error body, not
//! axum's plain-text rejection), checks it against the limits, tokenizes (chat template for chat),
//! and hands a `Job` to the engine; `reply.rs` turns the engine's events into a response or a
//! stream. Nothing here holds a lock while the model runs.
//!
//! Not here: decoding (`engine.rs`), response assembly and SSE (`reply.rs`).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rlhf_client::types::{
    ApiError as ApiErrorBody, ChatRequest, CompletionRequest, ErrorBody, ModelCard, ModelList,
    Prompt, StopSeq,
};
use rlhf_tokenizer::{Message, Tokenizer};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::engine::{EVENT_BUFFER, Engine, Job, Params};
use crate::error::ServeError;
use crate::reply::{self, Kind, Reply};

/// What the server exposes and its limits; every default is also `rlhf serve`'s.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The `model` clients must name (`GET /v1/models` lists it).
    pub model_name: String,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body; a megabyte holds any prompt a context of 32k tokens can take.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` accepted (the context limits it further).
    pub max_tokens_cap: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Most choices one request may ask for: prompts × n (a completions request takes a list of
    /// prompts, each decoded n times). Bounds what one client can put in the queue.
    pub max_choices: usize,
    /// Longest stop sequence, in bytes (at most 4 of them, as OpenAI allows).
    pub max_stop_bytes: usize,
    /// `max_tokens` of a completions request that gives none: 16, OpenAI's default. Chat
    /// requests default to the rest of the context.
    pub default_completion_tokens: usize,
    /// Names of the LoRA adapters the engine loaded at start (`EngineConfig::adapters`).
    pub adapters: Vec<String>,
    /// Allow `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` (vLLM's runtime adapter
    /// API). Off by default: it reads server-side paths a client names.
    pub dynamic_adapters: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_name: "rlhf".into(),
            api_key: None,
            max_body_bytes: 1 << 20,
            max_tokens_cap: 4096,
            max_n: 16,
            max_choices: 128,
            max_stop_bytes: 1024,
            default_completion_tokens: 16,
            adapters: vec![],
            dynamic_adapters: false,
        }
    }
}

pub(crate) struct Inner {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub cfg: ServeConfig,
    pub created: u64,
    /// The adapters requests may name, as the engine has them.
    pub adapters: RwLock<BTreeSet<String>>,
}

type AppState = Arc<Inner>;

/// The routes over an engine and the checkpoint's tokenizer.
pub fn router(engine: Engine, tokenizer: Tokenizer, cfg: ServeConfig) -> Router {
    let limit = cfg.max_body_bytes;
    let adapters = RwLock::new(cfg.adapters.iter().cloned().collect());
    let state = Arc::new(Inner {
        engine,
        tokenizer,
        cfg,
        created: now(),
        adapters,
    });
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/load_lora_adapter", post(load_adapter))
        .route("/v1/unload_lora_adapter", post(unload_adapter))
        .route_layer(middleware::from_fn(json_only))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    api.route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `GET /health`: 200 `{"status":"ok", ...}` while the engine runs, 503 when it has stopped
/// (a supervisor or load balancer restarts or routes around it).
async fn health(State(s): State<AppState>) -> Response {
    let h = s.engine.health();
    let body = serde_json::json!({
        "status": if h.alive { "ok" } else { "engine stopped" },
        "engine": { "alive": h.alive, "queued": h.queued, "deferred": h.deferred,
                    "max_queue": h.max_queue, "failed_batches": h.failed_batches },
    });
    let status = if h.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// POST bodies must say they are JSON: a web page can send `text/plain` (or a form) to a local
/// port without a CORS preflight, but not `application/json`, so this closes cross-site
/// requests to a server without an API key.
async fn json_only(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if json {
        return next.run(req).await;
    }
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("unsupported_media_type"),
    }
    .into_response()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error answer: status plus OpenAI's `{"error": {message, type, param, code}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// A server-side failure. The detail (libtorch, I/O, engine messages) goes to the log
    /// under a random id; the client gets the id only, never internal text.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(error_id = %id, "internal error: {detail}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "the server had an error while processing the request (error id {id}; the \
                 server's log has the details)"
            ),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ApiErrorBody {
                message: self.message.clone(),
                kind: self.kind.into(),
                param: self.param.map(str::to_string),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Overloaded => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                kind: "server_error",
                param: None,
                code: Some("overloaded"),
            },
            e => Self::internal(e),
        }
    }
}

async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = &s.cfg.api_key else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same(g.as_bytes(), key.as_bytes())) {
        return next.run(req).await;
    }
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
    }
    .into_response()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route {uri}: the API has /v1/models, /v1/completions and /v1/chat/completions"
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on {uri}"),
        kind: "invalid_request_error",
        param: None,
        code: Some("method_not_allowed"),
    }
}

fn card(s: &Inner, id: &str) -> ModelCard {
    ModelCard {
        id: id.to_string(),
        object: "model".into(),
        created: s.created,
        owned_by: "rlhf".into(),
    }
}

fn adapter_names(s: &Inner) -> BTreeSet<String> {
    s.adapters.read().map(|a| a.clone()).unwrap_or_default()
}

async fn list_models(State(s): State<AppState>) -> Json<ModelList> {
    let mut data = vec![card(&s, &s.cfg.model_name)];
    data.extend(adapter_names(&s).iter().map(|a| card(&s, a)));
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

async fn get_model(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    check_model(&s, &id)?;
    Ok(Json(card(&s, &id)))
}

/// The adapter a request's `model` names (`None`: the served model itself), or 404.
fn check_model(s: &Inner, name: &str) -> Result<Option<String>, ApiError> {
    if name == s.cfg.model_name {
        return Ok(None);
    }
    let adapters = adapter_names(s);
    if adapters.contains(name) {
        return Ok(Some(name.to_string()));
    }
    let mut known = vec![format!("`{}`", s.cfg.model_name)];
    known.extend(adapters.iter().map(|a| format!("`{a}` (LoRA adapter)")));
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "the model `{name}` does not exist; this server serves {}",
            known.join(", ")
        ),
        kind: "invalid_request_error",
        param: Some("model"),
        code: Some("model_not_found"),
    })
}

/// `POST /v1/load_lora_adapter` body, as vLLM takes it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadAdapter {
    lora_name: String,
    lora_path: String,
}

/// `POST /v1/unload_lora_adapter` body (vLLM also accepts a `lora_int_id`, unused here).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnloadAdapter {
    lora_name: String,
    #[serde(default)]
    #[allow(dead_code)]
    lora_int_id: Option<i64>,
}

fn dynamic_enabled(s: &Inner) -> Result<(), ApiError> {
    if s.cfg.dynamic_adapters {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        message: "loading adapters at run time is off; start the server with --dynamic-adapters"
            .into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
    })
}

/// Loads a PEFT adapter from a server-side directory under `lora_name`; requests then name it
/// as their `model`. The answer is vLLM's: 200 with a plain-text success line.
async fn load_adapter(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    dynamic_enabled(&s)?;
    let req: LoadAdapter = parse(body)?;
    let name = req.lora_name.trim().to_string();
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::bad(
            "lora_name must be 1 to 256 characters",
            Some("lora_name"),
        ));
    }
    if name == s.cfg.model_name || adapter_names(&s).contains(&name) {
        return Err(ApiError::bad(
            format!("the LoRA adapter `{name}` has already been loaded (or is the model's name)"),
            Some("lora_name"),
        ));
    }
    if req.lora_path.is_empty() {
        return Err(ApiError::bad("lora_path is empty", Some("lora_path")));
    }
    let path = std::path::PathBuf::from(&req.lora_path);
    match s.engine.load_adapter(name.clone(), path).await {
        Ok(()) => {
            if let Ok(mut a) = s.adapters.write() {
                a.insert(name.clone());
            }
            Ok(format!(
                "Success: LoRA adapter '{name}' added successfully."
            ))
        }
        Err(ServeError::Adapter(msg)) => Err(ApiError::bad(msg, Some("lora_path"))),
        Err(e) => Err(e.into()),
    }
}

/// Drops an adapter; requests naming it get 404 from then on.
async fn unload_adapter(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    dynamic_enabled(&s)?;
    let req: UnloadAdapter = parse(body)?;
    let name = req.lora_name;
    // Unlisted first, so no new request names it while the engine drops it.
    let listed = s
        .adapters
        .write()
        .map(|mut a| a.remove(&name))
        .unwrap_or(false);
    if !listed {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("the LoRA adapter `{name}` is not loaded"),
            kind: "invalid_request_error",
            param: Some("lora_name"),
            code: Some("model_not_found"),
        });
    }
    s.engine.unload_adapter(name.clone()).await?;
    Ok(format!(
        "Success: LoRA adapter '{name}' removed successfully."
    ))
}

/// The body as `T`: 413 over the size limit, 400 for anything that is not the expected JSON.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let mut e = ApiError::bad(r.body_text(), None);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.status = status;
            e.code = Some("request_too_large");
        }
        e
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })
}

/// The fields `POST /v1/chat/completions` takes. Anything else is refused with a 400 naming it,
/// as OpenAI does ("Unrecognized request argument"): a field accepted and ignored would change
/// an answer silently. `user` and `metadata` are labels that never change an answer.
const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
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
    // Accepted only with values that change nothing (checked in `check_fields`).
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "store",
    "service_tier",
];

/// The fields `POST /v1/completions` takes (see `CHAT_FIELDS`).
const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "logprobs",
    "echo",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "best_of",
    "suffix",
    "stream",
    "stream_options",
    "user",
    "return_tokens_as_token_ids",
];

/// The roles a chat message may have (OpenAI's); `developer` is rendered as `system`.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// Most `logit_bias` entries (OpenAI's limit).
const MAX_LOGIT_BIAS: usize = 300;

/// Refuses fields the endpoint does not take, fields it takes only with neutral values when
/// they carry others, and message fields other than `role` and `content`.
fn check_fields(body: &serde_json::Value, known: &'static [&'static str]) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad(
            "the request body must be a JSON object",
            None,
        ));
    };
    let param = |name: &str| known.iter().find(|k| **k == name).copied();
    for (key, value) in obj {
        let Some(field) = param(key) else {
            return Err(ApiError::bad(
                format!("unrecognized request argument supplied: {key}"),
                None,
            )
            .with_code("unknown_parameter"));
        };
        let neutral = match field {
            "response_format" => value.is_null() || value.get("type").is_some_and(|t| t == "text"),
            "tool_choice" => value.is_null() || value == "none" || value == "auto",
            "store" => value.is_null() || value == false,
            "service_tier" => value.is_null() || value == "auto" || value == "default",
            _ => true,
        };
        if !neutral {
            return Err(ApiError::bad(
                format!("{field} = {value} is not supported by this server"),
                Some(field),
            ));
        }
    }
    if let Some(messages) = obj.get("messages").and_then(|m| m.as_array()) {
        for (i, m) in messages.iter().enumerate() {
            let extra = m.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !["role", "content"].contains(&k.as_str()))
            });
            if let Some(k) = extra {
                return Err(ApiError::bad(
                    format!("messages[{i}].{k} is not supported (messages take role and content)"),
                    Some("messages"),
                ));
            }
        }
    }
    Ok(())
}

/// `logit_bias` as (token id, bias) pairs: ids inside the vocabulary, biases in [-100, 100].
fn logit_bias(
    s: &Inner,
    bias: &Option<std::collections::BTreeMap<String, f64>>,
) -> Result<Vec<(i64, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(vec![]);
    };
    let bad = |m: String| ApiError::bad(m, Some("logit_bias"));
    if bias.len() > MAX_LOGIT_BIAS {
        return Err(bad(format!(
            "logit_bias has {} entries; at most {MAX_LOGIT_BIAS}",
            bias.len()
        )));
    }
    let vocab = s.tokenizer.vocab_size() as u64;
    bias.iter()
        .map(|(key, &v)| {
            let id: u64 = key
                .parse()
                .map_err(|_| bad(format!("logit_bias keys are token ids; `{key}` is not one")))?;
            if id >= vocab {
                return Err(bad(format!(
                    "logit_bias: token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            if !(v.is_finite() && (-100.0..=100.0).contains(&v)) {
                return Err(bad(format!(
                    "logit_bias: the bias of token {id} must be in [-100, 100], got {v}"
                )));
            }
            Ok((id as i64, v as f32))
        })
        .collect()
}

/// The body as `T` after `check_fields` against the endpoint's fields.
fn parse_checked<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    known: &'static [&'static str],
) -> Result<T, ApiError> {
    let value: serde_json::Value = parse(body)?;
    check_fields(&value, known)?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    })
}

/// The sampling fields both endpoints share.
struct Sampling<'a> {
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    stop: &'a Option<StopSeq>,
    seed: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logprobs: Option<usize>,
    logit_bias: Vec<(i64, f32)>,
}

fn in_range(v: f64, lo: f64, hi: f64, name: &'static str) -> Result<f64, ApiError> {
    if v.is_finite() && v >= lo && v <= hi {
        return Ok(v);
    }
    Err(ApiError::bad(
        format!("{name} must be in [{lo}, {hi}], got {v}"),
        Some(name),
    ))
}

/// Temperatures below this decode greedily (the limit where sampling already is greedy in f32).
pub const GREEDY_BELOW: f64 = 1e-4;

/// Validated engine parameters and `n`; `longest_prompt` is in tokens, `default_max` applies
/// when `max_tokens` is absent (None: the rest of the context).
fn params(
    s: &Inner,
    q: Sampling<'_>,
    longest_prompt: usize,
    default_max: Option<usize>,
    prompt_param: &'static str,
) -> Result<(Params, usize), ApiError> {
    let context = s.engine.context;
    let cap = s.cfg.max_tokens_cap;
    let room = context.saturating_sub(longest_prompt);
    let overflow = |asked: usize| {
        ApiError::bad(
            format!(
                "this model's context is {context} tokens, but {} were requested ({longest_prompt} \
                 in the prompt, {asked} to generate); shorten the prompt or lower max_tokens",
                longest_prompt + asked
            ),
            Some(prompt_param),
        )
        .with_code("context_length_exceeded")
    };
    let max_tokens = match q.max_tokens {
        Some(0) => {
            return Err(ApiError::bad(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            ));
        }
        Some(m) if m as usize > cap => {
            return Err(ApiError::bad(
                format!("max_tokens is too large: {m}; this server allows at most {cap}"),
                Some("max_tokens"),
            ));
        }
        Some(m) if m as usize > room => return Err(overflow(m as usize)),
        Some(m) => m as usize,
        None if room == 0 => return Err(overflow(1)),
        None => default_max.unwrap_or(room).min(room).min(cap),
    };
    let n = q.n.unwrap_or(1) as usize;
    if n == 0 || n > s.cfg.max_n {
        return Err(ApiError::bad(
            format!("n must be between 1 and {}, got {n}", s.cfg.max_n),
            Some("n"),
        ));
    }
    let stop = q.stop.as_ref().map(StopSeq::to_vec).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::bad(
            format!("at most 4 stop sequences, got {}", stop.len()),
            Some("stop"),
        ));
    }
    if let Some(long) = stop.iter().find(|x| x.len() > s.cfg.max_stop_bytes) {
        return Err(ApiError::bad(
            format!(
                "a stop sequence is {} bytes long; this server allows at most {}",
                long.len(),
                s.cfg.max_stop_bytes
            ),
            Some("stop"),
        ));
    }
    let top_p = q.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            format!("top_p must be in (0, 1], got {top_p}"),
            Some("top_p"),
        ));
    }
    let temperature = in_range(q.temperature.unwrap_or(1.0), 0.0, 2.0, "temperature")?;
    let params = Params {
        max_tokens,
        // Below the floor, logits / temperature overflow f32 (1e-300 is 0 in f32: NaN
        // probabilities); such a temperature means greedy, and greedy it is.
        temperature: if temperature < GREEDY_BELOW {
            0.0
        } else {
            temperature
        },
        top_p,
        seed: q.seed.map(|s| s as u64),
        stop,
        logprobs: q.logprobs,
        presence_penalty: in_range(
            q.presence_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
            "presence_penalty",
        )?,
        frequency_penalty: in_range(
            q.frequency_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
            "frequency_penalty",
        )?,
        logit_bias: q.logit_bias,
    };
    Ok((params, n))
}

async fn chat(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_checked(body, CHAT_FIELDS)?;
    let adapter = check_model(&s, &req.model)?;
    if req.tools.is_some() {
        return Err(ApiError::bad(
            "tools are not supported by this server",
            Some("tools"),
        ));
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::bad(
                    format!(
                        "messages[{i}].role is `{}`; it must be one of {}",
                        m.role,
                        ROLES.join(", ")
                    ),
                    Some("messages"),
                ));
            }
            let role = if m.role == "developer" {
                "system"
            } else {
                &m.role
            };
            Ok(Message::new(
                role,
                m.text().map_err(|e| ApiError::bad(e, Some("messages")))?,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let prompt: Vec<i64> = s
        .tokenizer
        .apply_chat(&messages, true)
        .map_err(|e| ApiError::bad(format!("the chat template failed: {e}"), Some("messages")))?
        .into_iter()
        .map(i64::from)
        .collect();
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (false, Some(_)) => {
            return Err(ApiError::bad(
                "top_logprobs requires logprobs: true",
                Some("top_logprobs"),
            ));
        }
        (true, Some(k)) if k > 20 => {
            return Err(ApiError::bad(
                format!("top_logprobs must be at most 20, got {k}"),
                Some("top_logprobs"),
            ));
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let sampling = Sampling {
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: &req.stop,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logprobs,
        logit_bias: logit_bias(&s, &req.logit_bias)?,
    };
    let (params, n) = params(&s, sampling, prompt.len(), None, "messages")?;
    let prompt_tokens = prompt.len();
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    s.engine.submit(Job {
        prompt,
        n,
        first_choice: 0,
        params,
        events: tx,
        adapter: adapter.clone(),
    })?;
    let reply = Reply {
        kind: Kind::Chat,
        model: adapter.clone().unwrap_or_else(|| s.cfg.model_name.clone()),
        choices: n,
        prompt_tokens,
        logprobs: logprobs.is_some(),
        token_ids: false,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        echo: vec![],
    };
    answer(reply, rx, req.stream == Some(true)).await
}

/// The engine's events as a stream of server-sent events, or collected into one response.
async fn answer(
    reply: Reply,
    rx: mpsc::Receiver<crate::engine::Event>,
    stream: bool,
) -> Result<Response, ApiError> {
    if stream {
        Ok(reply::stream(reply, rx).into_response())
    } else {
        Ok(Json(reply::collect(reply, rx).await?).into_response())
    }
}

/// A completions prompt as token ids per prompt, with its text (for `echo`).
fn prompts(s: &Inner, prompt: &Prompt) -> Result<Vec<(Vec<i64>, String)>, ApiError> {
    let bad = |m: String| ApiError::bad(m, Some("prompt"));
    let vocab = s.tokenizer.vocab_size() as u32;
    let from_ids = |ids: &[u32]| -> Result<(Vec<i64>, String), ApiError> {
        if let Some(id) = ids.iter().find(|&&i| i >= vocab) {
            return Err(bad(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        let text = s
            .tokenizer
            .decode(ids, false)
            .map_err(|e| bad(e.to_string()))?;
        Ok((ids.iter().map(|&i| i64::from(i)).collect(), text))
    };
    let from_text = |t: &str| -> Result<(Vec<i64>, String), ApiError> {
        let ids = s
            .tokenizer
            .encode(t, true)
            .map_err(|e| bad(e.to_string()))?;
        Ok((ids.into_iter().map(i64::from).collect(), t.to_string()))
    };
    let out = match prompt {
        Prompt::Text(t) => vec![from_text(t)?],
        Prompt::Texts(ts) => ts.iter().map(|t| from_text(t)).collect::<Result<_, _>>()?,
        Prompt::Tokens(ids) => vec![from_ids(ids)?],
        Prompt::TokenLists(l) => l
            .iter()
            .map(|ids| from_ids(ids))
            .collect::<Result<_, _>>()?,
    };
    if out.is_empty() {
        return Err(bad("prompt must not be an empty list".into()));
    }
    if out.iter().any(|(ids, _)| ids.is_empty()) {
        return Err(bad("a prompt encodes to no tokens; give some text".into()));
    }
    Ok(out)
}

async fn completions(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_checked(body, COMPLETION_FIELDS)?;
    let adapter = check_model(&s, &req.model)?;
    if req.suffix.as_deref().is_some_and(|x| !x.is_empty()) {
        return Err(ApiError::bad(
            "suffix (insertion) is not supported",
            Some("suffix"),
        ));
    }
    if let Some(k) = req.logprobs.filter(|&k| k > 5) {
        return Err(ApiError::bad(
            format!("logprobs must be at most 5, got {k}"),
            Some("logprobs"),
        ));
    }
    let asked = match &req.prompt {
        Prompt::Text(_) | Prompt::Tokens(_) => 1,
        Prompt::Texts(t) => t.len(),
        Prompt::TokenLists(l) => l.len(),
    };
    let per_prompt = req.n.unwrap_or(1).max(1) as usize;
    if asked.saturating_mul(per_prompt) > s.cfg.max_choices {
        return Err(ApiError::bad(
            format!(
                "{asked} prompts × n = {per_prompt} asks for {} choices; this server allows at \
                 most {} per request",
                asked.saturating_mul(per_prompt),
                s.cfg.max_choices
            ),
            Some("prompt"),
        ));
    }
    let prompts = prompts(&s, &req.prompt)?;
    if let Some(b) = req.best_of.filter(|&b| b != req.n.unwrap_or(1)) {
        return Err(ApiError::bad(
            format!("best_of ({b}) different from n is not supported"),
            Some("best_of"),
        ));
    }
    let longest = prompts.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let sampling = Sampling {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: &req.stop,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logprobs: req.logprobs.map(|k| k as usize),
        logit_bias: logit_bias(&s, &req.logit_bias)?,
    };
    let default_max = Some(s.cfg.default_completion_tokens);
    let (params, n) = params(&s, sampling, longest, default_max, "prompt")?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let prompt_tokens = prompts.iter().map(|(ids, _)| ids.len()).sum();
    let mut echo = vec![];
    let choices = n * prompts.len();
    let mut jobs = Vec::with_capacity(prompts.len());
    for (i, (ids, text)) in prompts.into_iter().enumerate() {
        jobs.push(Job {
            prompt: ids,
            n,
            first_choice: i * n,
            params: params.clone(),
            events: tx.clone(),
            adapter: adapter.clone(),
        });
        if req.echo == Some(true) {
            echo.extend(std::iter::repeat_n(text, n));
        }
    }
    drop(tx);
    // All of the request's prompts are queued or none (a half-queued request would decode
    // for nobody).
    s.engine.submit_all(jobs)?;
    let reply = Reply {
        kind: Kind::Completion,
        model: adapter.clone().unwrap_or_else(|| s.cfg.model_name.clone()),
        choices,
        prompt_tokens,
        logprobs: req.logprobs.is_some(),
        token_ids: req.return_tokens_as_token_ids == Some(true),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        echo,
    };
    answer(reply, rx, req.stream == Some(true)).await
}
