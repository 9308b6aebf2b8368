//! Training a byte-level BPE tokenizer (GPT-2 style) on a corpus, for the embedded tiny model.
//!
//! The recipe is GPT-2's (Radford et al. 2019, §2.2): text is split with the GPT-2 regex, mapped
//! to the 256-symbol byte alphabet so that every string is encodable without an unknown token,
//! and merges are learned by the HF `tokenizers` `BpeTrainer`. Training is deterministic for a
//! given corpus and config: the trainer breaks count ties by pair id and the alphabet ids are
//! sorted. This file is not the loader (`tokenizer.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tokenizers::AddedToken;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::chat::CHATML_TEMPLATE;
use crate::config::{CONFIG_FILE, ParsedConfig, SpecialTokens};
use crate::error::{Result, TokenizerError};
use crate::tokenizer::Tokenizer;

/// Beginning and end of a document: GPT-2's single separator token, used as BOS and EOS.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Padding, distinct from EOS so that masks built from `id == pad` never hide a real EOS.
pub const PAD: &str = "<|pad|>";
/// ChatML turn start, written by the default chat template.
pub const IM_START: &str = "<|im_start|>";
/// ChatML turn end, written by the default chat template.
pub const IM_END: &str = "<|im_end|>";

/// The special tokens, in id order: they take ids 0..4, before the byte alphabet.
const SPECIAL: [&str; 4] = [ENDOFTEXT, PAD, IM_START, IM_END];

/// Number of byte-level symbols every vocabulary starts with.
const BYTE_ALPHABET: usize = 256;

/// How to train a byte-level BPE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpeConfig {
    /// Final vocabulary size, counting the 4 special tokens and the 256 byte symbols; training
    /// fails if the corpus cannot supply enough merges to reach it.
    pub vocab_size: usize,
    /// A pair is merged only if it occurs at least this often in the corpus.
    pub min_frequency: u64,
    /// Longest token, in characters of the byte alphabet; `None` for no limit.
    pub max_token_length: Option<usize>,
    /// Show the `tokenizers` progress bar on stderr.
    pub show_progress: bool,
}

impl Default for BpeConfig {
    fn default() -> Self {
        Self {
            // Small enough that a tiny model's embedding stays a minor share of its parameters
            // (4096 x 128 = 0.5M), large enough to cover common English words and code tokens.
            vocab_size: 4096,
            // A pair seen once is noise in a small corpus; merging it wastes a vocabulary slot.
            min_frequency: 2,
            // GPT-2 has no limit; neither do we by default.
            max_token_length: None,
            // Tests and CI logs stay readable; long interactive runs can turn it on.
            show_progress: false,
        }
    }
}

/// Trains on in-memory texts (one document or line per item).
pub fn train_bpe<I, S>(texts: I, config: &BpeConfig) -> Result<Tokenizer>
where
    I: IntoIterator<Item = S>,
    I::IntoIter: Send,
    S: AsRef<str> + Send,
{
    let (mut tokenizer, mut trainer) = untrained(config)?;
    (tokenizer.train(&mut trainer, texts.into_iter()))
        .map_err(|e| TokenizerError::Training(e.to_string()))?;
    finish(tokenizer, config)
}

/// Trains on text files, read line by line.
pub fn train_bpe_files<P: AsRef<Path>>(files: &[P], config: &BpeConfig) -> Result<Tokenizer> {
    let mut paths = Vec::with_capacity(files.len());
    for file in files {
        let file = file.as_ref();
        if !file.is_file() {
            return Err(TokenizerError::MissingFile {
                path: file.to_owned(),
                hint: "corpus files for BPE training must exist and be regular files".into(),
            });
        }
        paths.push(file.to_string_lossy().into_owned());
    }
    let (mut tokenizer, mut trainer) = untrained(config)?;
    (tokenizer.train_from_files(&mut trainer, paths))
        .map_err(|e| TokenizerError::Training(e.to_string()))?;
    finish(tokenizer, config)
}

/// An empty byte-level BPE pipeline and its trainer.
fn untrained(config: &BpeConfig) -> Result<(tokenizers::Tokenizer, TrainerWrapper)> {
    let minimum = SPECIAL.len() + BYTE_ALPHABET;
    // vocab_size == minimum is a pure byte-level tokenizer (no merges): one token per byte, what
    // digit-by-digit arithmetic experiments want.
    if config.vocab_size < minimum {
        return Err(TokenizerError::InvalidArgument(format!(
            "BpeConfig.vocab_size = {} is too small: the {} special tokens and {} byte symbols \
             alone take {minimum}",
            config.vocab_size,
            SPECIAL.len(),
            BYTE_ALPHABET
        )));
    }
    let trainer = BpeTrainer::builder()
        .vocab_size(config.vocab_size)
        .min_frequency(config.min_frequency)
        .max_token_length(config.max_token_length)
        .show_progress(config.show_progress)
        .special_tokens(SPECIAL.iter().map(|t| AddedToken::from(*t, true)).collect())
        // All 256 byte symbols, seen in the corpus or not, so any text stays encodable.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    // GPT-2's settings: no prefix space (a leading word is not a mid-sentence word), the GPT-2
    // split regex, offsets trimmed of the spaces merged into tokens.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(Some(byte_level))
        .with_decoder(Some(byte_level));
    Ok((tokenizer, trainer.into()))
}

/// Wraps the trained model with its config and checks the vocabulary came out at full size.
fn finish(inner: tokenizers::Tokenizer, config: &BpeConfig) -> Result<Tokenizer> {
    let tokenizer = Tokenizer::from_parts(inner, trained_config(), Path::new(CONFIG_FILE))?;
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(TokenizerError::Training(format!(
            "the corpus only supports {} tokens, not vocab_size = {} (no pair left with \
             min_frequency >= {}); lower vocab_size or min_frequency, or train on more text",
            tokenizer.vocab_size(),
            config.vocab_size,
            config.min_frequency
        )));
    }
    Ok(tokenizer)
}

/// The `tokenizer_config.json` of a trained tokenizer, readable by transformers too.
fn trained_config() -> ParsedConfig {
    let raw = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "pad_token": PAD,
        "unk_token": null,
        "additional_special_tokens": [IM_START, IM_END],
        "add_bos_token": false,
        "add_eos_token": false,
        // Byte-level BPE decodes exactly; transformers' cleanup would remove spaces before
        // punctuation and break the round trip.
        "clean_up_tokenization_spaces": false,
        "chat_template": CHATML_TEMPLATE,
    });
    let raw: Map<String, Json> = match raw {
        Json::Object(map) => map,
        _ => Map::new(),
    };
    let mut template_tokens = Map::new();
    for (key, token) in [
        ("bos_token", ENDOFTEXT),
        ("eos_token", ENDOFTEXT),
        ("pad_token", PAD),
    ] {
        template_tokens.insert(key.into(), token.into());
    }
    ParsedConfig {
        raw,
        special: SpecialTokens {
            bos: Some(ENDOFTEXT.into()),
            eos: Some(ENDOFTEXT.into()),
            pad: Some(PAD.into()),
            unk: None,
        },
        template_tokens,
        add_bos_token: Some(false),
        add_eos_token: Some(false),
        templates: vec![("default".into(), CHATML_TEMPLATE.into())],
        template_paths: vec![],
    }
}
