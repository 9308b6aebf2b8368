//! Loading a tokenizer directory: what each broken input reports, and how chat templates are
//! found (config string, named list, `chat_template.jinja`).
//!
//! Each test starts from a small trained tokenizer saved to its own directory, then edits the
//! files. No fetched assets needed.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rlhf_tokenizer::{
    BpeConfig, ChatOptions, ChatTemplate, Message, Tokenizer, TokenizerError, train_bpe,
};
use serde_json::{Value, json};

/// A saved tokenizer in a fresh directory named after the test.
fn saved(test: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("loading")
        .join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let corpus = ["hello world, hello tokenizer", "the world says hello"].repeat(20);
    let config = BpeConfig {
        vocab_size: 270,
        ..Default::default()
    };
    train_bpe(corpus, &config)?.save(&dir)?;
    Ok(dir)
}

/// Edits `tokenizer_config.json` in place.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<()> {
    let path = dir.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    edit(config.as_object_mut().expect("saved config is an object"));
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

#[test]
fn missing_files_are_named() -> Result<()> {
    let err = Tokenizer::from_dir("/nonexistent/tokenizer-dir").unwrap_err();
    assert!(matches!(err, TokenizerError::MissingFile { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/tokenizer-dir/tokenizer.json"),
        "{err}"
    );

    let dir = saved("missing_config")?;
    std::fs::remove_file(dir.join("tokenizer_config.json"))?;
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    Ok(())
}

#[test]
fn invalid_json_reports_line_and_column() -> Result<()> {
    let dir = saved("invalid_json")?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\n  \"eos_token\": \"x\",\n}\n",
    )?;
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    match &err {
        TokenizerError::InvalidJson { path, line, .. } => {
            assert!(path.ends_with("tokenizer_config.json"));
            assert_eq!(*line, 3);
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert!(err.to_string().contains("line 3, column 1"), "{err}");

    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"model\": {\"type\": \"Nope\"}}",
    )?;
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizerError::InvalidContent { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    Ok(())
}

#[test]
fn unknown_special_token_is_an_error() -> Result<()> {
    let dir = saved("unknown_special")?;
    edit_config(&dir, |c| {
        c.insert(
            "eos_token".into(),
            json!({"content": "<|nope|>", "special": true}),
        );
    })?;
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    match &err {
        TokenizerError::UnknownSpecialToken { field, token, .. } => {
            assert_eq!((field.as_str(), token.as_str()), ("eos_token", "<|nope|>"));
        }
        other => panic!("expected UnknownSpecialToken, got {other:?}"),
    }
    Ok(())
}

#[test]
fn added_token_objects_and_null_are_accepted() -> Result<()> {
    let dir = saved("added_token_objects")?;
    edit_config(&dir, |c| {
        c.insert(
            "eos_token".into(),
            json!({"content": "<|im_end|>", "__type": "AddedToken"}),
        );
        c.insert("bos_token".into(), Value::Null);
    })?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    assert_eq!(tokenizer.eos_id(), tokenizer.token_to_id("<|im_end|>"));
    assert_eq!(tokenizer.bos_id(), None);
    Ok(())
}

#[test]
fn missing_template_is_a_clear_error() -> Result<()> {
    let dir = saved("no_template")?;
    edit_config(&dir, |c| {
        c.remove("chat_template");
    })?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    assert!(tokenizer.chat_template().is_none());
    let err = tokenizer
        .render_chat(&[Message::user("hi")], true)
        .unwrap_err();
    assert!(matches!(err, TokenizerError::NoChatTemplate(_)), "{err}");
    assert!(err.to_string().contains("has no chat template"), "{err}");
    let tokenizer = tokenizer.with_chat_template(ChatTemplate::chatml());
    assert!(tokenizer.render_chat(&[Message::user("hi")], true).is_ok());
    Ok(())
}

#[test]
fn named_templates_pick_default_or_tool_use() -> Result<()> {
    let dir = saved("named_templates")?;
    edit_config(&dir, |c| {
        let templates = json!([
            {"name": "default", "template": "D{{ bos_token }}"},
            {"name": "tool_use", "template": "T{{ tools | length }}"},
        ]);
        c.insert("chat_template".into(), templates);
    })?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let messages = [Message::user("hi")];
    assert_eq!(tokenizer.render_chat(&messages, false)?, "D<|endoftext|>");
    let options = ChatOptions {
        tools: Some(vec![json!({"name": "f"})]),
        ..Default::default()
    };
    assert_eq!(tokenizer.render_chat_with(&messages, &options)?, "T1");

    // Saved back as the named list, and without a "default" nothing is guessed.
    tokenizer.save(&dir)?;
    edit_config(&dir, |c| {
        let list = c["chat_template"].as_array_mut().expect("saved as a list");
        assert_eq!(list.len(), 2);
        list.remove(0);
    })?;
    let err = Tokenizer::from_dir(&dir)?
        .render_chat(&messages, false)
        .unwrap_err();
    assert!(err.to_string().contains("none named \"default\""), "{err}");
    Ok(())
}

#[test]
fn chat_template_file_wins_over_config() -> Result<()> {
    let dir = saved("template_file")?;
    std::fs::write(
        dir.join("chat_template.jinja"),
        "from file {{ messages | length }}\n",
    )?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    assert_eq!(
        tokenizer.render_chat(&[Message::user("a")], false)?,
        "from file 1"
    );
    Ok(())
}

#[test]
fn raise_exception_reaches_the_caller() -> Result<()> {
    let dir = saved("raise")?;
    let source =
        "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}";
    edit_config(&dir, |c| {
        c.insert("chat_template".into(), json!(source));
    })?;
    let err = Tokenizer::from_dir(&dir)?
        .apply_chat(&[Message::user("a")], true)
        .unwrap_err();
    match err {
        TokenizerError::TemplateException { message, .. } => assert_eq!(message, "system first"),
        other => panic!("expected TemplateException, got {other:?}"),
    }
    Ok(())
}
