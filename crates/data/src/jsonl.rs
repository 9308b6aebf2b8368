//! JSONL reading and writing: a reader that reports `file:line: field 'x': ...` and never panics,
//! a field-access helper that produces those messages, and atomic writers (temp file + rename).
//!
//! It does not define the record types (see `formats.rs`); any type implementing
//! [`JsonlRecord`] can be read. Blank lines are skipped; line numbers count every physical line.
//!
//! Reading is bounded: lines are read one at a time, each up to a byte cap, so a hostile file
//! costs at most one capped line of memory beyond the records kept. With a [`TextBudget`] (a
//! model's context and what one of its tokens can cover) the cap is what the longest record the
//! model can use may take, and every record's text is measured against the context before any
//! tokenizer sees it.

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{DataError, RecordError, Result};

/// A record type that can be built, with validation, from one parsed JSON line.
pub trait JsonlRecord: Sized {
    /// Builds the record or says which field is wrong and what was expected.
    fn from_json(value: &Value) -> std::result::Result<Self, RecordError>;

    /// The texts a model reads together as one sequence, each sequence with the field an error
    /// should name: what [`read_jsonl_within`] measures against the context before tokenizing.
    /// Empty (the default) when the record is not read by a model whole.
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        Vec::new()
    }
}

/// A parsed line as it is, for readers that pick their own fields.
impl JsonlRecord for Value {
    fn from_json(value: &Value) -> std::result::Result<Self, RecordError> {
        Ok(value.clone())
    }
}

/// The longest line a reader takes when no model bounds it (64 MiB). A record of our formats
/// is text for a model, and none of ours reads that much at once; the cap keeps one line of a
/// hostile file from taking unbounded memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// Room a line has beyond its text for keys, punctuation, spacing and fields a reader ignores.
const LINE_SLACK_BYTES: usize = 4 << 20;

/// The most bytes of JSON one byte of text can take: `\u0041` for `A`.
const JSON_ESCAPE_FACTOR: usize = 6;

/// How much text a record may hold for one model: its context in tokens, the most bytes of text
/// one token can cover, and the bytes its tokenizer drops (which cover nothing). Built from a
/// tokenizer's `rlhf_tokenizer::token_bound`; a record whose text cannot fit is refused
/// before tokenizing, and never one that could fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextBudget {
    context: usize,
    bytes_per_token: usize,
    dropped: [bool; 256],
}

impl TextBudget {
    /// `context` tokens of at most `bytes_per_token` bytes each; bytes in `dropped` count for
    /// nothing.
    pub fn new(context: usize, bytes_per_token: usize, dropped: &[u8]) -> Self {
        let mut table = [false; 256];
        for &b in dropped {
            table[b as usize] = true;
        }
        Self {
            context,
            bytes_per_token: bytes_per_token.max(1),
            dropped: table,
        }
    }

    /// The most bytes of text whose tokens can fit the context.
    pub fn max_text_bytes(&self) -> usize {
        self.context.saturating_mul(self.bytes_per_token)
    }

    /// The longest line a record that fits can take: its text written entirely in `\uXXXX`
    /// escapes, plus 4 MiB for keys and ignored fields. When the tokenizer drops some bytes, a
    /// line of escaped dropped bytes could still fit, so the cap is [`DEFAULT_MAX_LINE_BYTES`].
    pub fn max_line_bytes(&self) -> usize {
        if self.dropped.iter().any(|&d| d) {
            return DEFAULT_MAX_LINE_BYTES;
        }
        self.max_text_bytes()
            .saturating_mul(JSON_ESCAPE_FACTOR)
            .saturating_add(LINE_SLACK_BYTES)
    }

    /// The bytes of `text` that must reach some token: the trimmed text (a chat template may
    /// trim it) less the bytes the tokenizer drops.
    pub fn measure(&self, text: &str) -> usize {
        let t = text.trim().as_bytes();
        if self.dropped.iter().any(|&d| d) {
            t.iter().filter(|&&b| !self.dropped[b as usize]).count()
        } else {
            t.len()
        }
    }

    /// `Err` naming `field` when `texts`, read as one sequence, cannot fit the context.
    pub fn check(&self, field: &str, texts: &[&str]) -> std::result::Result<(), RecordError> {
        let bytes: usize = texts.iter().map(|t| self.measure(t)).sum();
        if bytes <= self.max_text_bytes() {
            return Ok(());
        }
        let what = if texts.len() > 1 {
            "with the rest of its sequence it holds"
        } else {
            "holds"
        };
        Err(RecordError::field(
            field,
            format!(
                "{what} {bytes} bytes of text, more than the model's context of {} tokens can \
                 hold (at most {} bytes: a token covers at most {} bytes, the tokenizer's \
                 longest); shorten it or use a model with a longer context",
                self.context,
                self.max_text_bytes(),
                self.bytes_per_token
            ),
        ))
    }
}

/// Reads every record of a JSONL file; the first bad line stops reading with its file, line and
/// field.
pub fn read_jsonl<T: JsonlRecord>(path: impl AsRef<Path>) -> Result<Vec<T>> {
    Ok(read_jsonl_lines(path)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Like [`read_jsonl`], with each record's 1-based line number, so that checks made after
/// parsing (a prompt longer than the model's context) can still say `file:line`.
pub fn read_jsonl_lines<T: JsonlRecord>(path: impl AsRef<Path>) -> Result<Vec<(usize, T)>> {
    read_jsonl_within(path, None)
}

/// Like [`read_jsonl_lines`], for records a model will read: with a `budget`, lines are capped
/// at [`TextBudget::max_line_bytes`] and each record's [`JsonlRecord::sequences`] must fit the
/// context by their byte length, both checked before anything is tokenized.
pub fn read_jsonl_within<T: JsonlRecord>(
    path: impl AsRef<Path>,
    budget: Option<&TextBudget>,
) -> Result<Vec<(usize, T)>> {
    let path = path.as_ref();
    let file = fs::File::open(path).map_err(|e| io_err(path, "read", e))?;
    read_records(path, BufReader::with_capacity(1 << 16, file), budget)
}

/// The documents of a text corpus: JSONL `{"text"}` records when the file ends in `.jsonl`,
/// else plain text split at blank lines; each trimmed, empty ones dropped.
pub fn read_documents(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    if path.extension().is_some_and(|e| e == "jsonl") {
        let records: Vec<crate::formats::TextRecord> = read_jsonl(path)?;
        return Ok(records
            .into_iter()
            .map(|r| r.text.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect());
    }
    let text = fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    Ok(text
        .split("\n\n")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect())
}

/// Parses JSONL text already in memory; `source` names it in error messages.
pub fn parse_jsonl<T: JsonlRecord>(source: impl AsRef<Path>, text: &str) -> Result<Vec<T>> {
    Ok(read_records(source.as_ref(), text.as_bytes(), None)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// The reader behind every entry point: one capped line at a time.
fn read_records<T: JsonlRecord>(
    path: &Path,
    mut input: impl BufRead,
    budget: Option<&TextBudget>,
) -> Result<Vec<(usize, T)>> {
    let cap = budget.map_or(DEFAULT_MAX_LINE_BYTES, TextBudget::max_line_bytes);
    let mut records = Vec::new();
    let mut buf = Vec::new();
    for line in 1.. {
        match read_capped_line(&mut input, &mut buf, cap).map_err(|e| io_err(path, "read", e))? {
            Line::End => break,
            Line::TooLong => {
                let problem = too_long(&buf, cap, budget);
                return Err(DataError::Record {
                    path: path.to_path_buf(),
                    line,
                    problem,
                });
            }
            Line::Read => {}
        }
        let mut raw = buf.as_slice();
        if line == 1 {
            // A UTF-8 byte-order mark is legal at the start of a file and is not JSON.
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            line,
            message: format!("not valid UTF-8 at byte {} of the line", e.valid_up_to()),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            line,
            message: json_message(&e),
        })?;
        let at = |problem| DataError::Record {
            path: path.to_path_buf(),
            line,
            problem,
        };
        let record = T::from_json(&value).map_err(at)?;
        if let Some(budget) = budget {
            for (field, texts) in record.sequences() {
                budget.check(&field, &texts).map_err(at)?;
            }
        }
        records.push((line, record));
    }
    Ok(records)
}

/// What [`read_capped_line`] found.
enum Line {
    /// A whole line (without its `\n`) is in the buffer.
    Read,
    /// The line is longer than the cap; the buffer holds its first `cap` bytes.
    TooLong,
    /// No bytes left.
    End,
}

/// Reads the next line into `buf` (cleared first), never holding more than `cap` bytes of it.
fn read_capped_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if any { Line::Read } else { Line::End });
        }
        any = true;
        let (take, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > cap {
            let room = cap - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        input.consume(take + usize::from(newline));
        if newline {
            return Ok(Line::Read);
        }
    }
}

/// The error for a line over the cap, naming the field its first `cap` bytes end in.
fn too_long(prefix: &[u8], cap: usize, budget: Option<&TextBudget>) -> RecordError {
    let why = match budget {
        Some(b) => format!(
            "the line is longer than {cap} bytes, more than any record this model can use: its \
             context of {} tokens holds at most {} bytes of text (a token covers at most {} \
             bytes), and JSON escapes and other fields cannot stretch that past {cap} bytes",
            b.context,
            b.max_text_bytes(),
            b.bytes_per_token
        ),
        None => format!(
            "the line is longer than {cap} bytes, the most this reader takes for one record"
        ),
    };
    match field_at_end(prefix) {
        Some(field) => RecordError::field(field, why),
        None => RecordError::record(why),
    }
}

/// One open JSON container while scanning a prefix.
enum Frame {
    Object { key: Option<String> },
    Array { index: usize },
}

/// The path (`messages[3].content`) of the value a JSON prefix ends inside, if any: a small
/// scanner that follows containers, keys and indices without building the value.
fn field_at_end(prefix: &[u8]) -> Option<String> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut expecting_key = false;
    let mut i = 0;
    while i < prefix.len() {
        match prefix[i] {
            b'{' => {
                stack.push(Frame::Object { key: None });
                expecting_key = true;
            }
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { .. }) => expecting_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i = start;
                while i < prefix.len() && prefix[i] != b'"' {
                    i += if prefix[i] == b'\\' { 2 } else { 1 };
                }
                if expecting_key && let Some(Frame::Object { key }) = stack.last_mut() {
                    let end = i.min(prefix.len());
                    *key = Some(String::from_utf8_lossy(&prefix[start..end]).into_owned());
                    expecting_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k) } if path.is_empty() => path.push_str(k),
            Frame::Object { key: Some(k) } => {
                path.push('.');
                path.push_str(k);
            }
            Frame::Object { key: None } => break,
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    (!path.is_empty()).then_some(path)
}

/// serde_json's message without its " at line 1 column N" suffix (always line 1 here: the reader
/// parses one line at a time and reports the file's line itself).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    format!("{message} (column {})", e.column())
}

/// Writes records as JSONL atomically: readers never see a half-written file.
pub fn write_jsonl<T: Serialize>(
    path: impl AsRef<Path>,
    records: impl IntoIterator<Item = T>,
) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        for record in records {
            serde_json::to_writer(&mut *w, &record).map_err(|source| DataError::Serialize {
                path: path.to_path_buf(),
                source,
            })?;
            w.write_all(b"\n")
                .map_err(|source| io_err(path, "write", source))?;
        }
        Ok(())
    })
}

/// Writes a text file atomically.
pub fn write_text(path: impl AsRef<Path>, text: &str) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|source| io_err(path, "write", source))
    })
}

fn io_err(path: &Path, op: &'static str, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Writes through `fill` into a temp file next to `path`, syncs it, then renames it over `path`
/// (rename is atomic within one directory). The temp file is removed on failure.
fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<fs::File>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| io_err(&tmp, "write", e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, "sync", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, "rename the temp file onto", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Typed access to the fields of one JSON object, with error messages naming the field.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// The line must be a JSON object.
    pub fn of(value: &'a Value) -> std::result::Result<Self, RecordError> {
        match value {
            Value::Object(object) => Ok(Self { object }),
            other => Err(RecordError::record(format!(
                "expected a JSON object, found {}",
                describe(other)
            ))),
        }
    }

    /// Whether the field is present (even if null).
    pub fn has(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }

    /// The raw value of a field that must be present.
    pub fn value(&self, name: &str, expected: &str) -> std::result::Result<&'a Value, RecordError> {
        self.object
            .get(name)
            .ok_or_else(|| RecordError::field(name, format!("missing; expected {expected}")))
    }

    /// A string field.
    pub fn string(&self, name: &str) -> std::result::Result<&'a str, RecordError> {
        as_str(self.value(name, "a string")?, name)
    }

    /// A string field that must contain something other than whitespace.
    pub fn nonempty_string(&self, name: &str) -> std::result::Result<&'a str, RecordError> {
        nonempty(self.value(name, "a non-empty string")?, name)
    }

    /// An array field.
    pub fn array(&self, name: &str, of: &str) -> std::result::Result<&'a [Value], RecordError> {
        let expected = format!("a list of {of}");
        match self.value(name, &expected)? {
            Value::Array(items) => Ok(items),
            other => Err(expected_found(name, &expected, other)),
        }
    }

    /// Every field except `known`, to carry task-specific fields through unchanged.
    pub fn rest(&self, known: &[&str]) -> Map<String, Value> {
        self.object
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `value` as a string, or an error naming `field`.
pub(crate) fn as_str<'a>(
    value: &'a Value,
    field: &str,
) -> std::result::Result<&'a str, RecordError> {
    value
        .as_str()
        .ok_or_else(|| expected_found(field, "a string", value))
}

/// `value` as a string with non-whitespace content, or an error naming `field`.
pub(crate) fn nonempty<'a>(
    value: &'a Value,
    field: &str,
) -> std::result::Result<&'a str, RecordError> {
    let s = value
        .as_str()
        .ok_or_else(|| expected_found(field, "a non-empty string", value))?;
    if s.trim().is_empty() {
        return Err(expected_found(field, "a non-empty string", value));
    }
    Ok(s)
}

/// "expected X, found Y" for `field`.
pub(crate) fn expected_found(field: &str, expected: &str, found: &Value) -> RecordError {
    RecordError::field(
        field,
        format!("expected {expected}, found {}", describe(found)),
    )
}

/// A short description of a JSON value for error messages: its type and a clipped rendering.
pub(crate) fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_string(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let mut shown = value.to_string();
    if shown.chars().count() > 40 {
        shown = shown.chars().take(37).collect::<String>() + "...";
    }
    format!("{kind} {shown}")
}
