//! Word-constraint instructions: "Describe a cat in exactly 5 words." and "Repeat the word red 4
//! times.", with generators, parsers, and sentences of a known word count built from the
//! entities' facts.
//!
//! A word is a whitespace-separated token containing a letter or digit ("soft," counts, "-" does
//! not). Scoring is `oracle.rs`; flawed answers are `flaws.rs`.

use rand::RngCore;

use super::config::Split;
use super::template::{matches, render};
use super::vocab::{ENTITIES, Entity, REPEAT_WORDS, article, entities_in, words_in};
use crate::rng::{below, pick, range};

const WORD_COUNT_TEMPLATES: &[&str] = &[
    "Describe {art} {entity} in exactly {n} words.",
    "Write exactly {n} words about {art} {entity}.",
    "Use exactly {n} words to describe {art} {entity}.",
    "Tell me about {art} {entity} in exactly {n} words.",
];

const REPEAT_TEMPLATES: &[&str] = &[
    "Repeat the word {word} {n} times.",
    "Say {word} {n} times.",
    "Write the word {word} {n} times.",
    "Write {word} {n} times.",
];

/// Fewest and most words asked for: 3 is the shortest sentence with a subject and a verb ("The
/// cat purrs."), 8 the longest the fact patterns below can fill.
pub const MIN_WORDS: usize = 3;
pub const MAX_WORDS: usize = 8;

/// Subjects (two words each) for describing sentences.
const SUBJECTS: &[&str] = &["The", "A", "This", "My"];

/// Predicates by their word count; `{v}` is the verb, `{a0}`..`{a2}` the adjectives.
const PREDICATES: &[&[&str]] = &[
    &["{v}"],
    &["is {a0}", "is {a2}"],
    &["is very {a0}", "{v} every day", "is so {a1}"],
    &["is {a0} and {a1}", "is {a1} and {a2}"],
    &["is {a0} and it {v}", "is {a0}, {a1} and {a2}"],
    &["is very {a0} and it {v}", "is very {a0} and very {a1}"],
];

/// "Describe a cat in exactly 5 words."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordCountTask {
    template: usize,
    entity: &'static Entity,
    words: usize,
}

impl WordCountTask {
    pub fn entity(&self) -> &'static Entity {
        self.entity
    }

    /// The exact number of words asked for.
    pub fn words(&self) -> usize {
        self.words
    }

    pub fn prompt(&self) -> String {
        render(WORD_COUNT_TEMPLATES[self.template], |s| match s {
            "art" => article(self.entity.noun).to_string(),
            "entity" => self.entity.noun.to_string(),
            _ => self.words.to_string(),
        })
    }

    /// The clean demonstration: a sentence of exactly the asked length about the entity.
    pub fn solution(&self) -> String {
        describe(self.entity, self.words, 0, 0).unwrap_or_default()
    }
}

/// A sentence about `entity` of exactly `words` words, if the patterns can make one; `subject`
/// and `variant` pick among the phrasings.
pub(crate) fn describe(
    entity: &Entity,
    words: usize,
    subject: usize,
    variant: usize,
) -> Option<String> {
    let options = PREDICATES.get(words.checked_sub(3)?)?;
    let predicate = render(options[variant % options.len()], |s| match s {
        "v" => entity.verb.to_string(),
        "a0" => entity.adjectives[0].to_string(),
        "a1" => entity.adjectives[1].to_string(),
        _ => entity.adjectives[2].to_string(),
    });
    let subject = SUBJECTS[subject % SUBJECTS.len()];
    Some(format!("{subject} {} {predicate}.", entity.noun))
}

/// How many phrasings `describe` has for a length.
pub(crate) fn variants(words: usize) -> usize {
    words
        .checked_sub(3)
        .and_then(|i| PREDICATES.get(i))
        .map_or(0, |p| p.len())
}

/// "Repeat the word red 4 times."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatTask {
    template: usize,
    word: &'static str,
    times: usize,
}

impl RepeatTask {
    pub fn word(&self) -> &'static str {
        self.word
    }

    pub fn times(&self) -> usize {
        self.times
    }

    pub fn prompt(&self) -> String {
        render(REPEAT_TEMPLATES[self.template], |s| match s {
            "word" => self.word.to_string(),
            _ => self.times.to_string(),
        })
    }

    /// The clean demonstration: the word `times` times, separated by single spaces.
    pub fn solution(&self) -> String {
        repeat(self.word, self.times)
    }
}

pub(crate) fn repeat(word: &str, times: usize) -> String {
    vec![word; times].join(" ")
}

/// The words of a response as the checkers count them.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

pub(crate) fn generate_word_count<R: RngCore + ?Sized>(rng: &mut R, split: Split) -> WordCountTask {
    let template = below(rng, WORD_COUNT_TEMPLATES.len());
    let entity = *pick(rng, &entities_in(split));
    WordCountTask {
        template,
        entity,
        words: range(rng, MIN_WORDS as i64, MAX_WORDS as i64) as usize,
    }
}

/// 2–8 repetitions: one is not a repetition, and more than 8 makes the answer long without
/// testing anything new.
pub(crate) fn generate_repeat<R: RngCore + ?Sized>(rng: &mut R, split: Split) -> RepeatTask {
    let template = below(rng, REPEAT_TEMPLATES.len());
    let word = *pick(rng, &words_in(split));
    RepeatTask {
        template,
        word,
        times: range(rng, 2, 8) as usize,
    }
}

fn small_number(s: &str) -> Option<usize> {
    let ok = !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok()).flatten()
}

/// Parses "Describe a cat in exactly 5 words." and its variants.
pub(crate) fn parse_word_count(prompt: &str) -> Option<WordCountTask> {
    WORD_COUNT_TEMPLATES
        .iter()
        .enumerate()
        .find_map(|(template, t)| {
            let c = matches(t, prompt)?;
            let entity = ENTITIES.iter().find(|e| Some(e.noun) == c.get("entity"))?;
            let words = small_number(c.get("n")?)?;
            let art_ok = c.get("art") == Some(article(entity.noun));
            (art_ok && words > 0).then_some(WordCountTask {
                template,
                entity,
                words,
            })
        })
}

/// Parses "Repeat the word red 4 times." and its variants.
pub(crate) fn parse_repeat(prompt: &str) -> Option<RepeatTask> {
    REPEAT_TEMPLATES
        .iter()
        .enumerate()
        .find_map(|(template, t)| {
            let c = matches(t, prompt)?;
            let word = *REPEAT_WORDS.iter().find(|w| Some(**w) == c.get("word"))?;
            let times = small_number(c.get("n")?)?;
            (times > 0).then_some(RepeatTask {
                template,
                word,
                times,
            })
        })
}
