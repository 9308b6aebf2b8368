//! Chat templates: messages in, the exact prompt text transformers would produce out.
//!
//! `ChatTemplate` compiles a Jinja chat template with minijinja configured like transformers'
//! sandboxed Jinja2 environment (`trim_blocks`, `lstrip_blocks`, no trailing newline kept, loop
//! controls, Python string methods, its own `tojson`, `raise_exception`, `strftime_now`) and
//! prepares the variables as `PreTrainedTokenizerBase.apply_chat_template` does (keys whose value
//! is null dropped, reasoning fields aliased, `tools`/`documents` passed as `None` when absent).
//! It is not the tokenizer (that is `tokenizer.rs`, which adds the special tokens to the
//! variables and encodes the result), and not an implementation of `continue_final_message` or of
//! the assistant-token mask.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{Result, TokenizerError};
use crate::pyjinja;

/// The template used when a checkpoint has none: ChatML, as Qwen and SmolLM use, so a tiny model
/// trained here speaks the same turn format as the reference models.
///
/// Renders `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n`
/// when a generation prompt is asked for.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Variable names the renderer sets itself; passing them in `ChatOptions::kwargs` is an error,
/// as it is a `TypeError` (duplicate keyword argument) in Python.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// The message fields a reasoning trace may come in; transformers copies the first non-null one
/// to `thinking` (first key) and `reasoning_content` (`_alias_reasoning_fields`).
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// One chat message: `role`, `content` and any extra keys the template reads (`tool_calls`,
/// `reasoning_content`, `name`...). Serialises to `{"role", "content", ...extra}` in that order,
/// the order a Python caller would write the dict in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// Usually a string; `null` for an assistant turn that only calls tools (dropped before
    /// rendering, as transformers drops `None` values; also what a missing `content` key
    /// deserialises to); a list of parts for multimodal content.
    #[serde(default)]
    pub content: Json,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Message {
    /// A message with a text content and no extra keys.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Json::String(content.into()),
            extra: Map::new(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// Adds (or replaces) an extra key, e.g. `.with("tool_calls", json!([...]))`.
    pub fn with(mut self, key: impl Into<String>, value: Json) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

/// What `apply_chat_template` takes besides the messages.
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    /// Append the header that starts an assistant turn (false: the conversation is complete,
    /// e.g. an SFT example).
    pub add_generation_prompt: bool,
    /// JSON schemas of the tools the model may call; `None` renders as Python `None`.
    pub tools: Option<Vec<Json>>,
    /// Documents for retrieval-augmented templates; `None` renders as Python `None`.
    pub documents: Option<Vec<Json>>,
    /// Any other template variable (`enable_thinking`, `bos_token`...), like transformers'
    /// `**kwargs`. `Tokenizer::render_chat_with` puts the special tokens here first, so a value
    /// given here overrides them, as in transformers.
    pub kwargs: Map<String, Json>,
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    name: String,
    source: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `name` is how errors refer to it (`"default"`, `"tool_use"`...).
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let source = source.into();
        let env = build_environment(&name, &source)?;
        Ok(Self { name, source, env })
    }

    /// The ChatML template, `CHATML_TEMPLATE`, named `"default"`.
    pub fn chatml() -> Self {
        // A constant covered by the unit tests below: compiling it cannot fail at runtime.
        Self::new("default", CHATML_TEMPLATE).expect("CHATML_TEMPLATE compiles")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template text as given (before the `{% generation %}` rewrite).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation. Only the variables in `options` are set: to see `bos_token`
    /// and friends use `Tokenizer::render_chat_with`, which adds them.
    ///
    /// A template is code from a checkpoint: it runs at most `TEMPLATE_FUEL` instructions and
    /// writes at most `TEMPLATE_MAX_OUTPUT` bytes, so a hostile one (nested `range` loops, string
    /// repetition) fails with an error instead of running for hours or filling memory.
    pub fn render(&self, messages: &[Message], options: &ChatOptions) -> Result<String> {
        let context = self.context(messages, options)?;
        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| self.template_error(e))?;
        let mut out = Capped {
            buf: Vec::new(),
            limit: TEMPLATE_MAX_OUTPUT,
        };
        template
            .render_captured_to(context, &mut out)
            .map_err(|e| self.template_error(e))?;
        String::from_utf8(out.buf).map_err(|e| TokenizerError::Template {
            name: self.name.clone(),
            message: format!("the template wrote invalid UTF-8: {e}"),
        })
    }

    /// The variables, built in the order transformers passes them to `render`.
    fn context(&self, messages: &[Message], options: &ChatOptions) -> Result<Value> {
        if messages.is_empty() {
            return Err(TokenizerError::InvalidArgument(
                "cannot apply a chat template to an empty conversation".into(),
            ));
        }
        if let Some(key) = RESERVED.iter().find(|k| options.kwargs.contains_key(**k)) {
            return Err(TokenizerError::InvalidArgument(format!(
                "`{key}` is set by the renderer; pass it through its own ChatOptions field"
            )));
        }
        let messages: Vec<Map<String, Json>> = messages.iter().map(template_message).collect();
        let mut ctx = Map::new();
        ctx.insert("messages".into(), Json::from(messages));
        ctx.insert(
            "tools".into(),
            options.tools.clone().map_or(Json::Null, Json::from),
        );
        ctx.insert(
            "documents".into(),
            options.documents.clone().map_or(Json::Null, Json::from),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            options.add_generation_prompt.into(),
        );
        ctx.extend(options.kwargs.clone());
        Ok(Value::from(minijinja::value::Serde(&ctx)))
    }

    fn template_error(&self, err: minijinja::Error) -> TokenizerError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(raised) = e.downcast_ref::<pyjinja::RaisedException>() {
                return TokenizerError::TemplateException {
                    name: self.name.clone(),
                    message: raised.0.clone(),
                };
            }
            source = e.source();
        }
        TokenizerError::Template {
            name: self.name.clone(),
            message: err.to_string(),
        }
    }
}

/// Most instructions one render may run (a conversation of thousands of messages through a
/// long template with tools takes well under a million).
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Most bytes one render may write.
pub const TEMPLATE_MAX_OUTPUT: usize = 16 << 20;

/// A writer that refuses to grow past `limit` bytes.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "the rendered conversation passed {} MiB",
                self.limit >> 20
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A minijinja environment that behaves like transformers' `ImmutableSandboxedEnvironment`
/// (`_compile_jinja_template`), holding the one template.
fn build_environment(name: &str, source: &str) -> Result<Environment<'static>> {
    let template_error = |e: minijinja::Error| TokenizerError::Template {
        name: name.to_owned(),
        message: e.to_string(),
    };
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    // Jinja2's defaults except the two transformers turns on; a trailing newline of the template
    // is dropped (keep_trailing_newline=False), which is Jinja2's default too.
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .map_err(template_error)?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(pyjinja::py_formatter);
    env.add_filter("tojson", pyjinja::tojson);
    env.add_function("raise_exception", pyjinja::raise_exception);
    env.add_function("strftime_now", pyjinja::strftime_now);
    // Jinja2 built-ins that minijinja keeps in contrib.
    env.add_filter("truncate", minijinja_contrib::filters::truncate);
    env.add_filter("striptags", minijinja_contrib::filters::striptags);
    env.add_filter("filesizeformat", minijinja_contrib::filters::filesizeformat);
    env.add_function("cycler", minijinja_contrib::globals::cycler);
    env.add_function("joiner", minijinja_contrib::globals::joiner);
    env.add_template_owned(name.to_owned(), pyjinja::rewrite_generation_tags(source))
        .map_err(template_error)?;
    Ok(env)
}

/// One message as the template sees it: null-valued keys dropped (`_normalize_chat_messages`),
/// then reasoning aliased (`_alias_reasoning_fields`) as `{"thinking": r, **message,
/// "reasoning_content": r}`.
fn template_message(message: &Message) -> Map<String, Json> {
    let mut plain = Map::new();
    plain.insert("role".into(), Json::String(message.role.clone()));
    plain.insert("content".into(), message.content.clone());
    plain.extend(message.extra.clone());
    plain.retain(|_, v| !v.is_null());
    let Some(reasoning) = REASONING_FIELDS.iter().find_map(|k| plain.get(*k).cloned()) else {
        return plain;
    };
    let mut aliased = Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    // With serde_json's preserve_order, re-inserting an existing key keeps its position, as a
    // Python dict update does.
    aliased.extend(plain);
    aliased.insert("reasoning_content".into(), reasoning);
    aliased
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(source: &str, messages: &[Message], options: &ChatOptions) -> Result<String> {
        ChatTemplate::new("test", source)?.render(messages, options)
    }

    #[test]
    fn chatml_renders_turns_and_generation_prompt() {
        let messages = [Message::system("Be brief."), Message::user("Hi")];
        let options = ChatOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let text = ChatTemplate::chatml().render(&messages, &options).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let options = ChatOptions::default();
        let text = ChatTemplate::chatml().render(&messages, &options).unwrap();
        assert!(text.ends_with("Hi<|im_end|>\n"), "{text:?}");
    }

    #[test]
    fn raise_exception_propagates_its_message() {
        let source = "{% if messages[0].role != 'user' %}\
                      {{ raise_exception('Conversation must start with a user turn') }}{% endif %}";
        let err = render(source, &[Message::assistant("x")], &ChatOptions::default()).unwrap_err();
        match &err {
            TokenizerError::TemplateException { name, message } => {
                assert_eq!(name, "test");
                assert_eq!(message, "Conversation must start with a user turn");
            }
            other => panic!("expected TemplateException, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("Conversation must start with a user turn")
        );
    }

    #[test]
    fn syntax_error_names_the_template() {
        let err = ChatTemplate::new("broken", "{% for m in messages %}").unwrap_err();
        assert!(matches!(err, TokenizerError::Template { ref name, .. } if name == "broken"));
    }

    #[test]
    fn empty_conversation_and_reserved_kwargs_are_rejected() {
        let err = render("x", &[], &ChatOptions::default()).unwrap_err();
        assert!(matches!(err, TokenizerError::InvalidArgument(_)), "{err}");
        let mut options = ChatOptions::default();
        options.kwargs.insert("messages".into(), json!([]));
        let err = render("x", &[Message::user("a")], &options).unwrap_err();
        assert!(err.to_string().contains("messages"), "{err}");
    }

    #[test]
    fn python_string_methods_and_whitespace_control() {
        let source = "{% for m in messages %}\n  {{ m.content.strip().split(',')[-1] }}|\
                      {{ m.content.startswith(' a') }}\n{% endfor %}\n";
        let text = render(source, &[Message::user(" a,b ")], &ChatOptions::default()).unwrap();
        // trim_blocks eats the newline after a block, lstrip_blocks the indent before one, and
        // the template's own trailing newline is dropped.
        assert_eq!(text, "  b|True\n");
    }

    #[test]
    fn values_print_like_python_str() {
        let source = "{{ messages[0].x }} {{ messages[0].y }} {{ messages[0].z }} {{ tools }}";
        let message = Message::user("a").with("x", json!({"k": [1, 2.5, "it's"]}));
        let message = message.with("y", json!(true)).with("z", json!(1e20));
        let text = render(source, &[message], &ChatOptions::default()).unwrap();
        assert_eq!(text, "{'k': [1, 2.5, \"it's\"]} True 1e+20 None");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let source = "{{ messages[0].t | tojson }}\n{{ messages[0].t | tojson(indent=2) }}\n\
                      {{ messages[0].t | tojson(separators=(',', ':'), sort_keys=true) }}\n\
                      {{ '<é>' | tojson(ensure_ascii=true) }}";
        let message = Message::user("a").with("t", json!({"b": "<é\n>", "a": [1.0, null, {}]}));
        let text = render(source, &[message], &ChatOptions::default()).unwrap();
        let expected = "{\"b\": \"<é\\n>\", \"a\": [1.0, null, {}]}\n\
                        {\n  \"b\": \"<é\\n>\",\n  \"a\": [\n    1.0,\n    null,\n    {}\n  ]\n}\n\
                        {\"a\":[1.0,null,{}],\"b\":\"<é\\n>\"}\n\
                        \"<\\u00e9>\"";
        assert_eq!(text, expected);
    }

    #[test]
    fn null_keys_are_dropped_and_reasoning_aliased() {
        let source = "{{ messages[0].content is defined }} {{ messages[0].thinking }} \
                      {{ messages[0] | tojson }}";
        let message = Message {
            role: "assistant".into(),
            content: Json::Null,
            extra: Map::new(),
        }
        .with("reasoning", json!("hmm"));
        let text = render(source, &[message], &ChatOptions::default()).unwrap();
        assert_eq!(
            text,
            "False hmm {\"thinking\": \"hmm\", \"role\": \"assistant\", \"reasoning\": \"hmm\", \
             \"reasoning_content\": \"hmm\"}"
        );
    }

    #[test]
    fn strftime_now_and_generation_tags_and_loop_controls() {
        let source = "{% generation %}{{ strftime_now('%Y') | length }}{% endgeneration %}\
                      {% for m in messages %}{% break %}{% endfor %}";
        let text = render(source, &[Message::user("a")], &ChatOptions::default()).unwrap();
        assert_eq!(text, "4");
        let err = render(
            "{{ strftime_now('%Q') }}",
            &[Message::user("a")],
            &ChatOptions::default(),
        );
        assert!(err.is_err());
    }
}
