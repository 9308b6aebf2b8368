//! How much text one token can stand for: the bound that lets a reader reject a record longer
//! than a model's context from its byte length alone, before tokenizing it.
//!
//! A token covers at most as many bytes of (normalized) input as its vocabulary string has: a
//! byte-level token's characters each stand for one byte, `▁` (3 bytes) for a space, `<0x41>` (6)
//! for one byte, an added token for exactly its text. That holds only while every input byte
//! ends up in some token, so the bound is `None` for tokenizers that can drop text: normalizers
//! that strip or replace with nothing, pre-tokenizers that remove whitespace or delimiters, a BPE
//! that skips characters it cannot encode or fuses runs of them into one unknown token, added
//! tokens that swallow neighbouring spaces. Unicode normalizers may shrink text (NFC composes up
//! to three code points into one; lowercasing the Kelvin sign turns 3 bytes into 1), which a
//! factor covers. Not here: tokenizing (`tokenizer.rs`).

use serde_json::Value as Json;
use tokenizers::ModelWrapper;

use crate::tokenizer::Tokenizer;

/// What one token of a tokenizer can stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBound {
    /// The most bytes of input text one token covers.
    pub max_bytes: usize,
    /// Input bytes that reach no token: a byte-level BPE whose alphabet lacks them (SmolLM2's
    /// has no `0x04`, for one) and that has no unknown token drops them. They count for nothing.
    pub dropped: Vec<u8>,
}

/// The bound for `tok`, or `None` when there is none because the tokenizer can drop arbitrary
/// text (see the module comment). `context × max_bytes` bytes of kept text is the longest whose
/// tokens can possibly fit a context.
pub fn token_bound(tok: &Tokenizer) -> Option<TokenBound> {
    let inner = tok.inner();
    let pre = match inner.get_pre_tokenizer() {
        None => Json::Null,
        Some(p) => serde_json::to_value(p).ok()?,
    };
    if !(pre.is_null() || pre_tokenizer_keeps(&pre)) {
        return None;
    }
    let added = inner.get_added_tokens_decoder();
    if added.values().any(|t| t.lstrip || t.rstrip) {
        return None;
    }
    let vocab = inner.get_vocab(true);
    let dropped = dropped_bytes(inner.get_model(), &vocab, has_type(&pre, "ByteLevel"))?;
    let shrink = match inner.get_normalizer() {
        None => 1,
        Some(n) => shrink_factor(&serde_json::to_value(n).ok()?)?,
    };
    // An unknown character becomes one token whatever its length (up to 4 bytes of UTF-8).
    let longest = vocab.keys().map(String::len).max().unwrap_or(0).max(4);
    Some(TokenBound {
        max_bytes: longest.checked_mul(shrink)?,
        dropped,
    })
}

/// The bytes the model drops, or `None` when it can drop any text. A BPE keeps every byte with
/// byte fallback (all 256 `<0xNN>` tokens present) or with an unknown token that is not fused
/// across characters; a byte-level BPE drops exactly the bytes its alphabet lacks. Other models
/// (WordPiece, Unigram, WordLevel) map a whole word to one unknown token.
fn dropped_bytes(
    model: &ModelWrapper,
    vocab: &std::collections::HashMap<String, u32>,
    byte_level: bool,
) -> Option<Vec<u8>> {
    let ModelWrapper::BPE(bpe) = model else {
        return None;
    };
    let fallback = (0..=255u8).all(|b| vocab.contains_key(&format!("<0x{b:02X}>")));
    if (bpe.byte_fallback && fallback) || (bpe.unk_token.is_some() && !bpe.fuse_unk) {
        return Some(Vec::new());
    }
    byte_level.then(|| {
        (0..=255u8)
            .filter(|&b| !vocab.contains_key(&byte_level_char(b).to_string()))
            .collect()
    })
}

/// GPT-2's byte-to-character map (`bytes_to_unicode`): printable Latin-1 bytes stand for
/// themselves, the rest are shifted to U+0100 onwards.
fn byte_level_char(b: u8) -> char {
    let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable {
        return char::from(b);
    }
    let rank = (0..b)
        .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
        .count() as u32;
    char::from_u32(256 + rank).unwrap_or('\u{FFFD}')
}

/// Whether a serialized component (or one of its nested `Sequence` parts) has this `type`.
fn has_type(j: &Json, ty: &str) -> bool {
    if j.get("type").and_then(Json::as_str) == Some(ty) {
        return true;
    }
    ["pretokenizers", "normalizers"]
        .iter()
        .filter_map(|k| j.get(*k).and_then(Json::as_array))
        .flatten()
        .any(|p| has_type(p, ty))
}

/// Whether a serialized pre-tokenizer keeps every character (splits, maps, never removes).
fn pre_tokenizer_keeps(j: &Json) -> bool {
    match j.get("type").and_then(Json::as_str) {
        Some("Sequence") => j
            .get("pretokenizers")
            .and_then(Json::as_array)
            .is_some_and(|ps| ps.iter().all(pre_tokenizer_keeps)),
        Some("Split" | "Punctuation") => {
            j.get("behavior").and_then(Json::as_str) != Some("Removed")
        }
        Some("ByteLevel" | "Metaspace" | "Digits" | "UnicodeScripts" | "FixedLength") => true,
        // Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit drop characters.
        _ => false,
    }
}

/// By how much a serialized normalizer can shrink text at most (bytes in / bytes out), or
/// `None` when it can delete text outright.
fn shrink_factor(j: &Json) -> Option<usize> {
    match j.get("type").and_then(Json::as_str)? {
        "Sequence" => j
            .get("normalizers")?
            .as_array()?
            .iter()
            .try_fold(1usize, |acc, n| acc.checked_mul(shrink_factor(n)?)),
        "Prepend" | "ByteLevel" => Some(1),
        // Composition joins at most 3 code points into one; compatibility mappings mostly grow.
        "NFC" | "NFD" | "NFKC" | "NFKD" => Some(4),
        // The largest case-mapping shrink is 3 bytes to 1 (KELVIN SIGN to 'k').
        "Lowercase" => Some(3),
        "Replace" => {
            let pattern = j.get("pattern")?.get("String")?.as_str()?;
            let content = j.get("content")?.as_str()?;
            match content.len() {
                0 => None,
                n => Some(pattern.len().div_ceil(n).max(1)),
            }
        }
        // Strip, StripAccents, BertNormalizer, Nmt and Precompiled can delete characters.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trained_byte_level_bpe_is_bounded_by_its_longest_token() {
        let text = "the cat sat on the mat; the cat ate the rat";
        let cfg = crate::BpeConfig {
            vocab_size: 270,
            ..Default::default()
        };
        let tok = crate::train_bpe(std::iter::repeat_n(text, 10), &cfg).unwrap();
        let longest = tok.inner().get_vocab(true).keys().map(String::len).max();
        // "<|endoftext|>" (13 bytes) is the longest string of this small vocabulary.
        let bound = token_bound(&tok).unwrap();
        assert_eq!(Some(bound.max_bytes), longest.map(|l| l.max(4)));
        assert_eq!(bound.dropped, Vec::<u8>::new());
        assert_eq!(longest, Some(13));
        // The bound holds: no token of a long text stands for more bytes than that.
        let ids = tok.encode(&text.repeat(20), false).unwrap();
        assert!(text.len() * 20 <= ids.len() * 13);
    }

    #[test]
    fn byte_level_alphabet_is_gpt2s() {
        assert_eq!(byte_level_char(b'a'), 'a');
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_char(0), 'Ā');
        assert_eq!(byte_level_char(0xAD), 'Ń');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_level_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn normalizers_that_delete_have_no_factor() {
        let replace =
            |p: &str, c: &str| json!({"type": "Replace", "pattern": {"String": p}, "content": c});
        assert_eq!(shrink_factor(&replace(" ", "▁")), Some(1));
        assert_eq!(shrink_factor(&replace("abc", "x")), Some(3));
        assert_eq!(shrink_factor(&replace(" ", "")), None);
        let regex = json!({"type": "Replace", "pattern": {"Regex": " +"}, "content": " "});
        assert_eq!(shrink_factor(&regex), None);
        let seq =
            json!({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]});
        assert_eq!(shrink_factor(&seq), Some(12));
        assert_eq!(
            shrink_factor(&json!({"type": "Strip", "strip_left": true})),
            None
        );
    }

    #[test]
    fn pre_tokenizers_that_remove_are_refused() {
        let split = |b: &str| json!({"type": "Split", "pattern": {"Regex": "x"}, "behavior": b});
        assert!(pre_tokenizer_keeps(&split("Isolated")));
        assert!(!pre_tokenizer_keeps(&split("Removed")));
        let seq = json!({"type": "Sequence", "pretokenizers": [split("Isolated"), {"type": "ByteLevel"}]});
        assert!(pre_tokenizer_keeps(&seq));
        assert!(has_type(&seq, "ByteLevel"));
        assert!(!pre_tokenizer_keeps(&json!({"type": "Whitespace"})));
    }
}
