//! `openai:URL`: how every command names a model behind an OpenAI-compatible server (an LLM
//! judge for `rlhf eval` and `rlhf label`, a teacher for `rlhf distill`), with one parser, one
//! set of defaults (timeout, retries, which model) and one way to ask it for a reply.
//!
//! Not here: the prompts (their callers), the HTTP details (`client.rs`).

use std::time::Duration;

use crate::client::{Client, ClientConfig};
use crate::error::{ClientError, Result};
use crate::types::{ChatMessage, ChatRequest};

/// The prefix of an endpoint spec.
pub const SCHEME: &str = "openai:";
/// Seconds before one request fails: generous, since a judge on a busy server can take a while.
pub const DEFAULT_TIMEOUT_S: u64 = 120;
/// Retries of a failed request (no connection, 408/409/429/5xx), with exponential backoff.
pub const DEFAULT_RETRIES: u32 = 3;

/// A model behind an OpenAI-compatible server, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL (`http://host:port`, with or without `/v1`), no trailing slash.
    pub url: String,
    /// The model name sent with each request; `None`: the first model the server lists (what
    /// vLLM, llama.cpp and `rlhf serve` each serve under their own name).
    pub model: Option<String>,
    pub timeout_s: u64,
    pub retries: u32,
}

impl Endpoint {
    /// An endpoint at `url` with the default timeout, retries and model.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            model: None,
            timeout_s: DEFAULT_TIMEOUT_S,
            retries: DEFAULT_RETRIES,
        }
    }

    /// Whether `spec` is meant as an endpoint (starts with `openai:`).
    pub fn is_spec(spec: &str) -> bool {
        spec.starts_with(SCHEME)
    }

    /// Parses `openai:URL` (an http:// or https:// URL); the message says what was expected.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let url = spec
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("expected openai:URL, got {spec:?}"))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "openai:URL needs an http:// or https:// URL, got {url:?}"
            ));
        }
        Ok(Self::new(url))
    }

    /// The same endpoint with the model, timeout and retries a command's flags give, each
    /// `None` keeping the default.
    pub fn with(
        mut self,
        model: Option<String>,
        timeout_s: Option<u64>,
        retries: Option<u32>,
    ) -> Self {
        self.model = model.or(self.model);
        self.timeout_s = timeout_s.unwrap_or(self.timeout_s);
        self.retries = retries.unwrap_or(self.retries);
        self
    }

    /// A client for the endpoint (`OPENAI_API_KEY` is sent when set).
    pub fn client(&self) -> Client {
        Client::new(ClientConfig {
            timeout: Duration::from_secs(self.timeout_s.max(1)),
            max_retries: self.retries,
            ..ClientConfig::new(self.url.clone())
        })
    }

    /// Connects: the client plus the model name to send (asking the server for its first model
    /// when none was given).
    pub fn connect(&self) -> Result<Llm> {
        let client = self.client();
        let model = match &self.model {
            Some(m) => m.clone(),
            None => client
                .models()?
                .into_iter()
                .next()
                .map(|m| m.id)
                .ok_or_else(|| ClientError::Decode {
                    op: format!("GET {}/v1/models", self.url),
                    message: "the server lists no models; name one explicitly".into(),
                })?,
        };
        Ok(Llm { client, model })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.url)
    }
}

/// How one reply is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    pub max_tokens: u32,
    /// 0 is greedy: judges use it.
    pub temperature: f64,
    pub seed: Option<i64>,
}

/// A connected endpoint: ask it for replies.
#[derive(Debug, Clone)]
pub struct Llm {
    client: Client,
    model: String,
}

impl Llm {
    /// The model name sent with each request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The text of the first choice for `messages` (empty when the server sent none). Errors
    /// keep the client's: a 400 (e.g. a prompt too long for the model) can be told apart.
    pub fn ask(&self, messages: Vec<ChatMessage>, ask: Ask) -> Result<String> {
        let req = ChatRequest {
            model: self.model.clone(),
            messages,
            max_tokens: Some(ask.max_tokens),
            temperature: Some(ask.temperature),
            seed: ask.seed,
            ..Default::default()
        };
        let resp = self.client.chat(&req)?;
        Ok(resp
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_the_defaults() {
        let e = Endpoint::parse("openai:http://h:8/").unwrap();
        assert_eq!(e.url, "http://h:8");
        assert_eq!((e.model.as_deref(), e.timeout_s, e.retries), (None, 120, 3));
        assert_eq!(e.to_string(), "openai:http://h:8");
        assert!(
            Endpoint::parse("openai:localhost:8")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            Endpoint::parse("http://h:8")
                .unwrap_err()
                .contains("openai:URL")
        );
        let e = e.with(Some("m".into()), None, Some(0));
        assert_eq!(
            (e.model.as_deref(), e.timeout_s, e.retries),
            (Some("m"), 120, 0)
        );
        assert!(Endpoint::is_spec("openai:x") && !Endpoint::is_spec("rm:x"));
    }
}
