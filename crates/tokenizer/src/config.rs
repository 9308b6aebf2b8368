//! Reading the JSON files of a tokenizer directory and interpreting `tokenizer_config.json`.
//!
//! Only the fields this crate uses are interpreted (special tokens, `add_bos_token` /
//! `add_eos_token`, chat templates); the whole object is kept as read so `Tokenizer::save` writes
//! back everything else untouched. This is not where the vocabulary is loaded (`tokenizer.rs`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use crate::error::{Result, TokenizerError};

/// Name of the HF `tokenizers` serialisation inside a checkpoint directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Name of the transformers tokenizer configuration inside a checkpoint directory.
pub const CONFIG_FILE: &str = "tokenizer_config.json";
/// transformers ≥ 4.43 saves the default chat template here; it wins over the config's.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// transformers saves named templates other than "default" here, one `NAME.jinja` each.
pub const CHAT_TEMPLATE_DIR: &str = "additional_chat_templates";

/// The named special tokens transformers passes to chat templates
/// (`SPECIAL_TOKENS_ATTRIBUTES`), in its order.
const NAMED_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The special tokens of a tokenizer, as strings (`None` when the config leaves them unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// What `tokenizer_config.json` (plus template files) says, interpreted.
#[derive(Clone, Debug)]
pub(crate) struct ParsedConfig {
    /// The file as read, written back on save.
    pub raw: Map<String, Json>,
    pub special: SpecialTokens,
    /// Every special token transformers exposes to templates: the named ones and any other
    /// `*_token` key holding a token (transformers 5 "model-specific tokens").
    pub template_tokens: Map<String, Json>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    /// `(name, source)` of every chat template, config order.
    pub templates: Vec<(String, String)>,
    /// The file each template came from (`tokenizer_config.json` or its `.jinja` file), for
    /// errors; empty for templates built in.
    pub template_paths: Vec<PathBuf>,
}

/// Reads a file into a string, telling absence (with `hint`) apart from other I/O failures.
pub(crate) fn read_text(path: &Path, hint: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TokenizerError::MissingFile {
            path: path.to_owned(),
            hint: hint.to_owned(),
        },
        _ => TokenizerError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        },
    })
}

/// Converts a serde_json error into ours: syntax errors are "invalid JSON", errors in well-formed
/// JSON are "invalid content"; both keep the line and column.
pub(crate) fn json_error(path: &Path, err: serde_json::Error) -> TokenizerError {
    let (path, line, column) = (path.to_owned(), err.line(), err.column());
    let message = err.to_string();
    // serde_json appends " at line L column C" itself; we print those as fields.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    match err.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            TokenizerError::InvalidJson {
                path,
                line,
                column,
                message,
            }
        }
        _ => TokenizerError::InvalidContent {
            path,
            line,
            column,
            message,
        },
    }
}

/// Parses `dir/tokenizer_config.json` and the template files next to it.
pub(crate) fn load_config(dir: &Path) -> Result<ParsedConfig> {
    let path = dir.join(CONFIG_FILE);
    let hint = "a tokenizer directory needs tokenizer_config.json next to tokenizer.json \
                (transformers' `save_pretrained` writes both)";
    let text = read_text(&path, hint)?;
    let raw: Json = serde_json::from_str(&text).map_err(|e| json_error(&path, e))?;
    let Json::Object(raw) = raw else {
        return Err(TokenizerError::InvalidConfig {
            path,
            field: "<root>".into(),
            message: "expected a JSON object".into(),
        });
    };
    let field = |name: &str| token_field(&path, &raw, name);
    let special = SpecialTokens {
        bos: field("bos_token")?,
        eos: field("eos_token")?,
        pad: field("pad_token")?,
        unk: field("unk_token")?,
    };
    let mut templates = config_templates(&path, &raw)?;
    let mut template_paths = vec![path.clone(); templates.len()];
    let file_templates = template_files(dir)?;
    // As transformers: template files, when present, replace the config's templates entirely.
    if !file_templates.is_empty() {
        (templates, template_paths) = file_templates
            .into_iter()
            .map(|(n, s, p)| ((n, s), p))
            .unzip();
    }
    Ok(ParsedConfig {
        template_tokens: template_tokens(&path, &raw)?,
        add_bos_token: bool_field(&path, &raw, "add_bos_token")?,
        add_eos_token: bool_field(&path, &raw, "add_eos_token")?,
        raw,
        special,
        templates,
        template_paths,
    })
}

/// A special token given as a string, an AddedToken object `{"content": ...}`, or null.
fn token_field(path: &Path, raw: &Map<String, Json>, name: &str) -> Result<Option<String>> {
    match raw.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(o)) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(invalid(
                path,
                name,
                "an AddedToken object needs a string \"content\"",
            )),
        },
        Some(_) => Err(invalid(
            path,
            name,
            "expected a string, null, or an AddedToken object {\"content\": ...}",
        )),
    }
}

fn bool_field(path: &Path, raw: &Map<String, Json>, name: &str) -> Result<Option<bool>> {
    match raw.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(path, name, "expected true, false or null")),
    }
}

/// The tokens transformers 5 puts in `special_tokens_map` for templates: the named ones, then any
/// other `*_token` key whose value is a string or a serialised AddedToken.
fn template_tokens(path: &Path, raw: &Map<String, Json>) -> Result<Map<String, Json>> {
    let mut tokens = Map::new();
    for name in NAMED_TOKENS {
        if let Some(token) = token_field(path, raw, name)? {
            tokens.insert(name.into(), Json::String(token));
        }
    }
    for (key, value) in raw {
        if !key.ends_with("_token") || NAMED_TOKENS.contains(&key.as_str()) {
            continue;
        }
        let token = match value {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) if o.get("__type") == Some(&Json::from("AddedToken")) => {
                o.get("content").and_then(Json::as_str).map(str::to_owned)
            }
            _ => None,
        };
        if let Some(token) = token {
            tokens.insert(key.clone(), Json::String(token));
        }
    }
    Ok(tokens)
}

/// `chat_template` as a string (the "default" one) or a list of `{name, template}`.
fn config_templates(path: &Path, raw: &Map<String, Json>) -> Result<Vec<(String, String)>> {
    const SHAPE: &str = "expected a string or a list of {\"name\": ..., \"template\": ...}";
    match raw.get("chat_template") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(s)) => Ok(vec![("default".into(), s.clone())]),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(Json::as_str);
                let template = item.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some(n), Some(t)) => Ok((n.to_owned(), t.to_owned())),
                    _ => Err(invalid(path, "chat_template", SHAPE)),
                }
            })
            .collect(),
        Some(_) => Err(invalid(path, "chat_template", SHAPE)),
    }
}

/// `chat_template.jinja` ("default") and `additional_chat_templates/*.jinja`, sorted by name.
fn template_files(dir: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut templates = Vec::new();
    let default = dir.join(CHAT_TEMPLATE_FILE);
    if default.is_file() {
        templates.push(("default".to_owned(), read_text(&default, "")?, default));
    }
    let extra_dir = dir.join(CHAT_TEMPLATE_DIR);
    if !extra_dir.is_dir() {
        return Ok(templates);
    }
    let io_err = |path: PathBuf| {
        move |source| TokenizerError::Io {
            op: "list",
            path,
            source,
        }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&extra_dir).map_err(io_err(extra_dir.clone()))? {
        let path = entry.map_err(io_err(extra_dir.clone()))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jinja"));
        if let Some(name) = name {
            files.push((name.to_owned(), path.clone()));
        }
    }
    files.sort();
    for (name, path) in files {
        let text = read_text(&path, "")?;
        templates.push((name, text, path));
    }
    Ok(templates)
}

fn invalid(path: &Path, field: &str, message: &str) -> TokenizerError {
    TokenizerError::InvalidConfig {
        path: path.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn special_tokens_accept_strings_objects_and_null() {
        let raw = json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": {"content": "<pad>", "lstrip": false, "__type": "AddedToken"},
            "image_token": "<img>",
            "add_bos_token": false,
        });
        let raw = raw.as_object().unwrap();
        let path = Path::new("tokenizer_config.json");
        assert_eq!(token_field(path, raw, "bos_token").unwrap(), None);
        assert_eq!(
            token_field(path, raw, "pad_token").unwrap().as_deref(),
            Some("<pad>")
        );
        let tokens = template_tokens(path, raw).unwrap();
        let keys: Vec<&str> = tokens.keys().map(String::as_str).collect();
        assert_eq!(keys, ["eos_token", "pad_token", "image_token"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let raw = json!({"eos_token": 3, "chat_template": [{"name": "x"}]});
        let raw = raw.as_object().unwrap();
        let path = Path::new("tokenizer_config.json");
        let err = token_field(path, raw, "eos_token").unwrap_err().to_string();
        assert!(
            err.contains("`eos_token`") && err.contains("tokenizer_config.json"),
            "{err}"
        );
        let err = config_templates(path, raw).unwrap_err().to_string();
        assert!(err.contains("`chat_template`"), "{err}");
    }

    #[test]
    fn template_list_keeps_names() {
        let raw = json!({"chat_template": [
            {"name": "default", "template": "a"},
            {"name": "tool_use", "template": "b"},
        ]});
        let templates = config_templates(Path::new("c.json"), raw.as_object().unwrap()).unwrap();
        assert_eq!(
            templates,
            [
                ("default".into(), "a".into()),
                ("tool_use".into(), "b".into())
            ]
        );
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let err = serde_json::from_str::<Json>("{\n  \"a\": 1,\n}").unwrap_err();
        let err = json_error(Path::new("x.json"), err);
        match err {
            TokenizerError::InvalidJson { line, column, .. } => assert_eq!((line, column), (3, 1)),
            other => panic!("{other:?}"),
        }
    }
}
