//! JSONL reading and writing: a reader that reports `file:line: field 'x': ...` and never panics,
//! a field-access helper that produces those messages, and atomic writers (temp file + rename).
//!
//! It does not define the record types (see `formats.rs`); any type implementing
//! [`JsonlRecord`] can be read. Blank lines are skipped; line numbers count every physical line.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{DataError, RecordError, Result};

/// A record type that can be built, with validation, from one parsed JSON line.
pub trait JsonlRecord: Sized {
    /// Builds the record or says which field is wrong and what was expected.
    fn from_json(value: &Value) -> std::result::Result<Self, RecordError>;
}

/// Reads every record of a JSONL file; the first bad line stops reading with its file, line and
/// field.
pub fn read_jsonl<T: JsonlRecord>(path: impl AsRef<Path>) -> Result<Vec<T>> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    Ok(parse_jsonl_bytes(path, &bytes)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Like [`read_jsonl`], with each record's 1-based line number, so that checks made after
/// parsing (a prompt longer than the model's context) can still say `file:line`.
pub fn read_jsonl_lines<T: JsonlRecord>(path: impl AsRef<Path>) -> Result<Vec<(usize, T)>> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    parse_jsonl_bytes(path, &bytes)
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
    Ok(parse_jsonl_bytes(source.as_ref(), text.as_bytes())?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

fn parse_jsonl_bytes<T: JsonlRecord>(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, T)>> {
    // A UTF-8 byte-order mark is legal at the start of a file and is not JSON.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut records = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
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
        let record = T::from_json(&value).map_err(|problem| DataError::Record {
            path: path.to_path_buf(),
            line,
            problem,
        })?;
        records.push((line, record));
    }
    Ok(records)
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
