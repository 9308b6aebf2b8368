//! Turns the engine's events for one request into OpenAI's answer: a whole response, or a stream
//! of server-sent events (`chat.completion.chunk` / `text_completion` chunks, then an optional
//! usage chunk, then `data: [DONE]`).
//!
//! A streamed answer is the same text as the whole one: both concatenate the same deltas. When
//! the client disconnects, the stream's channel closes and the engine drops the request's rows.
//!
//! Not here: validation (`api.rs`), decoding (`engine.rs`).

use std::convert::Infallible;

use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use rlhf_client::types::{
    ChatChoice, ChatChunk, ChatLogprobs, ChatResponse, ChunkChoice, CompletionChoice,
    CompletionLogprobs, CompletionResponse, Delta, ResponseMessage, TokenLogprob, TopLogprob,
    Usage,
};
use serde_json::{Map, Value};
use tokio::sync::mpsc::{self, Receiver};
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{ApiError, now};
use crate::engine::{Event, TokenInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Completion,
}

/// What the answer needs besides the events.
pub(crate) struct Reply {
    pub kind: Kind,
    pub model: String,
    /// Choices in all (prompts × n for completions).
    pub choices: usize,
    pub prompt_tokens: usize,
    pub logprobs: bool,
    /// Name the tokens of completions' logprobs `token_id:ID` (vLLM's
    /// `return_tokens_as_token_ids`).
    pub token_ids: bool,
    pub include_usage: bool,
    /// Per choice, the prompt text to put before the answer (`echo`), or empty.
    pub echo: Vec<String>,
}

impl Reply {
    fn id(&self) -> String {
        let prefix = match self.kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        format!("{prefix}-{:016x}", rand::random::<u64>())
    }

    fn echo(&self, choice: usize) -> &str {
        self.echo.get(choice).map_or("", String::as_str)
    }
}

#[derive(Debug, Clone, Default)]
struct Choice {
    text: String,
    tokens: Vec<TokenInfo>,
    reason: Option<&'static str>,
    generated: usize,
}

/// Waits for every choice and builds the whole response.
pub(crate) async fn collect(r: Reply, mut rx: Receiver<Event>) -> Result<Value, ApiError> {
    let mut choices = vec![Choice::default(); r.choices];
    let mut finished = 0;
    while finished < r.choices {
        match rx.recv().await {
            Some(Event::Delta {
                choice,
                text,
                tokens,
            }) => {
                choices[choice].text.push_str(&text);
                choices[choice].tokens.extend(tokens);
            }
            Some(Event::Finished {
                choice,
                reason,
                tokens,
            }) => {
                (choices[choice].reason, choices[choice].generated) = (Some(reason), tokens);
                finished += 1;
            }
            Some(Event::Failed(message)) => return Err(ApiError::internal(message)),
            None => {
                return Err(ApiError::internal(
                    "the engine stopped before the answer was complete",
                ));
            }
        }
    }
    let usage = usage(&r, choices.iter().map(|c| c.generated).sum());
    let (id, created, model) = (r.id(), now(), r.model.clone());
    let value = match r.kind {
        Kind::Chat => serde_json::to_value(ChatResponse {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: choices
                .into_iter()
                .enumerate()
                .map(|(i, c)| ChatChoice {
                    index: i as u32,
                    message: ResponseMessage {
                        role: "assistant".into(),
                        content: Some(c.text),
                    },
                    logprobs: r.logprobs.then(|| chat_logprobs(&c.tokens)),
                    finish_reason: c.reason.map(str::to_string),
                })
                .collect(),
            usage: Some(usage),
        }),
        Kind::Completion => serde_json::to_value(CompletionResponse {
            id,
            object: "text_completion".into(),
            created,
            model,
            choices: choices
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let echo = r.echo(i);
                    CompletionChoice {
                        text: format!("{echo}{}", c.text),
                        index: i as u32,
                        logprobs: r
                            .logprobs
                            .then(|| completion_logprobs(&c.tokens, echo.len(), r.token_ids)),
                        finish_reason: c.reason.map(str::to_string),
                    }
                })
                .collect(),
            usage: Some(usage),
        }),
    };
    value.map_err(|e| ApiError::internal(e.to_string()))
}

fn usage(r: &Reply, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens: r.prompt_tokens as u64,
        completion_tokens: completion_tokens as u64,
        total_tokens: (r.prompt_tokens + completion_tokens) as u64,
    }
}

fn chat_logprobs(tokens: &[TokenInfo]) -> ChatLogprobs {
    let entry = |text: &str, logprob: f32| {
        (
            text.to_string(),
            f64::from(logprob),
            Some(text.as_bytes().to_vec()),
        )
    };
    ChatLogprobs {
        content: Some(
            tokens
                .iter()
                .map(|t| {
                    let (token, logprob, bytes) = entry(&t.text, t.logprob);
                    TokenLogprob {
                        token,
                        logprob,
                        bytes,
                        top_logprobs: t
                            .top
                            .iter()
                            .map(|(s, lp)| {
                                let (token, logprob, bytes) = entry(s, *lp);
                                TopLogprob {
                                    token,
                                    logprob,
                                    bytes,
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
        ),
    }
}

/// The legacy column layout; offsets count bytes from the start of the returned text. With
/// `token_ids`, each token is named `token_id:ID` (vLLM's convention).
fn completion_logprobs(tokens: &[TokenInfo], start: usize, token_ids: bool) -> CompletionLogprobs {
    let mut offset = start;
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        out.tokens.push(if token_ids {
            format!("token_id:{}", t.id)
        } else {
            t.text.clone()
        });
        out.token_logprobs.push(Some(f64::from(t.logprob)));
        let top: Map<String, Value> = t
            .top
            .iter()
            .map(|(s, lp)| (s.clone(), Value::from(f64::from(*lp))))
            .collect();
        out.top_logprobs.push(Some(top));
        out.text_offset.push(offset);
        offset += t.text.len();
    }
    out
}

/// Streams the answer as server-sent events.
pub(crate) fn stream(r: Reply, rx: Receiver<Event>) -> impl IntoResponse {
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(pump(r, rx, tx));
    Sse::new(ReceiverStream::new(out)).keep_alive(KeepAlive::default())
}

/// Builds one chunk of either kind for one choice.
struct Chunks<'a> {
    r: &'a Reply,
    id: String,
    created: u64,
}

impl Chunks<'_> {
    fn choice(
        &self,
        index: usize,
        delta: Delta,
        tokens: &[TokenInfo],
        reason: Option<&str>,
    ) -> Value {
        let index32 = index as u32;
        let reason = reason.map(str::to_string);
        let value = match self.r.kind {
            Kind::Chat => serde_json::to_value(ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.r.model.clone(),
                choices: vec![ChunkChoice {
                    index: index32,
                    delta,
                    logprobs: (self.r.logprobs && !tokens.is_empty())
                        .then(|| chat_logprobs(tokens)),
                    finish_reason: reason,
                }],
                usage: None,
            }),
            Kind::Completion => serde_json::to_value(CompletionResponse {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.r.model.clone(),
                choices: vec![CompletionChoice {
                    text: delta.content.unwrap_or_default(),
                    index: index32,
                    logprobs: (self.r.logprobs && !tokens.is_empty())
                        .then(|| completion_logprobs(tokens, 0, self.r.token_ids)),
                    finish_reason: reason,
                }],
                usage: None,
            }),
        };
        value.unwrap_or(Value::Null)
    }

    fn usage(&self, generated: usize) -> Value {
        let object = match self.r.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        serde_json::json!({
            "id": self.id, "object": object, "created": self.created, "model": self.r.model,
            "choices": [], "usage": usage(self.r, generated),
        })
    }
}

async fn pump(r: Reply, mut rx: Receiver<Event>, tx: mpsc::Sender<Result<SseEvent, Infallible>>) {
    let send = |v: String| {
        let tx = tx.clone();
        async move { tx.send(Ok(SseEvent::default().data(v))).await.is_ok() }
    };
    let chunks = Chunks {
        r: &r,
        id: r.id(),
        created: now(),
    };
    // The first chunk of each choice: the role for chat, the echoed prompt for completions.
    for i in 0..r.choices {
        let delta = match r.kind {
            Kind::Chat => Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
            },
            Kind::Completion if !r.echo(i).is_empty() => Delta {
                role: None,
                content: Some(r.echo(i).to_string()),
            },
            Kind::Completion => continue,
        };
        if !send(chunks.choice(i, delta, &[], None).to_string()).await {
            return;
        }
    }
    let (mut finished, mut generated) = (0, 0);
    while finished < r.choices {
        let chunk = match rx.recv().await {
            Some(Event::Delta {
                choice,
                text,
                tokens,
            }) => chunks.choice(
                choice,
                Delta {
                    role: None,
                    content: Some(text),
                },
                &tokens,
                None,
            ),
            Some(Event::Finished {
                choice,
                reason,
                tokens,
            }) => {
                (finished, generated) = (finished + 1, generated + tokens);
                chunks.choice(choice, Delta::default(), &[], Some(reason))
            }
            Some(Event::Failed(message)) => {
                let _ = send(ApiError::internal(message).body_json()).await;
                return;
            }
            None => {
                let e = ApiError::internal("the engine stopped before the answer was complete");
                let _ = send(e.body_json()).await;
                return;
            }
        };
        if !send(chunk.to_string()).await {
            return; // the client left; dropping `rx` tells the engine
        }
    }
    if r.include_usage && !send(chunks.usage(generated).to_string()).await {
        return;
    }
    let _ = send("[DONE]".to_string()).await;
}

impl ApiError {
    fn body_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }
}
