//! The labeling web app: a static page (no inline script, a strict Content-Security-Policy) and
//! a JSON API under `/api`, every endpoint of which needs a labeler's token as
//! `Authorization: Bearer …`. Tokens never travel in cookies, so another site cannot submit on a
//! labeler's behalf (no CSRF); the page keeps the token in the tab's sessionStorage. A body must
//! be declared `application/json` (415 otherwise), which a cross-site form cannot send.
//!
//! An internal error (the database's) reaches the client as `internal error (id …)` only; its
//! text is logged under that id.
//!
//! A labeler sees a prompt and its responses in an order shuffled per assignment, ranks them
//! (ties allowed), may flag each and comment; the answer to a submission is sent only after the
//! database committed it. Model outputs reach the page as JSON and are shown with `textContent`,
//! never parsed as HTML.
//!
//! Not here: SQL (`db.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rlhf_data::Ranking;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::{Db, Flag, Labeler, NewSubmission, RankGroup};
use crate::error::LabelError;

/// Settings of `rlhf label serve`.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Labelers per task (InstructGPT had some prompts ranked by several labelers to measure
    /// agreement).
    pub overlap: i64,
    /// An assignment left without a submission this long frees its place, and a submission for
    /// it is refused (409) (30 minutes: longer than any honest task, short enough that an
    /// abandoned tab does not block a task).
    pub expire_ms: i64,
    /// Largest request body; a ranking with comments fits in a few kilobytes.
    pub max_body_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            overlap: 1,
            expire_ms: 30 * 60 * 1000,
            max_body_bytes: 64 * 1024,
        }
    }
}

struct Inner {
    db: Db,
    cfg: WebConfig,
}

type AppState = Arc<Inner>;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

pub fn router(db: Db, cfg: WebConfig) -> Router {
    let limit = cfg.max_body_bytes;
    let state = Arc::new(Inner { db, cfg });
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/me", get(me))
        .route("/api/next", get(next))
        .route("/api/submit", post(submit))
        .route("/api/submissions", get(my_submissions))
        .route("/api/submissions/{id}", get(my_submission))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Headers that keep the page from running anything but its own script, being framed or
/// sniffed as another type.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    resp
}

/// `{"error": {"message": …}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<LabelError> for ApiError {
    fn from(e: LabelError) -> Self {
        let status = match &e {
            LabelError::Invalid(_) => StatusCode::BAD_REQUEST,
            LabelError::NotFound(_) => StatusCode::NOT_FOUND,
            LabelError::Expired(_) => StatusCode::CONFLICT,
            LabelError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => {
                // The database's text names tables and columns: it stays in the log, and the
                // client gets the id to quote.
                let id = format!("{:08x}", rand::rng().random::<u32>());
                tracing::error!(error_id = %id, "{e}");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error (id {id})"),
                );
            }
        };
        Self::new(status, e.to_string())
    }
}

/// Whether a Content-Type is JSON's: `application/json`, any case, parameters allowed.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A request whose body is declared JSON; 415 otherwise. A page on another site can POST
/// `text/plain` or a form to any address without asking (a CORS "simple request"), but not
/// `application/json`.
struct JsonBody;

impl<S: Send + Sync> FromRequestParts<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        json_content_type(&parts.headers).map(|()| JsonBody)
    }
}

fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match declared {
        Some(t) if is_json(t) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the body as `Content-Type: application/json` (found {})",
                declared.map_or("none".into(), |t| format!("`{t}`"))
            ),
        )),
    }
}

/// The labeler whose token the request carries; 401 without a valid one.
struct Authed(Labeler);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let Some(token) = token else {
            return Err(unauthorized(
                "log in: send your token as `Authorization: Bearer <token>`",
            ));
        };
        match s.db.labeler_by_token(token).await? {
            Some(l) => Ok(Authed(l)),
            None => Err(unauthorized("unknown token")),
        }
    }
}

async fn me(
    State(s): State<AppState>,
    Authed(l): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let progress = s.db.progress(&l, s.cfg.overlap).await?;
    Ok(Json(json!({"name": l.name, "progress": progress})))
}

#[derive(Serialize)]
struct Shown {
    /// Index in the task's own order (what a submission refers to).
    index: usize,
    text: String,
}

async fn next(
    State(s): State<AppState>,
    Authed(l): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let next = s.db.next_task(&l, s.cfg.overlap, s.cfg.expire_ms).await?;
    let progress = s.db.progress(&l, s.cfg.overlap).await?;
    let Some((task, seed)) = next else {
        return Ok(Json(json!({"task": null, "progress": progress})));
    };
    // A per-assignment order, the same on every reload, so that position says nothing about
    // which model or sample a response came from.
    let mut shown: Vec<Shown> = task
        .responses
        .into_iter()
        .enumerate()
        .map(|(index, text)| Shown { index, text })
        .collect();
    shown.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64));
    Ok(Json(json!({
        "task": {"id": task.id, "prompt": task.prompt, "responses": shown},
        "progress": progress,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    task_id: i64,
    /// Response indices best first; a nested list is a tie.
    ranking: Vec<RankGroup>,
    #[serde(default)]
    flags: BTreeMap<usize, Vec<Flag>>,
    #[serde(default)]
    comment: String,
}

async fn submit(
    State(s): State<AppState>,
    _: JsonBody,
    Authed(l): Authed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let b: SubmitBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad submission: {e}")))?;
    let groups: Vec<Vec<usize>> = b.ranking.into_iter().map(RankGroup::into_vec).collect();
    let k = groups.iter().map(Vec::len).sum();
    let ranking = Ranking::new(groups, k)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad submission: {e}")))?;
    let sub = NewSubmission {
        ranking,
        flags: b.flags,
        comment: b.comment,
    };
    // Answered only after the INSERT committed: an acknowledged label is never lost.
    let ack = s.db.submit(&l, b.task_id, &sub, s.cfg.expire_ms).await?;
    Ok(Json(json!({"id": ack.id, "duplicate": ack.duplicate})))
}

async fn my_submissions(
    State(s): State<AppState>,
    Authed(l): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({"submissions": s.db.submissions_of(&l).await?})))
}

async fn my_submission(
    State(s): State<AppState>,
    Authed(l): Authed,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Parsed here, not by the extractor, so that a bad id (or bad percent-encoding) gets this
    // API's JSON error rather than axum's plain text.
    let Path(id) = id.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a submission id (an integer)"),
        )
    })?;
    // Someone else's submission is answered exactly like a missing one.
    match s.db.submission_of(&l, id).await? {
        Some(sub) => Ok(Json(json!(sub))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no submission {id} of yours"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn only_json_is_json() {
        for t in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
        ] {
            assert!(is_json(t), "{t}");
        }
        for t in [
            "text/plain",
            "application/jsonp",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(t), "{t}");
        }
    }
}
