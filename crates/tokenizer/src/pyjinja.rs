//! The Python side of transformers' chat-template environment, rebuilt for minijinja.
//!
//! transformers renders templates with Jinja2 inside Python, so what a template prints follows
//! Python: `{{ x }}` is `str(x)`, `tojson` is `json.dumps(x, ensure_ascii=False)` (not Jinja's
//! HTML-safe one), and the globals `raise_exception` and `strftime_now` exist
//! (`transformers/utils/chat_template_utils.py::_compile_jinja_template`). This module holds those
//! pieces: the output formatter, the `tojson` filter, the two globals, and the rewrite of the
//! `{% generation %}` tag. It is not the environment itself (see `chat.rs`) and not Python string
//! methods (`.strip()`, `.split()`...), which come from `minijinja_contrib::pycompat`.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Output, State, Value};

/// The error `raise_exception(message)` returns; `chat.rs` finds it in the error chain to report
/// the template's own message rather than a generic render failure.
#[derive(Debug)]
pub(crate) struct RaisedException(pub(crate) String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(message)`: templates call it to reject a conversation (wrong role order...).
pub(crate) fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: `datetime.now().strftime(format)`, local time like Python's.
pub(crate) fn strftime_now(format: String) -> Result<Value, Error> {
    let mut out = String::new();
    // chrono reports an unknown `%` code as a fmt::Error at display time (`to_string` would
    // panic), so format through `write!` and turn that into a template error.
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}

/// Rewrites transformers' `{% generation %}...{% endgeneration %}` (its `AssistantTracker`
/// extension, which only marks assistant spans) into `{% if true %}...{% endif %}`, keeping the
/// whitespace-control markers so trimming is unchanged.
pub(crate) fn rewrite_generation_tags(source: &str) -> String {
    // The patterns are constants: compiling them cannot fail.
    static OPEN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{%([-+]?)\s*generation\s*([-+]?)%\}").expect("constant regex")
    });
    static CLOSE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{%([-+]?)\s*endgeneration\s*([-+]?)%\}").expect("constant regex")
    });
    let opened = OPEN.replace_all(source, "{%${1} if true ${2}%}");
    CLOSE
        .replace_all(&opened, "{%${1} endif ${2}%}")
        .into_owned()
}

/// Output formatter: what `{{ value }}` prints, as Python's `str(value)` would.
pub(crate) fn py_formatter(
    out: &mut Output,
    _state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    let mut text = String::new();
    py_str(value, &mut text)?;
    out.write_str(&text)
        .map_err(|e| Error::new(ErrorKind::WriteFailure, "formatter").with_source(e))
}

/// Python `str(value)`.
fn py_str(value: &Value, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Map => py_repr(value, out)?,
        ValueKind::Number if !value.is_integer() => out.push_str(&py_float(as_f64(value))),
        _ => write!(out, "{value}").map_err(fmt_error)?,
    }
    Ok(())
}

/// Python `repr(value)`, used inside printed lists and dicts.
fn py_repr(value: &Value, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::String => py_str_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, out)?;
                out.push_str(": ");
                py_repr(&value.get_item(&key)?, out)?;
            }
            out.push('}');
        }
        _ => py_str(value, out)?,
    }
    Ok(())
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`.
fn py_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // Python escapes the C0/C1 controls and DEL as \xNN; other text prints as is.
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr(float)`: shortest round-trip digits, scientific outside `1e-4 <= |x| < 1e16`,
/// exponent with a sign and at least two digits (`1e+16`, `1e-05`).
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde±x`, the same digits Python uses.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within `digits`
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.unsigned_abs())
    }
}

fn as_f64(value: &Value) -> f64 {
    f64::try_from(value.clone()).unwrap_or(f64::NAN)
}

fn fmt_error(e: std::fmt::Error) -> Error {
    Error::new(ErrorKind::WriteFailure, "formatting a value").with_source(e)
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
struct JsonOptions {
    ensure_ascii: bool,
    /// `None`: one line; `Some(unit)`: newline and `unit` repeated per level.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The `tojson` filter with transformers' signature
/// `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, positional or
/// keyword, producing exactly `json.dumps`' text.
pub(crate) fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let pick = |positional: Option<Value>, name: &str| -> Result<Value, Error> {
        match positional {
            Some(v) => Ok(v),
            None => Ok(kwargs
                .get::<Option<Value>>(name)?
                .unwrap_or(Value::from(()))),
        }
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_true();
    let indent = match pick(indent, "indent")? {
        v if v.is_none() || v.is_undefined() => None,
        v if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        v => Some(" ".repeat(usize::try_from(v)?)),
    };
    let separators = pick(separators, "separators")?;
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    // json.dumps' defaults: ", " and ": " on one line, "," before a newline when indenting.
    let (item_sep, key_sep) = if separators.is_none() || separators.is_undefined() {
        let item = if indent.is_some() { "," } else { ", " };
        (item.to_owned(), ": ".to_owned())
    } else {
        let part = |i: usize| -> Result<String, Error> {
            Ok(separators
                .get_item_by_index(i)?
                .as_str()
                .unwrap_or_default()
                .to_owned())
        };
        (part(0)?, part(1)?)
    };
    let options = JsonOptions {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    dump_json(value, &options, 0, &mut out)?;
    Ok(Value::from(out))
}

fn dump_json(
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => write!(out, "{value}").map_err(fmt_error)?,
        ValueKind::Number => out.push_str(&json_float(as_f64(value))),
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), opts, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            dump_container(out, opts, depth, ('[', ']'), items.len(), |i, out| {
                dump_json(&items[i], opts, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let mut name = String::new();
                json_key(&key, &mut name)?;
                keys.push((name, key));
            }
            if opts.sort_keys {
                keys.sort_by(|a, b| a.0.cmp(&b.0));
            }
            dump_container(out, opts, depth, ('{', '}'), keys.len(), |i, out| {
                json_string(&keys[i].0, opts, out);
                out.push_str(&opts.key_sep);
                dump_json(&value.get_item(&keys[i].1)?, opts, depth + 1, out)
            })?;
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of kind {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

/// Writes `len` items between `brackets`, separated and indented like `json.dumps`.
fn dump_container(
    out: &mut String,
    opts: &JsonOptions,
    depth: usize,
    brackets: (char, char),
    len: usize,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(brackets.0);
    if len == 0 {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &opts.indent {
            out.push('\n');
            out.push_str(&unit.repeat(level));
        }
    };
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        newline(out, depth + 1);
        item(i, out)?;
    }
    newline(out, depth);
    out.push(brackets.1);
    Ok(())
}

/// Dict keys as `json.dumps` converts them: strings as is, numbers/bools/None as their JSON text.
fn json_key(key: &Value, out: &mut String) -> Result<(), Error> {
    match key.kind() {
        ValueKind::String => out.push_str(key.as_str().unwrap_or_default()),
        ValueKind::None | ValueKind::Undefined => out.push_str("null"),
        ValueKind::Bool => out.push_str(if key.is_true() { "true" } else { "false" }),
        ValueKind::Number if key.is_integer() => write!(out, "{key}").map_err(fmt_error)?,
        ValueKind::Number => out.push_str(&json_float(as_f64(key))),
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
            ));
        }
    }
    Ok(())
}

/// `json.dumps` floats: `float.__repr__`, with `NaN`/`Infinity` for the non-finite ones.
fn json_float(x: f64) -> String {
    match py_float(x).as_str() {
        "nan" => "NaN".into(),
        "inf" => "Infinity".into(),
        "-inf" => "-Infinity".into(),
        s => s.into(),
    }
}

/// `json.dumps` string escaping; with `ensure_ascii` every non-ASCII char becomes `\uXXXX`
/// (UTF-16 surrogate pairs above the BMP), lowercase hex as Python writes it.
fn json_string(s: &str, opts: &JsonOptions, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (1e300, "1e+300"),
            (-0.0, "-0.0"),
        ];
        for (x, expected) in cases {
            assert_eq!(py_float(x), expected, "{x}");
        }
    }

    #[test]
    fn string_repr_picks_quotes_like_python() {
        let repr = |s: &str| {
            let mut out = String::new();
            py_str_repr(s, &mut out);
            out
        };
        assert_eq!(repr("a"), "'a'");
        assert_eq!(repr("it's"), "\"it's\"");
        assert_eq!(repr("'\"\n"), "'\\'\"\\n'");
        assert_eq!(repr("é\u{1}"), "'é\\x01'");
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        let src = "{%- generation -%}x{% endgeneration %}";
        assert_eq!(rewrite_generation_tags(src), "{%- if true -%}x{% endif %}");
    }
}
