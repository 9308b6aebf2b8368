//! Sentence templates with named slots (`"{subj} gives {a} to {poss} {rel}."`), used both to
//! render prompts and to parse them back, so the generator and the oracle share one grammar.
//!
//! Matching is literal-anchored and non-greedy: a slot takes the text up to the next occurrence
//! of the following literal. That is unambiguous because slot values are single words or
//! numbers; callers validate the captured values. This module knows nothing about tasks.

/// Renders `template`, replacing each `{slot}` with `value(slot)`.
pub(crate) fn render(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&value(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

enum Part<'t> {
    Lit(&'t str),
    Slot(&'t str),
}

fn parts(template: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Lit(&rest[..open]));
        }
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        parts.push(Part::Slot(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest));
    }
    parts
}

/// The captured slots of `text` if it has the shape of `template`, in template order.
pub(crate) fn matches<'t, 's>(template: &'t str, text: &'s str) -> Option<Captures<'t, 's>> {
    let mut caps = Vec::new();
    let mut pos = 0;
    let mut pending: Option<&'t str> = None;
    for part in parts(template) {
        match part {
            Part::Lit(lit) => {
                let rest = &text[pos..];
                match pending.take() {
                    Some(slot) => {
                        let at = rest.find(lit)?;
                        if at == 0 {
                            return None;
                        }
                        caps.push((slot, &rest[..at]));
                        pos += at + lit.len();
                    }
                    None => {
                        if !rest.starts_with(lit) {
                            return None;
                        }
                        pos += lit.len();
                    }
                }
            }
            // Two adjacent slots would be ambiguous; templates never have them.
            Part::Slot(slot) => pending = Some(slot),
        }
    }
    if let Some(slot) = pending {
        if pos == text.len() {
            return None;
        }
        caps.push((slot, &text[pos..]));
        pos = text.len();
    }
    (pos == text.len()).then_some(Captures(caps))
}

/// Slot values captured by [`matches`].
pub(crate) struct Captures<'t, 's>(Vec<(&'t str, &'s str)>);

impl<'s> Captures<'_, 's> {
    /// The value of `slot` (the first, if it occurs twice).
    pub(crate) fn get(&self, slot: &str) -> Option<&'s str> {
        self.0.iter().find(|(s, _)| *s == slot).map(|(_, v)| *v)
    }

    /// Every captured (slot, value) pair.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &'s str)> {
        self.0.iter().map(|(s, v)| (*s, *v))
    }

    /// `slot` as a non-negative integer written with digits only.
    pub(crate) fn number(&self, slot: &str) -> Option<i64> {
        let v = self.get(slot)?;
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
}

/// Splits a prompt into sentences ending in '.', '?' or '!', each keeping its punctuation.
pub(crate) fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end = matches!(b, b'.' | b'?' | b'!');
        let boundary = i + 1 == bytes.len() || bytes[i + 1] == b' ';
        if end && boundary {
            out.push(text[start..=i].trim());
            start = i + 1;
        }
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

/// Trims and collapses runs of whitespace to one space, so prompts that were re-wrapped still
/// parse.
pub(crate) fn normalize_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_match_round_trips() {
        let t = "{subj} gives {a} to {poss} {rel} and {b} to {poss} {rel2}.";
        let s = render(t, |slot| match slot {
            "subj" => "She".into(),
            "a" => "2".into(),
            "b" => "3".into(),
            "poss" => "her".into(),
            "rel" => "mom".into(),
            _ => "dad".into(),
        });
        assert_eq!(s, "She gives 2 to her mom and 3 to her dad.");
        let caps = matches(t, &s).expect("matches");
        assert_eq!(caps.number("a"), Some(2));
        assert_eq!(caps.number("b"), Some(3));
        assert_eq!(caps.get("rel2"), Some("dad"));
    }

    #[test]
    fn non_greedy_capture_is_validated_by_callers() {
        let caps = matches(
            "{subj} gives {a} to {poss} {rel}.",
            "She gives 2 to her mom and 3.",
        )
        .expect("shape matches");
        assert_eq!(caps.get("rel"), Some("mom and 3"));
        assert!(matches("{subj} loses {a}.", "She gives 2.").is_none());
        assert!(matches("Say {w} {n} times.", "Say red 3 times. Now").is_none());
    }

    #[test]
    fn splits_sentences() {
        assert_eq!(
            sentences("Jane has 12 flowers. She gives 2. How many?"),
            vec!["Jane has 12 flowers.", "She gives 2.", "How many?"]
        );
        assert_eq!(sentences("Sort: 1, 2, 3."), vec!["Sort: 1, 2, 3."]);
    }
}
