//! The record types that pass between stages (DESIGN.md "Data formats"), each with the validation
//! its reader applies: text, SFT (prompt/completion or messages), samples, rankings with ties,
//! pairwise preferences, prompts and eval items.
//!
//! Records serialize to the TRL-compatible JSON shapes with `serde`; reading goes through
//! [`JsonlRecord`] so every error names its field. Reading and writing files is `jsonl.rs`.

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::RecordError;
use crate::jsonl::{Fields, JsonlRecord, as_str, describe, expected_found, nonempty};

type RecordResult<T> = std::result::Result<T, RecordError>;

/// Texts read as one sequence, blamed on the field holding the longest of them.
fn one_sequence(parts: Vec<(String, &str)>) -> (String, Vec<&str>) {
    let field = (parts.iter())
        .max_by_key(|(_, t)| t.len())
        .map(|(f, _)| f.clone())
        .unwrap_or_default();
    (field, parts.into_iter().map(|(_, t)| t).collect())
}

/// One sequence per response: the prompt followed by it.
fn with_responses<'a>(
    prompt: &'a str,
    responses: &'a [String],
    name: impl Fn(usize) -> String,
) -> Vec<(String, Vec<&'a str>)> {
    (responses.iter().enumerate())
        .map(|(i, r)| one_sequence(vec![("prompt".into(), prompt), (name(i), r.as_str())]))
        .collect()
}

/// `{"text": ...}`: one pretraining document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextRecord {
    pub text: String,
}

impl JsonlRecord for TextRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        vec![("text".into(), vec![&self.text])]
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        Ok(Self {
            text: f.string("text")?.to_string(),
        })
    }
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// An SFT demonstration, in either of TRL's two shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SftRecord {
    /// `{"prompt": ..., "completion": ...}`
    Completion { prompt: String, completion: String },
    /// `{"messages": [{"role": ..., "content": ...}, ...]}`, ending with an assistant message.
    Chat { messages: Vec<Message> },
}

impl SftRecord {
    /// The demonstration as chat messages (a completion pair becomes user + assistant).
    pub fn messages(&self) -> Vec<Message> {
        match self {
            Self::Completion { prompt, completion } => vec![
                Message {
                    role: Role::User,
                    content: prompt.clone(),
                },
                Message {
                    role: Role::Assistant,
                    content: completion.clone(),
                },
            ],
            Self::Chat { messages } => messages.clone(),
        }
    }
}

impl JsonlRecord for SftRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        let parts: Vec<(String, &str)> = match self {
            Self::Completion { prompt, completion } => vec![
                ("prompt".into(), prompt.as_str()),
                ("completion".into(), completion.as_str()),
            ],
            Self::Chat { messages } => (messages.iter().enumerate())
                .map(|(i, m)| (format!("messages[{i}].content"), m.content.as_str()))
                .collect(),
        };
        vec![one_sequence(parts)]
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        if f.has("messages") {
            if f.has("prompt") || f.has("completion") {
                return Err(RecordError::record(
                    "has both 'messages' and 'prompt'/'completion'; expected one SFT form",
                ));
            }
            return chat_from_json(&f);
        }
        if !f.has("prompt") {
            return Err(RecordError::field(
                "prompt",
                "missing; expected a string (an SFT record is {\"prompt\", \"completion\"} or \
                 {\"messages\": [...]})",
            ));
        }
        Ok(Self::Completion {
            prompt: f.string("prompt")?.to_string(),
            completion: f.nonempty_string("completion")?.to_string(),
        })
    }
}

fn chat_from_json(f: &Fields<'_>) -> RecordResult<SftRecord> {
    let messages = messages_from(f, "messages")?;
    let last = messages.len() - 1;
    if messages[last].role != Role::Assistant {
        return Err(RecordError::field(
            format!("messages[{last}].role"),
            "expected the conversation to end with an \"assistant\" message (the demonstration)",
        ));
    }
    if messages[last].content.trim().is_empty() {
        return Err(RecordError::field(
            format!("messages[{last}].content"),
            "expected a non-empty string, found \"\"",
        ));
    }
    Ok(SftRecord::Chat { messages })
}

/// A non-empty list of `{"role", "content"}` messages in field `name`; errors name
/// `name[i].role` or `name[i].content`.
fn messages_from(f: &Fields<'_>, name: &str) -> RecordResult<Vec<Message>> {
    let items = f.array(name, "{\"role\", \"content\"} objects")?;
    if items.is_empty() {
        return Err(RecordError::field(
            name,
            "expected at least one message, found an empty list",
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("{name}[{i}].{field}");
        let m =
            Fields::of(item).map_err(|e| RecordError::field(format!("{name}[{i}]"), e.problem))?;
        let role_value = m
            .value("role", "\"system\", \"user\" or \"assistant\"")
            .map_err(|e| RecordError::field(at("role"), e.problem))?;
        let role = match role_value.as_str() {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(expected_found(
                    &at("role"),
                    "\"system\", \"user\" or \"assistant\"",
                    role_value,
                ));
            }
        };
        let content = m
            .value("content", "a string")
            .and_then(|v| as_str(v, "content"))
            .map_err(|e| RecordError::field(at("content"), e.problem))?;
        messages.push(Message {
            role,
            content: content.to_string(),
        });
    }
    Ok(messages)
}

/// `{"prompt": ..., "responses": [r1, ..., rK]}`: K sampled responses to one prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleRecord {
    pub prompt: String,
    pub responses: Vec<String>,
}

impl JsonlRecord for SampleRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        with_responses(&self.prompt, &self.responses, |i| format!("responses[{i}]"))
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        let prompt = f.string("prompt")?.to_string();
        let responses = responses_from(&f, 1)?;
        Ok(Self { prompt, responses })
    }
}

/// The non-empty strings of the `responses` field, at least `min` of them.
fn responses_from(f: &Fields<'_>, min: usize) -> RecordResult<Vec<String>> {
    let items = f.array("responses", "strings")?;
    if items.len() < min {
        return Err(RecordError::field(
            "responses",
            format!(
                "expected at least {min} response{}, found {}",
                if min == 1 { "" } else { "s" },
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| nonempty(v, &format!("responses[{i}]")).map(str::to_string))
        .collect()
}

/// A ranking of K responses, best group first; a group of several indices is a tie.
///
/// Always a complete ranking: every index `0..K` appears exactly once. Serializes as
/// `[2, [0, 3], 1]` (singletons as plain indices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    groups: Vec<Vec<usize>>,
}

impl Ranking {
    /// Validates `groups` (best first) as a complete ranking of `k` responses.
    pub fn new(groups: Vec<Vec<usize>>, k: usize) -> RecordResult<Self> {
        let bad = |problem: String| RecordError::field("ranking", problem);
        if k < 2 {
            return Err(RecordError::field(
                "responses",
                format!("expected at least 2 responses to rank, found {k}"),
            ));
        }
        let mut seen = vec![false; k];
        for group in &groups {
            if group.is_empty() {
                return Err(bad(
                    "expected a non-empty list of tied indices, found []".into()
                ));
            }
            for &i in group {
                if i >= k {
                    return Err(bad(format!(
                        "index {i} is out of range; expected 0..={} for {k} responses",
                        k - 1
                    )));
                }
                if std::mem::replace(&mut seen[i], true) {
                    return Err(bad(format!(
                        "index {i} appears twice; each response is ranked exactly once"
                    )));
                }
            }
        }
        if let Some(missing) = seen.iter().position(|&s| !s) {
            return Err(bad(format!(
                "response {missing} is not ranked; expected every index 0..={} exactly once",
                k - 1
            )));
        }
        Ok(Self { groups })
    }

    /// A strict order (no ties), best first.
    pub fn from_order(order: &[usize], k: usize) -> RecordResult<Self> {
        Self::new(order.iter().map(|&i| vec![i]).collect(), k)
    }

    /// The groups, best first.
    pub fn groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    /// Every untied pair as `(winner, loser)`; tied pairs are dropped (DESIGN.md). For K
    /// responses without ties this is all C(K, 2) pairs.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (gi, better) in self.groups.iter().enumerate() {
            for worse in &self.groups[gi + 1..] {
                for &w in better {
                    pairs.extend(worse.iter().map(|&l| (w, l)));
                }
            }
        }
        pairs
    }

    fn from_json(value: &Value, k: usize) -> RecordResult<Self> {
        let expected = "a list of indices, best first (a nested list is a tie)";
        let items = value
            .as_array()
            .ok_or_else(|| expected_found("ranking", expected, value))?;
        let index = |v: &Value, at: String| {
            v.as_u64()
                .map(|i| i as usize)
                .ok_or_else(|| expected_found(&at, "a response index (a non-negative integer)", v))
        };
        let mut groups = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let group = match item {
                Value::Array(tied) => tied
                    .iter()
                    .enumerate()
                    .map(|(j, v)| index(v, format!("ranking[{i}][{j}]")))
                    .collect::<RecordResult<Vec<_>>>()?,
                other => vec![index(other, format!("ranking[{i}]"))?],
            };
            groups.push(group);
        }
        Self::new(groups, k)
    }
}

impl Serialize for Ranking {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.groups.len()))?;
        for group in &self.groups {
            match group.as_slice() {
                [single] => seq.serialize_element(single)?,
                tied => seq.serialize_element(tied)?,
            }
        }
        seq.end()
    }
}

/// `{"prompt", "responses", "ranking"}`: one labeler's ranking of K ≥ 2 responses.
///
/// Fields are private so that a record always holds a ranking valid for its responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankingRecord {
    prompt: String,
    responses: Vec<String>,
    ranking: Ranking,
}

impl RankingRecord {
    /// Checks that `ranking` is a complete ranking of `responses` and that none is empty.
    pub fn new(prompt: String, responses: Vec<String>, ranking: Ranking) -> RecordResult<Self> {
        if let Some(i) = responses.iter().position(|r| r.trim().is_empty()) {
            return Err(RecordError::field(
                format!("responses[{i}]"),
                "expected a non-empty string, found \"\"",
            ));
        }
        let ranking = Ranking::new(ranking.groups, responses.len())?;
        Ok(Self {
            prompt,
            responses,
            ranking,
        })
    }

    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    pub fn responses(&self) -> &[String] {
        &self.responses
    }

    pub fn ranking(&self) -> &Ranking {
        &self.ranking
    }
}

impl JsonlRecord for RankingRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        with_responses(&self.prompt, &self.responses, |i| format!("responses[{i}]"))
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        let prompt = f.string("prompt")?.to_string();
        let responses = responses_from(&f, 2)?;
        let ranking =
            Ranking::from_json(f.value("ranking", "a list of indices")?, responses.len())?;
        Ok(Self {
            prompt,
            responses,
            ranking,
        })
    }
}

/// `{"prompt", "chosen", "rejected"}`: one preference pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairwiseRecord {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

impl JsonlRecord for PairwiseRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        [("chosen", &self.chosen), ("rejected", &self.rejected)]
            .into_iter()
            .map(|(name, r)| {
                one_sequence(vec![
                    ("prompt".into(), self.prompt.as_str()),
                    (name.into(), r.as_str()),
                ])
            })
            .collect()
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        let record = Self {
            prompt: f.string("prompt")?.to_string(),
            chosen: f.nonempty_string("chosen")?.to_string(),
            rejected: f.nonempty_string("rejected")?.to_string(),
        };
        if record.chosen == record.rejected {
            return Err(RecordError::field(
                "rejected",
                "is identical to 'chosen'; a preference needs two different responses",
            ));
        }
        Ok(record)
    }
}

/// `{"prompt": ..., ...}`: a prompt to sample from, with any task metadata kept as-is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptRecord {
    pub prompt: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl JsonlRecord for PromptRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        vec![("prompt".into(), vec![&self.prompt])]
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        Ok(Self {
            prompt: f.nonempty_string("prompt")?.to_string(),
            fields: f.rest(&["prompt"]),
        })
    }
}

/// `{"prompt": ..., "answer": ..., ...}`: a held-out item with its gold answer and the
/// task-specific fields a checker needs. A numeric `answer` is read as its decimal string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRecord {
    pub prompt: String,
    pub answer: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl JsonlRecord for EvalRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        vec![("prompt".into(), vec![&self.prompt])]
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        let prompt = f.nonempty_string("prompt")?.to_string();
        let answer = match f.value("answer", "a string or a number")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(RecordError::field(
                    "answer",
                    format!("expected a string or a number, found {}", describe(other)),
                ));
            }
        };
        Ok(Self {
            prompt,
            answer,
            fields: f.rest(&["prompt", "answer"]),
        })
    }
}

/// What preference optimisation (`rlhf dpo`) reads: a conversation so far and K ≥ 2 ranked
/// responses. Read from our rankings (`{"prompt", "responses", "ranking"}`, ties allowed) or from
/// TRL's preference shapes: `{"prompt", "chosen", "rejected"}` with strings (standard) or message
/// lists (conversational: the prompt's messages, and one assistant message each), or without a
/// prompt, `chosen` and `rejected` being whole conversations that differ only in the last
/// assistant message (implicit prompt). An optional `"system"` string is a system message before
/// a prompt that has none.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    /// The conversation before the responses; a plain prompt is one user message.
    pub prompt: Vec<Message>,
    pub responses: Vec<String>,
    pub ranking: Ranking,
    /// The JSON field each response was read from (for errors): `responses[i]`, `chosen`, ...
    pub fields: Vec<String>,
}

impl JsonlRecord for PreferenceRecord {
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        (self.responses.iter().zip(&self.fields))
            .map(|(response, field)| {
                let mut parts: Vec<(String, &str)> = (self.prompt.iter().enumerate())
                    .map(|(i, m)| (format!("prompt[{i}]"), m.content.as_str()))
                    .collect();
                if let [(name, _)] = parts.as_mut_slice() {
                    *name = "prompt".into();
                }
                parts.push((field.clone(), response.as_str()));
                one_sequence(parts)
            })
            .collect()
    }

    fn from_json(value: &Value) -> RecordResult<Self> {
        let f = Fields::of(value)?;
        let system = match f.has("system") {
            true => Some(f.string("system")?.to_string()),
            false => None,
        };
        let with_system = |mut prompt: Vec<Message>| {
            if let Some(s) = &system
                && prompt.first().is_none_or(|m| m.role != Role::System)
            {
                prompt.insert(
                    0,
                    Message {
                        role: Role::System,
                        content: s.clone(),
                    },
                );
            }
            prompt
        };
        if f.has("ranking") || f.has("responses") {
            let r = RankingRecord::from_json(value)?;
            let fields = (0..r.responses.len())
                .map(|i| format!("responses[{i}]"))
                .collect();
            return Ok(Self {
                prompt: with_system(vec![Message {
                    role: Role::User,
                    content: r.prompt,
                }]),
                responses: r.responses,
                ranking: r.ranking,
                fields,
            });
        }
        if !f.has("chosen") && !f.has("rejected") {
            return Err(RecordError::record(
                "expected a ranking {\"prompt\", \"responses\", \"ranking\"} or a preference \
                 {\"prompt\", \"chosen\", \"rejected\"}",
            ));
        }
        let (prompt, chosen, rejected) = if f.has("prompt") {
            let prompt = match f.value("prompt", "a string or a list of messages")? {
                Value::Array(_) => messages_from(&f, "prompt")?,
                _ => vec![Message {
                    role: Role::User,
                    content: f.string("prompt")?.to_string(),
                }],
            };
            (prompt, answer_of(&f, "chosen")?, answer_of(&f, "rejected")?)
        } else {
            implicit_prompt(&f)?
        };
        for (name, text) in [("chosen", &chosen), ("rejected", &rejected)] {
            if text.trim().is_empty() {
                return Err(RecordError::field(
                    name,
                    "expected a non-empty response, found \"\"",
                ));
            }
        }
        if chosen == rejected {
            return Err(RecordError::field(
                "rejected",
                "is identical to 'chosen'; a preference needs two different responses",
            ));
        }
        Ok(Self {
            prompt: with_system(prompt),
            responses: vec![chosen, rejected],
            ranking: Ranking::from_order(&[0, 1], 2)?,
            fields: vec!["chosen".into(), "rejected".into()],
        })
    }
}

/// A response given as a string or as a list holding one assistant message.
fn answer_of(f: &Fields<'_>, name: &str) -> RecordResult<String> {
    match f.value(name, "a string or a list with one assistant message")? {
        Value::Array(_) => {
            let m = messages_from(f, name)?;
            match m.as_slice() {
                [one] if one.role == Role::Assistant => Ok(one.content.clone()),
                _ => Err(RecordError::field(
                    name,
                    format!(
                        "expected one assistant message (the prompt's messages go in 'prompt'), \
                         found {} message(s)",
                        m.len()
                    ),
                )),
            }
        }
        _ => Ok(f.string(name)?.to_string()),
    }
}

/// TRL's implicit prompt: `chosen` and `rejected` are conversations that share every message but
/// the last, an assistant message.
fn implicit_prompt(f: &Fields<'_>) -> RecordResult<(Vec<Message>, String, String)> {
    let split = |name: &str| -> RecordResult<(Vec<Message>, String)> {
        if !f.has(name) {
            return Err(RecordError::field(
                name,
                "missing; expected a string or a list of messages",
            ));
        }
        if !matches!(f.value(name, "")?, Value::Array(_)) {
            return Err(RecordError::field(
                "prompt",
                format!("missing; with a string '{name}' the prompt must be given"),
            ));
        }
        let mut m = messages_from(f, name)?;
        let last = m
            .pop()
            .filter(|l| l.role == Role::Assistant)
            .ok_or_else(|| {
                RecordError::field(
                    name,
                    "expected the conversation to end with an \"assistant\" message",
                )
            })?;
        if m.is_empty() {
            return Err(RecordError::field(
                "prompt",
                format!("missing; '{name}' holds only the answer, so the prompt must be given"),
            ));
        }
        Ok((m, last.content))
    };
    let (prompt, chosen) = split("chosen")?;
    let (other, rejected) = split("rejected")?;
    if prompt != other {
        return Err(RecordError::field(
            "rejected",
            "its messages before the last differ from 'chosen''s; an implicit prompt must be \
             the same in both",
        ));
    }
    Ok((prompt, chosen, rejected))
}
