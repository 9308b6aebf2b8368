//! Byte-level BPE training: configured vocabulary size, special tokens, lossless round trip,
//! determinism, and a saved tokenizer that loads back with its ChatML template.
//!
//! Self-contained (no fetched assets): the corpus is generated here.

use std::path::PathBuf;

use anyhow::Result;
use rlhf_tokenizer::{
    BpeConfig, ENDOFTEXT, IM_END, IM_START, Message, PAD, Tokenizer, TokenizerError, train_bpe,
    train_bpe_files,
};

/// A few hundred lines of varied text: prose, numbers, code, some non-ASCII.
fn corpus() -> Vec<String> {
    let subjects = [
        "The model",
        "A small policy",
        "Our reward model",
        "The critic",
        "Everyone",
    ];
    let verbs = ["learns", "predicts", "ranks", "samples", "reviews"];
    let objects = [
        "the next token",
        "human preferences",
        "a short answer",
        "the café menu",
    ];
    let mut lines = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        for (j, v) in verbs.iter().enumerate() {
            for (k, o) in objects.iter().enumerate() {
                lines.push(format!(
                    "{s} {v} {o} in step {} of {}.",
                    i * 20 + j * 4 + k,
                    100
                ));
                lines.push(format!("def f_{i}_{j}(x):\n    return x * {k}  # {v}\n"));
            }
        }
    }
    lines.push("日本語のテキストと emoji 🙂 also appear, but rarely.".into());
    lines
}

fn config(vocab_size: usize) -> BpeConfig {
    BpeConfig {
        vocab_size,
        ..Default::default()
    }
}

#[test]
fn vocab_size_and_special_tokens_are_as_configured() -> Result<()> {
    let tokenizer = train_bpe(corpus(), &config(360))?;
    assert_eq!(tokenizer.vocab_size(), 360);
    let id = |t: &str| tokenizer.token_to_id(t);
    assert_eq!(
        (id(ENDOFTEXT), id(PAD), id(IM_START), id(IM_END)),
        (Some(0), Some(1), Some(2), Some(3))
    );
    assert_eq!(tokenizer.bos_id(), Some(0));
    assert_eq!(tokenizer.eos_id(), Some(0));
    assert_eq!(tokenizer.pad_id(), Some(1));
    assert_ne!(
        tokenizer.pad_id(),
        tokenizer.eos_id(),
        "pad must not be eos"
    );
    assert_eq!(
        tokenizer.unk_id(),
        None,
        "byte-level BPE never needs an unknown token"
    );
    // Merges were learned: a frequent word is one token.
    assert_eq!(tokenizer.encode(" model", false)?.len(), 1);
    Ok(())
}

#[test]
fn arbitrary_unicode_round_trips() -> Result<()> {
    let tokenizer = train_bpe(corpus(), &config(360))?;
    let texts = [
        "",
        "plain ascii, never seen: zyxwvu QQQ",
        "  leading and trailing whitespace \t\n\r\n  ",
        "中文、日本語、한국어 — mixed scripts",
        "emoji 👩🏾‍💻 👨‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 with ZWJ and skin tones",
        "e\u{301} combining marks stay decomposed",
        "control \u{0}\u{1}\u{7f} and zero\u{200b}width",
        "<|im_start|>user\nspecial tokens in text<|im_end|><|endoftext|><|pad|>",
    ];
    for text in texts {
        let ids = tokenizer.encode(text, false)?;
        assert_eq!(
            tokenizer.decode(&ids, false)?,
            text,
            "round trip of {text:?}"
        );
    }
    let ids = tokenizer.encode("<|im_start|>hi<|im_end|>", false)?;
    assert_eq!(
        ids.first(),
        Some(&2),
        "special tokens written in text are matched"
    );
    assert_eq!(tokenizer.decode(&ids, true)?, "hi");
    Ok(())
}

#[test]
fn training_is_deterministic() -> Result<()> {
    let a = train_bpe(corpus(), &config(340))?;
    let b = train_bpe(corpus(), &config(340))?;
    let json = |t: &Tokenizer| {
        t.inner()
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    assert_eq!(json(&a)?, json(&b)?);
    Ok(())
}

#[test]
fn saved_tokenizer_reloads_with_chatml_template() -> Result<()> {
    let tokenizer = train_bpe(corpus(), &config(360))?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trained-bpe");
    tokenizer.save(&dir)?;
    let reloaded = Tokenizer::from_dir(&dir)?;
    assert_eq!(reloaded.vocab_size(), 360);
    assert_eq!((reloaded.eos_id(), reloaded.pad_id()), (Some(0), Some(1)));
    let text = "The critic ranks a short answer 🙂";
    assert_eq!(
        reloaded.encode(text, false)?,
        tokenizer.encode(text, false)?
    );
    let messages = [Message::user("Hi")];
    let prompt = reloaded.render_chat(&messages, true)?;
    assert_eq!(
        prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = reloaded.apply_chat(&messages, true)?;
    assert_eq!(ids.first(), Some(&2));
    assert_eq!(reloaded.decode(&ids, false)?, prompt);
    Ok(())
}

#[test]
fn files_train_like_texts() -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bpe-corpus");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("corpus.txt");
    std::fs::write(&file, corpus().join("\n"))?;
    let tokenizer = train_bpe_files(&[&file], &config(360))?;
    assert_eq!(tokenizer.vocab_size(), 360);
    let err = train_bpe_files(&[dir.join("absent.txt")], &config(360)).unwrap_err();
    assert!(matches!(err, TokenizerError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("absent.txt"), "{err}");
    Ok(())
}

#[test]
fn impossible_vocab_sizes_are_errors() {
    let err = train_bpe(["tiny corpus"], &config(10)).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidArgument(_)), "{err}");
    let err = train_bpe(["tiny corpus tiny corpus"], &config(5000)).unwrap_err();
    assert!(matches!(err, TokenizerError::Training(_)), "{err}");
    assert!(err.to_string().contains("lower vocab_size"), "{err}");
}

#[test]
fn minimum_vocab_is_pure_byte_level() -> Result<()> {
    // 4 special tokens + 256 bytes and no merge: every byte is its own token, so "123+456"
    // is 7 tokens whatever the corpus repeats.
    let tokenizer = train_bpe(["123+456=579 123+456=579"], &config(260))?;
    assert_eq!(tokenizer.vocab_size(), 260);
    let ids = tokenizer.encode("123+456=579", false)?;
    assert_eq!(ids.len(), 11);
    assert_eq!(tokenizer.decode(&ids, false)?, "123+456=579");
    let err = train_bpe(["x"], &config(259)).unwrap_err();
    assert!(matches!(err, TokenizerError::InvalidArgument(_)), "{err}");
    Ok(())
}
