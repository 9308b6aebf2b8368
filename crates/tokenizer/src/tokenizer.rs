//! `Tokenizer`: a checkpoint directory's `tokenizer.json` + `tokenizer_config.json`, as one value.
//!
//! Encoding and decoding are the HF `tokenizers` crate itself (the Rust core the Python
//! `tokenizers` package wraps), so ids match Python's `Tokenizer.encode(text,
//! add_special_tokens=...)` exactly; this file adds the configuration around it (special tokens,
//! chat templates) and its errors. It is not the template engine (`chat.rs`) nor BPE training
//! (`train.rs`), and it does not pad or truncate beyond what `tokenizer.json` itself asks for.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use crate::chat::{ChatOptions, ChatTemplate, Message};
use crate::config::{
    self, CHAT_TEMPLATE_FILE, CONFIG_FILE, ParsedConfig, SpecialTokens, TOKENIZER_FILE,
};
use crate::error::{Result, TokenizerError};

/// A loaded tokenizer with its special tokens and chat templates.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    config: ParsedConfig,
    templates: Vec<ChatTemplate>,
    ids: SpecialIds,
    /// Cached: the HF crate recomputes it from a fresh vocab map on every call.
    vocab_size: usize,
    /// Where it was loaded from, for error messages (`None` when built in memory).
    origin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size)
            .field("special", &self.config.special)
            .field("templates", &self.templates)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json` (plus `chat_template.jinja`
    /// and `additional_chat_templates/*.jinja` when present, which win over the config's
    /// `chat_template`, as in transformers).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_FILE);
        let hint = "a tokenizer directory needs the HF `tokenizers` serialisation tokenizer.json \
                    (transformers' `save_pretrained` writes it for fast tokenizers)";
        let text = config::read_text(&path, hint)?;
        // The `tokenizers` library panics (`expect`) instead of failing on some malformed
        // decoders; a downloaded file must not take the process down, so that is an error too.
        let parsed =
            std::panic::catch_unwind(|| serde_json::from_str::<tokenizers::Tokenizer>(&text))
                .map_err(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("malformed content");
                    TokenizerError::InvalidContent {
                        path: path.clone(),
                        line: 0,
                        column: 0,
                        message: format!("the tokenizers library rejected it: {what}"),
                    }
                })?;
        let inner = parsed.map_err(|e| config::json_error(&path, e))?;
        let config = config::load_config(dir)?;
        let mut tokenizer = Self::from_parts(inner, config, &dir.join(CONFIG_FILE))?;
        tokenizer.origin = Some(dir.to_owned());
        Ok(tokenizer)
    }

    /// Assembles a tokenizer, checking the special tokens exist and compiling the templates.
    /// `config_path` is only used in error messages.
    pub(crate) fn from_parts(
        inner: tokenizers::Tokenizer,
        config: ParsedConfig,
        config_path: &Path,
    ) -> Result<Self> {
        let lookup = |field: &str, token: &Option<String>| -> Result<Option<u32>> {
            let Some(token) = token else { return Ok(None) };
            match inner.token_to_id(token) {
                Some(id) => Ok(Some(id)),
                None => Err(TokenizerError::UnknownSpecialToken {
                    path: config_path.to_owned(),
                    field: field.to_owned(),
                    token: token.clone(),
                }),
            }
        };
        let special = &config.special;
        let ids = SpecialIds {
            bos: lookup("bos_token", &special.bos)?,
            eos: lookup("eos_token", &special.eos)?,
            pad: lookup("pad_token", &special.pad)?,
            unk: lookup("unk_token", &special.unk)?,
        };
        let templates = (config.templates.iter().enumerate())
            .map(|(i, (name, source))| {
                ChatTemplate::new(name.clone(), source.clone()).map_err(|e| {
                    let path = config.template_paths.get(i).map_or(config_path, |p| p);
                    TokenizerError::InvalidConfig {
                        path: path.to_owned(),
                        field: "chat_template".into(),
                        message: e.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vocab_size: inner.get_vocab_size(true),
            inner,
            config,
            templates,
            ids,
            origin: None,
        })
    }

    /// Token ids of `text`, exactly as Python `tokenizers`' `encode(text, add_special_tokens)`:
    /// added/special tokens written in the text are always matched; `add_special_tokens` only
    /// controls what the post-processor adds around the sequence (BOS/EOS templates).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = (self.inner.encode_fast(text, add_special_tokens))
            .map_err(|e| TokenizerError::tokenizers("encode", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `encode` of every text, in parallel.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        add_special_tokens: bool,
    ) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = (self.inner.encode_batch_fast(inputs, add_special_tokens))
            .map_err(|e| TokenizerError::tokenizers("encode_batch", e))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of `ids`; with `skip_special_tokens` the special added tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        (self.inner.decode(ids, skip_special_tokens))
            .map_err(|e| TokenizerError::tokenizers("decode", e))
    }

    /// Number of tokens including added tokens (Python's `get_vocab_size(with_added_tokens=True)`,
    /// transformers' `len(tokenizer)`). For the usual contiguous vocabularies this is max id + 1;
    /// a model's embedding may still be larger (Qwen pads it to a multiple of 128).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.ids.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.ids.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.ids.pad
    }

    /// The id to pad batches with: the pad token, else EOS (many checkpoints, GPT-2 and Llama
    /// among them, define no pad token and transformers then pads with EOS), else 0. Padding is
    /// never attended to or trained on, so any valid id would do; this one is always in range.
    pub fn padding_id(&self) -> i64 {
        self.ids.pad.or(self.ids.eos).map_or(0, i64::from)
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.ids.unk
    }

    /// The special tokens as strings.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.config.special
    }

    /// `add_bos_token` of the config (false when absent). Informational: `encode` follows the
    /// post-processor of tokenizer.json, as Python `tokenizers` does.
    pub fn add_bos_token(&self) -> bool {
        self.config.add_bos_token.unwrap_or(false)
    }

    /// `add_eos_token` of the config (false when absent); informational like `add_bos_token`.
    pub fn add_eos_token(&self) -> bool {
        self.config.add_eos_token.unwrap_or(false)
    }

    /// Id of a token string, including added tokens.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id (byte-level tokens come back in their `Ġ`-style alphabet).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying HF tokenizer, for what this wrapper does not expose (offsets, pairs).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Whether `other` reads and writes token ids exactly as this one does: the same
    /// `tokenizer.json` (vocabulary, merges, normalisation, added tokens) and the same special
    /// ids. Models compared by log-probs, or a policy scored by a reward model, must share one.
    pub fn same_as(&self, other: &Tokenizer) -> bool {
        let json = |t: &Tokenizer| t.inner.to_string(false).ok();
        self.ids == other.ids && json(self).is_some() && json(self) == json(other)
    }

    /// The "default" chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template_named("default")
    }

    /// A chat template by name (`"default"`, `"tool_use"`, ...).
    pub fn chat_template_named(&self, name: &str) -> Option<&ChatTemplate> {
        self.templates.iter().find(|t| t.name() == name)
    }

    /// Replaces (or adds) the template with the same name; use `ChatTemplate::chatml()` to give
    /// a tokenizer without one the documented default.
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        self.templates.retain(|t| t.name() != template.name());
        self.templates.push(template);
        self
    }

    /// The prompt text of a conversation: `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)`.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let options = ChatOptions {
            add_generation_prompt,
            ..Default::default()
        };
        self.render_chat_with(messages, &options)
    }

    /// `render_chat` with tools, documents and extra variables (`enable_thinking`...). The
    /// special tokens (`bos_token`, `eos_token`...) are set first; `options.kwargs` override them.
    pub fn render_chat_with(&self, messages: &[Message], options: &ChatOptions) -> Result<String> {
        let template = self.select_template(options.tools.is_some())?;
        let mut kwargs: Map<String, Json> = self.config.template_tokens.clone();
        kwargs.extend(options.kwargs.clone());
        let options = ChatOptions {
            kwargs,
            ..options.clone()
        };
        template.render(messages, &options)
    }

    /// Token ids of the rendered conversation, encoded without adding special tokens (the
    /// template writes them), as transformers' `apply_chat_template(..., tokenize=True)`.
    pub fn apply_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages, add_generation_prompt)?, false)
    }

    /// `apply_chat` with tools, documents and extra variables.
    pub fn apply_chat_with(&self, messages: &[Message], options: &ChatOptions) -> Result<Vec<u32>> {
        self.encode(&self.render_chat_with(messages, options)?, false)
    }

    /// transformers' `get_chat_template`: "tool_use" when tools are given and it exists, else
    /// "default"; several templates without a "default" is an error, not a guess.
    fn select_template(&self, with_tools: bool) -> Result<&ChatTemplate> {
        let tool_use = self.chat_template_named("tool_use").filter(|_| with_tools);
        if let Some(t) = tool_use.or_else(|| self.chat_template()) {
            return Ok(t);
        }
        let origin = match &self.origin {
            Some(dir) => format!("the tokenizer in {}", dir.display()),
            None => "this tokenizer".to_owned(),
        };
        let message = if self.templates.is_empty() {
            format!(
                "{origin} has no chat template (no `chat_template` in {CONFIG_FILE}, no \
                 {CHAT_TEMPLATE_FILE}); give it one with `with_chat_template`, e.g. \
                 `ChatTemplate::chatml()`"
            )
        } else {
            let names: Vec<&str> = self.templates.iter().map(ChatTemplate::name).collect();
            format!("{origin} has several chat templates {names:?} and none named \"default\"")
        };
        Err(TokenizerError::NoChatTemplate(message))
    }

    /// Writes `dir/tokenizer.json` and `dir/tokenizer_config.json` (the config as loaded, with
    /// the current chat templates), creating `dir` if needed. A `chat_template.jinja` already in
    /// `dir` is refreshed too, since on loading it would win over the config.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| TokenizerError::Io {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        let tokenizer_json =
            (self.inner.to_string(true)).map_err(|e| TokenizerError::tokenizers("serialise", e))?;
        write(&dir.join(TOKENIZER_FILE), &tokenizer_json)?;
        let config = self.config_json();
        let config = serde_json::to_string_pretty(&config)
            .map_err(|e| TokenizerError::tokenizers("serialise config", e))?;
        write(&dir.join(CONFIG_FILE), &(config + "\n"))?;
        let jinja = dir.join(CHAT_TEMPLATE_FILE);
        if let (true, Some(template)) = (jinja.is_file(), self.chat_template()) {
            write(&jinja, template.source())?;
        }
        Ok(())
    }

    /// The config to save: as loaded, `chat_template` replaced by the current templates (a
    /// string when there is only "default", the named list otherwise, as transformers writes).
    fn config_json(&self) -> Json {
        let mut raw = self.config.raw.clone();
        let templates = match self.templates.as_slice() {
            [] => None,
            [only] if only.name() == "default" => Some(Json::from(only.source())),
            all => Some(Json::from(
                all.iter()
                    .map(|t| serde_json::json!({"name": t.name(), "template": t.source()}))
                    .collect::<Vec<_>>(),
            )),
        };
        match templates {
            Some(t) => raw.insert("chat_template".into(), t),
            None => raw.remove("chat_template"),
        };
        Json::Object(raw)
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| TokenizerError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}
