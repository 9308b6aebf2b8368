//! Rebuilds a Hugging Face `tokenizer.json` and `tokenizer_config.json` from the tokenizer stored
//! in GGUF metadata (`tokenizer.ggml.*`), for byte-level BPE vocabularies (`model == "gpt2"`).
//!
//! llama.cpp keeps tokens, merges and token types but replaces the original pre-tokenizer by a
//! name (`tokenizer.ggml.pre`) that selects hard-coded split regexes in `llama-vocab.cpp`. We map
//! each name back to the `tokenizers` pre-tokenizer that produces the same splits. SentencePiece
//! (`llama`) vocabularies are not handled here.

use serde_json::{Map, Value, json};

use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::reader::GgufFile;

/// Llama 3's split regex as its HF tokenizer.json spells it (llama.cpp expands the `(?i:)`).
/// GPT-2's regex needs no constant: `ByteLevel { use_regex: true }` applies it by itself.
const LLAMA3_REGEX: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// Qwen2's split regex: as Llama 3's but with single digits.
const QWEN2_REGEX: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// ggml token types (`llama_token_type`): 3 = control (special), 4 = user-defined.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// How a `tokenizer.ggml.pre` name splits text before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreTokenizer {
    /// GPT-2's regex only.
    Gpt2,
    /// Every digit on its own (`\p{N}`), then GPT-2's regex: StarCoder's tokenizer, reused by
    /// SmolLM/SmolLM2 (whose HF tokenizer.json is `Sequence[Digits(individual), ByteLevel]`).
    DigitsThenGpt2,
    /// Llama 3's regex (numbers in groups of up to three), ignore_merges.
    Llama3,
    /// Qwen2's regex (single digits) with NFC normalisation.
    Qwen2,
}

/// llama.cpp pre-tokenizer names (see `llama_vocab::impl::load`) grouped by the regexes they use.
const PRE_NAMES: &[(&str, PreTokenizer)] = &[
    ("gpt-2", PreTokenizer::Gpt2),
    ("phi-2", PreTokenizer::Gpt2),
    ("mpt", PreTokenizer::Gpt2),
    ("olmo", PreTokenizer::Gpt2),
    ("jais", PreTokenizer::Gpt2),
    ("smollm", PreTokenizer::DigitsThenGpt2),
    ("starcoder", PreTokenizer::DigitsThenGpt2),
    ("refact", PreTokenizer::DigitsThenGpt2),
    ("command-r", PreTokenizer::DigitsThenGpt2),
    ("codeshell", PreTokenizer::DigitsThenGpt2),
    ("exaone", PreTokenizer::DigitsThenGpt2),
    ("minerva-7b", PreTokenizer::DigitsThenGpt2),
    ("llama3", PreTokenizer::Llama3),
    ("llama-v3", PreTokenizer::Llama3),
    ("llama-bpe", PreTokenizer::Llama3),
    ("falcon3", PreTokenizer::Llama3),
    ("dbrx", PreTokenizer::Llama3),
    ("smaug-bpe", PreTokenizer::Llama3),
    ("qwen2", PreTokenizer::Qwen2),
    ("deepseek-r1-qwen", PreTokenizer::Qwen2),
    ("stablelm2", PreTokenizer::Qwen2),
    ("megrez", PreTokenizer::Qwen2),
];

impl PreTokenizer {
    fn json(self) -> Value {
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        let split = |regex: &str| {
            json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                   "invert": false})
        };
        let seq = |items: Vec<Value>| json!({"type": "Sequence", "pretokenizers": items});
        match self {
            PreTokenizer::Gpt2 => byte_level(true),
            PreTokenizer::DigitsThenGpt2 => seq(vec![
                json!({"type": "Digits", "individual_digits": true}),
                byte_level(true),
            ]),
            PreTokenizer::Llama3 => seq(vec![split(LLAMA3_REGEX), byte_level(false)]),
            PreTokenizer::Qwen2 => seq(vec![split(QWEN2_REGEX), byte_level(false)]),
        }
    }
}

/// The two tokenizer files plus anything the user should know about the conversion.
#[derive(Clone, Debug)]
pub struct TokenizerFiles {
    pub tokenizer_json: Value,
    pub tokenizer_config_json: Value,
    pub warnings: Vec<String>,
}

/// The tokenizer metadata of a GGUF file, validated.
struct GgufVocab<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    merges: Vec<(&'a str, &'a str)>,
    pre: PreTokenizer,
    add_bos: bool,
    add_eos: bool,
    bos: Option<usize>,
    eos: Option<usize>,
    unk: Option<usize>,
    pad: Option<usize>,
}

fn unsupported(gguf: &GgufFile, what: String, reason: String) -> GgufError {
    GgufError::Unsupported {
        path: gguf.path().to_path_buf(),
        what,
        reason,
    }
}

fn bad_key(gguf: &GgufFile, key: &str, reason: String) -> GgufError {
    GgufError::BadMetadata {
        path: gguf.path().to_path_buf(),
        what: format!("key '{key}'"),
        reason,
    }
}

/// A special-token id, checked against the vocabulary size.
fn token_id(gguf: &GgufFile, md: &Metadata, key: &str, n_vocab: usize) -> Result<Option<usize>> {
    match md.opt_usize(key, "a token id")? {
        Some(id) if id >= n_vocab => Err(bad_key(
            gguf,
            key,
            format!("token id {id} is outside the vocabulary of {n_vocab} tokens"),
        )),
        other => Ok(other),
    }
}

fn pre_tokenizer(gguf: &GgufFile, warnings: &mut Vec<String>) -> Result<PreTokenizer> {
    let name = gguf
        .metadata()
        .opt_str("tokenizer.ggml.pre", "a pre-tokenizer name")?;
    let Some(name) = name else {
        warnings.push(
            "tokenizer.ggml.pre is absent (file converted before mid-2024); using GPT-2's split \
             regex, which may tokenise digits and whitespace differently from the original"
                .into(),
        );
        return Ok(PreTokenizer::Gpt2);
    };
    PRE_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, p)| p)
        .ok_or_else(|| {
            let known: Vec<&str> = PRE_NAMES.iter().map(|(n, _)| *n).collect();
            unsupported(
                gguf,
                format!("pre-tokenizer '{name}' (tokenizer.ggml.pre)"),
                format!("known names: {}", known.join(", ")),
            )
        })
}

/// Splits a GGUF merge "a b" into its two halves. The first character is never the separator,
/// mirroring llama.cpp (`word.find(' ', 1)`), so a merge whose left side is a space survives.
fn split_merge(merge: &str) -> Option<(&str, &str)> {
    let first_len = merge.chars().next()?.len_utf8();
    let at = first_len + merge[first_len..].find(' ')?;
    Some((&merge[..at], &merge[at + 1..]))
}

fn read_vocab<'a>(gguf: &'a GgufFile, warnings: &mut Vec<String>) -> Result<GgufVocab<'a>> {
    let md = gguf.metadata();
    let model = md.str(
        "tokenizer.ggml.model",
        "the tokenizer model name, e.g. \"gpt2\"",
    )?;
    if model != "gpt2" {
        return Err(unsupported(
            gguf,
            format!("tokenizer model '{model}' (tokenizer.ggml.model)"),
            "only byte-level BPE ('gpt2') vocabularies are converted".into(),
        ));
    }
    let tokens = md.str_array("tokenizer.ggml.tokens", "an array of token strings")?;
    let n = tokens.len();
    let types = md
        .opt_i64_array(
            "tokenizer.ggml.token_type",
            "an array of integer token types",
        )?
        .unwrap_or_else(|| vec![1; n]);
    if types.len() != n {
        let reason = format!("has {} entries for {n} tokens", types.len());
        return Err(bad_key(gguf, "tokenizer.ggml.token_type", reason));
    }
    let raw_merges = md.str_array("tokenizer.ggml.merges", "an array of \"left right\" merges")?;
    let mut merges = Vec::with_capacity(raw_merges.len());
    for (i, m) in raw_merges.iter().enumerate() {
        let pair = split_merge(m).ok_or_else(|| {
            let reason = format!("merge #{i} {m:?} is not two tokens separated by a space");
            bad_key(gguf, "tokenizer.ggml.merges", reason)
        })?;
        merges.push(pair);
    }
    let id = |key| token_id(gguf, md, key, n);
    Ok(GgufVocab {
        pre: pre_tokenizer(gguf, warnings)?,
        add_bos: md
            .opt_bool("tokenizer.ggml.add_bos_token", "a bool")?
            .unwrap_or(false),
        add_eos: md
            .opt_bool("tokenizer.ggml.add_eos_token", "a bool")?
            .unwrap_or(false),
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        pad: id("tokenizer.ggml.padding_token_id")?,
        tokens,
        types,
        merges,
    })
}

impl GgufVocab<'_> {
    /// Ids of tokens matched verbatim before BPE: control tokens and the named specials
    /// (special), plus user-defined tokens (not special), in id order.
    fn added_tokens(&self) -> Vec<(usize, bool)> {
        let named = [self.bos, self.eos, self.unk, self.pad];
        (0..self.tokens.len())
            .filter_map(|id| {
                let special = self.types[id] == TOKEN_TYPE_CONTROL || named.contains(&Some(id));
                let user = self.types[id] == TOKEN_TYPE_USER_DEFINED;
                (special || user).then_some((id, special))
            })
            .collect()
    }

    fn added_token_json(&self, id: usize, special: bool, with_id: bool) -> Value {
        let mut m = Map::new();
        if with_id {
            m.insert("id".into(), id.into());
        }
        m.insert("content".into(), self.tokens[id].into());
        m.insert("single_word".into(), false.into());
        m.insert("lstrip".into(), false.into());
        m.insert("rstrip".into(), false.into());
        m.insert("normalized".into(), false.into());
        m.insert("special".into(), special.into());
        Value::Object(m)
    }

    /// `post_processor`: prepend BOS / append EOS only when the GGUF asks for it, as llama.cpp
    /// does; otherwise the byte-level offset fixer the original GPT-2-style files carry.
    fn post_processor(&self) -> Value {
        let bos = self.bos.filter(|_| self.add_bos).map(|id| self.tokens[id]);
        let eos = self.eos.filter(|_| self.add_eos).map(|id| self.tokens[id]);
        if bos.is_none() && eos.is_none() {
            return json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                          "use_regex": true});
        }
        let special =
            |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
        let piece = |s: &str, type_id| {
            let mut p: Vec<Value> = bos.iter().map(|t| special(t, type_id)).collect();
            p.push(seq(s, type_id));
            p.extend(eos.iter().map(|t| special(t, type_id)));
            p
        };
        let mut pair = piece("A", 0);
        pair.extend(piece("B", 1));
        let mut specials = Map::new();
        for id in [
            self.bos.filter(|_| self.add_bos),
            self.eos.filter(|_| self.add_eos),
        ]
        .into_iter()
        .flatten()
        {
            let t = self.tokens[id];
            specials.insert(t.into(), json!({"id": t, "ids": [id], "tokens": [t]}));
        }
        json!({"type": "TemplateProcessing", "single": piece("A", 0), "pair": pair,
               "special_tokens": specials})
    }
}

/// `model` section of tokenizer.json: the BPE vocabulary in id order and the merges.
fn bpe_model(v: &GgufVocab, warnings: &mut Vec<String>) -> Value {
    let mut vocab = Map::with_capacity(v.tokens.len());
    let mut duplicates = 0usize;
    for (id, &tok) in v.tokens.iter().enumerate() {
        if vocab.contains_key(tok) {
            duplicates += 1;
        } else {
            vocab.insert(tok.to_string(), id.into());
        }
    }
    if duplicates > 0 {
        warnings.push(format!(
            "{duplicates} token strings occur more than once; tokenizer.json keeps the lowest id"
        ));
    }
    // "a b" strings are what GPT-2-style tokenizer.json files (SmolLM2's included) carry and what
    // every tokenizers version reads; the [a, b] pair form (tokenizers >= 0.20) is only needed
    // when a token itself contains a space, which byte-level vocabularies never do.
    let pairs = v
        .merges
        .iter()
        .any(|(a, b)| a.contains(' ') || b.contains(' '));
    let merges: Vec<Value> = v
        .merges
        .iter()
        .map(|(a, b)| {
            if pairs {
                json!([a, b])
            } else {
                json!(format!("{a} {b}"))
            }
        })
        .collect();
    json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
        // llama.cpp looks whole pre-tokens up in the vocabulary first for Llama 3, as HF does.
        "ignore_merges": v.pre == PreTokenizer::Llama3,
        "vocab": vocab, "merges": merges,
    })
}

fn tokenizer_json(v: &GgufVocab, warnings: &mut Vec<String>) -> Value {
    let added: Vec<Value> = v
        .added_tokens()
        .into_iter()
        .map(|(id, special)| v.added_token_json(id, special, true))
        .collect();
    let normalizer = match v.pre {
        PreTokenizer::Qwen2 => json!({"type": "NFC"}),
        _ => Value::Null,
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": v.pre.json(),
        "post_processor": v.post_processor(),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": bpe_model(v, warnings),
    })
}

/// `tokenizer_config.json` with the fields transformers' `GPT2Tokenizer` reads, keys sorted as
/// `save_pretrained` writes them.
fn tokenizer_config(gguf: &GgufFile, v: &GgufVocab, model_max_length: usize) -> Result<Value> {
    let md = gguf.metadata();
    let name = |id: Option<usize>| id.map_or(Value::Null, |id| v.tokens[id].into());
    let mut decoder = Map::new();
    for (id, special) in v.added_tokens() {
        decoder.insert(id.to_string(), v.added_token_json(id, special, false));
    }
    let mut m = Map::new();
    if v.add_bos {
        m.insert("add_bos_token".into(), true.into());
    }
    if v.add_eos {
        m.insert("add_eos_token".into(), true.into());
    }
    m.insert("add_prefix_space".into(), false.into());
    m.insert("added_tokens_decoder".into(), Value::Object(decoder));
    m.insert("bos_token".into(), name(v.bos));
    if let Some(t) = md.opt_str("tokenizer.chat_template", "a Jinja chat template")? {
        m.insert("chat_template".into(), t.into());
    }
    m.insert("clean_up_tokenization_spaces".into(), false.into());
    m.insert("eos_token".into(), name(v.eos));
    m.insert("model_max_length".into(), model_max_length.into());
    m.insert("pad_token".into(), name(v.pad));
    m.insert("tokenizer_class".into(), "GPT2Tokenizer".into());
    m.insert("unk_token".into(), name(v.unk));
    Ok(Value::Object(m))
}

/// Builds both tokenizer files from the GGUF metadata. `model_max_length` is usually the
/// training context length.
pub fn build_tokenizer(gguf: &GgufFile, model_max_length: usize) -> Result<TokenizerFiles> {
    let mut warnings = Vec::new();
    let vocab = read_vocab(gguf, &mut warnings)?;
    let tokenizer_json = tokenizer_json(&vocab, &mut warnings);
    let tokenizer_config_json = tokenizer_config(gguf, &vocab, model_max_length)?;
    Ok(TokenizerFiles {
        tokenizer_json,
        tokenizer_config_json,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_at_the_first_space_after_the_first_char() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  Ġ"), Some((" ", "Ġ")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge(""), None);
    }

    #[test]
    fn smollm_digits_are_isolated_before_byte_level() {
        let p = PRE_NAMES.iter().find(|(n, _)| *n == "smollm").unwrap().1;
        let j = p.json();
        assert_eq!(j["pretokenizers"][0]["type"], "Digits");
        assert_eq!(j["pretokenizers"][0]["individual_digits"], true);
        assert_eq!(j["pretokenizers"][1]["use_regex"], true);
    }
}
