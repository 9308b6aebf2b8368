//! GGUF metadata values and typed, error-reporting look-ups over the key/value table.
//!
//! `MetaValue` mirrors the 13 GGUF value types one-to-one. `Metadata` owns the table in file order
//! and turns "missing" and "wrong type" into `GgufError`s that name the file and key. Parsing the
//! bytes is `reader.rs`'s job, not this module's.

use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};

/// One metadata value. Integer widths are kept so that a round trip loses nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// A short description of the value's type, for error messages ("u32", "array of 3 string").
    pub fn type_name(&self) -> String {
        match self {
            MetaValue::U8(_) => "u8".into(),
            MetaValue::I8(_) => "i8".into(),
            MetaValue::U16(_) => "u16".into(),
            MetaValue::I16(_) => "i16".into(),
            MetaValue::U32(_) => "u32".into(),
            MetaValue::I32(_) => "i32".into(),
            MetaValue::F32(_) => "f32".into(),
            MetaValue::Bool(_) => "bool".into(),
            MetaValue::String(_) => "string".into(),
            MetaValue::U64(_) => "u64".into(),
            MetaValue::I64(_) => "i64".into(),
            MetaValue::F64(_) => "f64".into(),
            MetaValue::Array(items) => match items.first() {
                Some(first) => format!("array of {} {}", items.len(), first.type_name()),
                None => "empty array".into(),
            },
        }
    }

    /// Any integer type holding a non-negative value. Writers disagree on u32 vs u64 vs i32 for
    /// counts, so accept them all.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any signed or unsigned integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float value; `F32` is returned as `f32` widened, so check `as_f32` when the f32 digits
    /// matter (e.g. when printing `1e-5` rather than `9.999999747378752e-6`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The metadata key/value table of one GGUF file, in file order.
#[derive(Clone, Debug)]
pub struct Metadata {
    path: PathBuf,
    entries: Vec<(String, MetaValue)>,
}

impl Metadata {
    pub(crate) fn new(path: &Path, entries: Vec<(String, MetaValue)>) -> Self {
        Metadata {
            path: path.to_path_buf(),
            entries,
        }
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[(String, MetaValue)] {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn missing(&self, key: &str, expected: &'static str) -> GgufError {
        GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
        }
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: found.type_name(),
        }
    }

    /// Applies `convert` to the value under `key`; `Ok(None)` when the key is absent.
    fn opt<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        convert: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => convert(v)
                .map(Some)
                .ok_or_else(|| self.wrong(key, expected, v)),
        }
    }

    /// An optional non-negative integer, as `usize`.
    pub fn opt_usize(&self, key: &str, expected: &'static str) -> Result<Option<usize>> {
        self.opt(key, expected, |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    /// A required non-negative integer, as `usize`.
    pub fn usize(&self, key: &str, expected: &'static str) -> Result<usize> {
        self.opt_usize(key, expected)?
            .ok_or_else(|| self.missing(key, expected))
    }

    /// An optional float; f32 values come back as the f32 (see [`MetaValue::as_f64`]).
    pub fn opt_f32(&self, key: &str, expected: &'static str) -> Result<Option<f32>> {
        self.opt(key, expected, |v| match *v {
            MetaValue::F32(f) => Some(f),
            // Narrowing is the point: configs are written from the f32 the model was run with.
            MetaValue::F64(f) => Some(f as f32),
            _ => None,
        })
    }

    pub fn opt_str(&self, key: &str, expected: &'static str) -> Result<Option<&str>> {
        self.opt(key, expected, MetaValue::as_str)
    }

    pub fn str(&self, key: &str, expected: &'static str) -> Result<&str> {
        self.opt_str(key, expected)?
            .ok_or_else(|| self.missing(key, expected))
    }

    pub fn opt_bool(&self, key: &str, expected: &'static str) -> Result<Option<bool>> {
        self.opt(key, expected, MetaValue::as_bool)
    }

    /// An optional array of strings.
    pub fn opt_str_array(&self, key: &str, expected: &'static str) -> Result<Option<Vec<&str>>> {
        self.opt(key, expected, |v| {
            v.as_array()?.iter().map(MetaValue::as_str).collect()
        })
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str, expected: &'static str) -> Result<Vec<&str>> {
        self.opt_str_array(key, expected)?
            .ok_or_else(|| self.missing(key, expected))
    }

    /// An optional array of integers.
    pub fn opt_i64_array(&self, key: &str, expected: &'static str) -> Result<Option<Vec<i64>>> {
        self.opt(key, expected, |v| {
            v.as_array()?.iter().map(MetaValue::as_i64).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Metadata {
        Metadata::new(
            Path::new("m.gguf"),
            vec![
                ("n".into(), MetaValue::I32(30)),
                ("neg".into(), MetaValue::I32(-1)),
                ("s".into(), MetaValue::String("llama".into())),
                ("eps".into(), MetaValue::F32(1e-5)),
            ],
        )
    }

    #[test]
    fn typed_getters_accept_any_integer_width() {
        let m = table();
        assert_eq!(m.usize("n", "a count").ok(), Some(30));
        assert_eq!(m.str("s", "a name").ok(), Some("llama"));
        assert_eq!(m.opt_f32("eps", "eps").ok().flatten(), Some(1e-5));
    }

    #[test]
    fn errors_name_the_key_and_the_expectation() {
        let m = table();
        let err = m
            .usize("absent", "the layer count")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "m.gguf: metadata key 'absent' is missing; expected the layer count"
        );
        let err = m.usize("neg", "a count").unwrap_err().to_string();
        assert_eq!(
            err,
            "m.gguf: metadata key 'neg' holds i32; expected a count"
        );
        let err = m.str("n", "a name").unwrap_err().to_string();
        assert!(err.contains("'n' holds i32; expected a name"), "{err}");
    }
}
