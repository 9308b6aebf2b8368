//! FLAN-style instruction-tuning data (Wei et al. 2021) over a small synthetic world: ten task
//! clusters, ten natural-language templates per cluster (up to three of them turn the task
//! around), an OPTIONS suffix on classification prompts, a plain-text corpus that holds the
//! world's knowledge for pretraining a base model, and the held-out-cluster protocol.
//!
//! The protocol: the clusters in [`FlanConfig::held_out`] never appear in the training records;
//! they are evaluated zero-shot with every forward template. The other clusters are trained on
//! with all but their last [`EVAL_TEMPLATES`] forward templates, which are kept for evaluating
//! seen tasks under unseen instructions. Eval instances are disjoint from training instances by
//! a stable hash of each instance's key (a fact's country, an antonym pair, a sum's operands).
//!
//! Each eval item carries its candidate answers, so it can be scored by rank classification (the
//! candidate with the highest log-likelihood) as well as by generation (exact match).

use std::collections::HashSet;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{below, chance, hash_unit, pick, range, shuffle, world_rng};

/// Forward templates per cluster that are used only for evaluation (the last ones of the list).
pub const EVAL_TEMPLATES: usize = 2;

/// Share of instance keys reserved for evaluation.
const EVAL_SHARE: f64 = 0.2;

/// A task cluster: in FLAN, a group of datasets sharing a task type; here one synthetic task each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cluster {
    /// Does a hypothesis follow from a premise about who has how many of what? (3 options)
    Nli,
    /// Is a short review positive or negative?
    Sentiment,
    /// Do two sentences about a gift say the same thing?
    Paraphrase,
    /// Which of two numbers is larger (or smaller)?
    Comparison,
    /// Which of four topics is a sentence about?
    Topic,
    /// The sum of two numbers (generative).
    Arithmetic,
    /// The largest number of a list (generative).
    Lists,
    /// Closed-book: the capital of an invented country, known only from the corpus (generative).
    Facts,
    /// The number of words in a sentence (generative).
    Counting,
    /// The opposite of a word (generative).
    Antonyms,
}

impl Cluster {
    pub const ALL: [Cluster; 10] = [
        Cluster::Nli,
        Cluster::Sentiment,
        Cluster::Paraphrase,
        Cluster::Comparison,
        Cluster::Topic,
        Cluster::Arithmetic,
        Cluster::Lists,
        Cluster::Facts,
        Cluster::Counting,
        Cluster::Antonyms,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cluster::Nli => "nli",
            Cluster::Sentiment => "sentiment",
            Cluster::Paraphrase => "paraphrase",
            Cluster::Comparison => "comparison",
            Cluster::Topic => "topic",
            Cluster::Arithmetic => "arithmetic",
            Cluster::Lists => "lists",
            Cluster::Facts => "facts",
            Cluster::Counting => "counting",
            Cluster::Antonyms => "antonyms",
        }
    }

    /// Parses a cluster name (as written by [`Cluster::name`]).
    pub fn parse(s: &str) -> Result<Self> {
        Self::from_name(s).ok_or_else(|| DataError::Config {
            field: "held_out",
            problem: Self::unknown(s),
        })
    }

    fn from_name(s: &str) -> Option<Self> {
        Cluster::ALL.into_iter().find(|c| c.name() == s.trim())
    }

    fn unknown(s: &str) -> String {
        format!(
            "unknown cluster {s:?}; expected one of {}",
            Cluster::ALL.map(Cluster::name).join(", ")
        )
    }

    /// Classification clusters show their label set as an OPTIONS suffix.
    pub fn is_classification(self) -> bool {
        matches!(
            self,
            Cluster::Nli
                | Cluster::Sentiment
                | Cluster::Paraphrase
                | Cluster::Comparison
                | Cluster::Topic
        )
    }

    /// The cluster's templates: forward ones first (the last [`EVAL_TEMPLATES`] of those are
    /// eval-only), then the inverted ones.
    pub fn templates(self) -> &'static [Template] {
        templates(self)
    }
}

/// What a template asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The instance's answer (the task itself).
    Answer,
    /// One of the instance's fields, given the answer: the task turned around.
    Field(&'static str),
}

/// One natural-language instruction: `{name}` is replaced by the instance's field `name` (and
/// `{answer}` by its answer, in inverted templates).
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub text: &'static str,
    pub target: Target,
    /// An inverted template may only make sense for one answer (e.g. a paraphrase to write).
    pub only_if: Option<&'static str>,
}

impl Template {
    const fn fwd(text: &'static str) -> Self {
        Self {
            text,
            target: Target::Answer,
            only_if: None,
        }
    }

    const fn inv(text: &'static str, field: &'static str) -> Self {
        Self {
            text,
            target: Target::Field(field),
            only_if: None,
        }
    }

    const fn inv_if(text: &'static str, field: &'static str, answer: &'static str) -> Self {
        Self {
            text,
            target: Target::Field(field),
            only_if: Some(answer),
        }
    }

    pub fn is_inverted(&self) -> bool {
        matches!(self.target, Target::Field(_))
    }
}

fn templates(c: Cluster) -> &'static [Template] {
    use Template as T;
    match c {
        Cluster::Nli => {
            const L: &[Template] = &[
                T::fwd(
                    "{premise}\nBased on the text above, can we conclude that \"{hypothesis}\"?",
                ),
                T::fwd(
                    "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
                ),
                T::fwd(
                    "Read the text and decide whether the claim follows.\nText: {premise}\nClaim: {hypothesis}",
                ),
                T::fwd("{premise}\nQuestion: is it true that {hypothesis}"),
                T::fwd("Given that {premise} Does it follow that {hypothesis}"),
                T::fwd(
                    "{premise}\nIs the sentence \"{hypothesis}\" true, false, or unknown from this?",
                ),
                T::fwd("Suppose {premise} Can we infer that \"{hypothesis}\"?"),
                T::fwd(
                    "Here is a premise: {premise}\nHere is a hypothesis: {hypothesis}\nIs the hypothesis entailed?",
                ),
                T::inv(
                    "Premise: {premise}\nWrite a hypothesis whose answer is \"{answer}\".",
                    "hypothesis",
                ),
                T::inv_if(
                    "{premise}\nWrite a sentence that must be true given the text above.",
                    "hypothesis",
                    "yes",
                ),
            ];
            L
        }
        Cluster::Sentiment => {
            const L: &[Template] = &[
                T::fwd("Review: {review}\nIs this review positive or negative?"),
                T::fwd("{review}\nWhat is the sentiment of this review?"),
                T::fwd("How does the writer feel?\n{review}"),
                T::fwd("Decide if the following review is positive or negative: {review}"),
                T::fwd("\"{review}\" Did the reviewer like it?"),
                T::fwd("Classify the sentiment of the text.\nText: {review}"),
                T::fwd("{review}\nIs the tone of this review good or bad?"),
                T::fwd("Someone wrote: {review}\nWas the experience positive or negative?"),
                T::inv("Write a {answer} review of a {noun}.", "review"),
                T::inv("Give a short {answer} opinion about a {noun}.", "review"),
            ];
            L
        }
        Cluster::Paraphrase => {
            const L: &[Template] = &[
                T::fwd(
                    "Sentence 1: {first}\nSentence 2: {second}\nDo these sentences mean the same thing?",
                ),
                T::fwd("Are the following two sentences paraphrases?\n{first}\n{second}"),
                T::fwd("\"{first}\" and \"{second}\": do they say the same?"),
                T::fwd("Does \"{second}\" have the same meaning as \"{first}\"?"),
                T::fwd("{first}\n{second}\nIs the second sentence a paraphrase of the first?"),
                T::fwd("Check whether two sentences are equivalent.\nA: {first}\nB: {second}"),
                T::fwd("Is \"{first}\" a rewording of \"{second}\"?"),
                T::fwd("First: {first} Second: {second} Same meaning?"),
                T::inv_if(
                    "Rewrite this sentence so that it keeps its meaning: {first}",
                    "second",
                    "yes",
                ),
                T::inv_if("Paraphrase: {first}", "second", "yes"),
            ];
            L
        }
        Cluster::Comparison => {
            const L: &[Template] = &[
                T::fwd("Which is {rel}, {a} or {b}?"),
                T::fwd("Of the numbers {a} and {b}, which one is {rel}?"),
                T::fwd("Pick the {rel} number: {a}, {b}."),
                T::fwd("{a} or {b}: which is {rel}?"),
                T::fwd("Compare {a} and {b}. Which is {rel}?"),
                T::fwd("Tell me the {rel} of {a} and {b}."),
                T::fwd("I have {a} and {b}. Which is the {rel} one?"),
                T::fwd("Between {a} and {b}, name the {rel}."),
                T::fwd("Numbers: {a}, {b}. The {rel} is which?"),
                T::fwd("Choose the {rel} value among {a} and {b}."),
            ];
            L
        }
        Cluster::Topic => {
            const L: &[Template] = &[
                T::fwd("{sentence}\nWhat is this sentence about?"),
                T::fwd("What topic does the following sentence talk about? {sentence}"),
                T::fwd("Sentence: {sentence}\nTopic:"),
                T::fwd("Classify the topic of: {sentence}"),
                T::fwd("\"{sentence}\" Which subject is this?"),
                T::fwd("Read: {sentence}\nWhat is the subject?"),
                T::fwd("{sentence}\nThis text is about which topic?"),
                T::fwd("Name the theme of this sentence: {sentence}"),
                T::inv("Write a sentence about {answer}.", "sentence"),
                T::inv("Say something on the topic of {answer}.", "sentence"),
            ];
            L
        }
        Cluster::Arithmetic => {
            const L: &[Template] = &[
                T::fwd("What is {a} plus {b}?"),
                T::fwd("Add {a} and {b}."),
                T::fwd("Compute {a} + {b}."),
                T::fwd("What do you get when you add {b} to {a}?"),
                T::fwd("Find the sum of {a} and {b}."),
                T::fwd("{a} plus {b} equals what?"),
                T::fwd("Work out {a} + {b}."),
                T::fwd("How much is {a} and {b} together?"),
                T::inv("{answer} is {a} plus what number?", "b"),
                T::inv("Which number added to {b} gives {answer}?", "a"),
            ];
            L
        }
        Cluster::Lists => {
            const L: &[Template] = &[
                T::fwd("What is the largest number in the list {list}?"),
                T::fwd("Find the maximum of {list}."),
                T::fwd("List: {list}\nLargest:"),
                T::fwd("Which number is the biggest among {list}?"),
                T::fwd("Give the highest value in {list}."),
                T::fwd("Here are some numbers: {list}. Which is the greatest?"),
                T::fwd("Return the max of the list {list}."),
                T::fwd("Numbers {list}. Name the largest one."),
                T::fwd("From {list}, pick the largest."),
                T::inv(
                    "Write a list of {n} numbers whose largest is {answer}.",
                    "list",
                ),
            ];
            L
        }
        Cluster::Facts => {
            const L: &[Template] = &[
                T::fwd("What is the capital of {country}?"),
                T::fwd("Name the capital city of {country}."),
                T::fwd("{country} has which city as its capital?"),
                T::fwd("Question: capital of {country}?"),
                T::fwd("Which city is the capital of {country}?"),
                T::fwd("Tell me the capital of {country}."),
                T::fwd("The capital of {country} is called what?"),
                T::fwd("Where is the seat of government of {country}?"),
                T::inv("{answer} is the capital of which country?", "country"),
                T::inv("Name the country whose capital is {answer}.", "country"),
            ];
            L
        }
        Cluster::Counting => {
            const L: &[Template] = &[
                T::fwd("How many words are in the sentence \"{sentence}\"?"),
                T::fwd("Count the words: {sentence}"),
                T::fwd("{sentence}\nHow many words does this have?"),
                T::fwd("Give the number of words in: {sentence}"),
                T::fwd("Sentence: {sentence}\nWord count:"),
                T::fwd("What is the length in words of \"{sentence}\"?"),
                T::fwd("Tell me how many words \"{sentence}\" contains."),
                T::fwd("Number of words in the text {sentence}?"),
                T::fwd("Count how many words: {sentence}"),
                T::inv("Write a sentence with exactly {answer} words.", "sentence"),
            ];
            L
        }
        Cluster::Antonyms => {
            const L: &[Template] = &[
                T::fwd("What is the opposite of {word}?"),
                T::fwd("Give the antonym of {word}."),
                T::fwd("Opposite of {word}:"),
                T::fwd("Which word means the reverse of {word}?"),
                T::fwd("Name a word opposite in meaning to {word}."),
                T::fwd("{word} is the opposite of what?"),
                T::fwd("Tell me the antonym for {word}."),
                T::fwd("What word is the opposite of {word}?"),
                T::inv("{answer} is the opposite of which word?", "word"),
                T::inv("Give a word whose antonym is {answer}.", "word"),
            ];
            L
        }
    }
}

/// One task instance: named input fields, the answer, and the candidates rank classification
/// chooses among (the label set, or the answer and distractors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub cluster: Cluster,
    pub fields: Vec<(String, String)>,
    pub answer: String,
    pub candidates: Vec<String>,
    /// What decides the split (a fact's country, a sum's operands, ...).
    pub key: String,
}

impl Instance {
    pub fn field(&self, name: &str) -> Option<&str> {
        if name == "answer" {
            return Some(&self.answer);
        }
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The labels of a classification cluster, in OPTIONS order.
fn labels(c: Cluster) -> &'static [&'static str] {
    match c {
        Cluster::Nli => &["yes", "it is not possible to tell", "no"],
        Cluster::Sentiment => &["positive", "negative"],
        Cluster::Paraphrase => &["yes", "no"],
        Cluster::Topic => &TOPICS,
        _ => &[],
    }
}

/// Renders `template` for `inst`: the prompt (with the OPTIONS suffix for a forward template of a
/// classification cluster) and the target. `None` when the template does not apply (an inverted
/// template restricted to another answer).
pub fn render(inst: &Instance, template: &Template) -> Result<Option<(String, String)>> {
    if template.only_if.is_some_and(|a| a != inst.answer) {
        return Ok(None);
    }
    let mut out = String::with_capacity(template.text.len() + 64);
    let mut rest = template.text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| DataError::Config {
            field: "template",
            problem: format!("unclosed '{{' in {:?}", template.text),
        })? + open;
        let name = &rest[open + 1..close];
        let value = inst.field(name).ok_or_else(|| DataError::Config {
            field: "template",
            problem: format!(
                "{:?} has no field {name:?} in template {:?}",
                inst.cluster.name(),
                template.text
            ),
        })?;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    let target = match template.target {
        Target::Answer => {
            if inst.cluster.is_classification() {
                out.push_str(&options_suffix(&inst.candidates));
            }
            inst.answer.clone()
        }
        Target::Field(f) => inst
            .field(f)
            .ok_or_else(|| DataError::Config {
                field: "template",
                problem: format!("{:?} has no field {f:?}", inst.cluster.name()),
            })?
            .to_string(),
    };
    Ok(Some((out, target)))
}

/// FLAN's OPTIONS suffix: the label set, one per line.
pub fn options_suffix(options: &[String]) -> String {
    let mut s = String::from("\nOPTIONS:");
    for o in options {
        s.push_str("\n- ");
        s.push_str(o);
    }
    s
}

/// The "no template" ablation: the input fields alone, one per line, then the answer.
pub fn render_no_template(inst: &Instance) -> (String, String) {
    let prompt = inst
        .fields
        .iter()
        .filter(|(k, _)| !NO_TEMPLATE_SKIP.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (prompt, inst.answer.clone())
}

/// Auxiliary fields that only inverted templates use.
const NO_TEMPLATE_SKIP: [&str; 2] = ["noun", "n"];

const NAMES: [&str; 24] = [
    "Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jon", "Kim", "Lea", "Max",
    "Nia", "Otto", "Pia", "Raj", "Sam", "Tia", "Uma", "Vic", "Wes", "Yan", "Zoe",
];
const OBJECTS: [(&str, &str); 8] = [
    ("apple", "apples"),
    ("book", "books"),
    ("coin", "coins"),
    ("pen", "pens"),
    ("cup", "cups"),
    ("shell", "shells"),
    ("stamp", "stamps"),
    ("card", "cards"),
];
const NOUNS: [&str; 8] = [
    "film", "meal", "book", "hotel", "song", "game", "trip", "show",
];
const POSITIVE: [&str; 8] = [
    "wonderful",
    "great",
    "lovely",
    "delightful",
    "superb",
    "charming",
    "excellent",
    "pleasant",
];
const NEGATIVE: [&str; 8] = [
    "awful", "boring", "terrible", "dull", "poor", "dreadful", "bland", "tiresome",
];
const TOPICS: [&str; 4] = ["sports", "food", "weather", "music"];
const TOPIC_WORDS: [[&str; 8]; 4] = [
    [
        "goal", "team", "match", "coach", "ball", "score", "league", "referee",
    ],
    [
        "bread", "soup", "cheese", "rice", "salad", "pepper", "butter", "noodles",
    ],
    [
        "rain", "wind", "cloud", "storm", "snow", "sunshine", "fog", "thunder",
    ],
    [
        "guitar", "melody", "drum", "piano", "chorus", "rhythm", "violin", "singer",
    ],
];
const ANTONYMS: [(&str, &str); 20] = [
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("old", "new"),
    ("wet", "dry"),
    ("early", "late"),
    ("high", "low"),
    ("loud", "quiet"),
    ("hard", "soft"),
    ("full", "empty"),
    ("open", "closed"),
    ("rich", "poor"),
    ("thick", "thin"),
    ("strong", "weak"),
    ("long", "short"),
    ("clean", "dirty"),
    ("near", "far"),
    ("true", "false"),
];
const COUNT_WORDS: [&str; 16] = [
    "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "home", "we", "saw", "birds", "fly",
    "over", "green", "hills",
];
const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pa", "se", "do", "ri", "fu", "ba", "te", "gi",
];

/// The invented countries and capitals of one seed: closed-book answering is impossible without
/// the corpus, since the names are new each seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactWorld {
    pub capitals: Vec<(String, String)>,
}

impl FactWorld {
    pub fn new(seed: u64, countries: usize) -> Self {
        let mut rng = world_rng(seed, 0xF1A4);
        let mut seen = HashSet::new();
        let mut word = |rng: &mut dyn RngCore, syllables: usize| {
            crate::rng::invented_word(rng, &SYLLABLES, syllables, &mut seen)
        };
        let capitals = (0..countries)
            .map(|_| {
                let country = word(&mut rng, 3);
                let capital = word(&mut rng, 2);
                (country, capital)
            })
            .collect();
        Self { capitals }
    }
}

/// Keys of small pools ("#N": the N-th country or antonym pair) split every fifth item, so that
/// both splits are never empty; other keys split by a stable hash.
fn is_eval_key(seed: u64, key: &str) -> bool {
    match key.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => (n + seed) % 5 == 0,
        None => hash_unit(&format!("flan/{seed}/{key}")) < EVAL_SHARE,
    }
}

fn field(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// Distinct numeric distractors around `answer` (never negative).
fn number_candidates(rng: &mut dyn RngCore, answer: i64, spread: i64) -> Vec<String> {
    let mut c = vec![answer];
    while c.len() < 4 {
        let d = answer + range(rng, -spread, spread);
        if d >= 0 && !c.contains(&d) {
            c.push(d);
        }
    }
    shuffle(rng, &mut c);
    c.into_iter().map(|x| x.to_string()).collect()
}

fn list_text(xs: &[i64]) -> String {
    xs.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// One instance of `cluster`, drawn from `rng` (its split is decided by the caller).
pub fn instance(cluster: Cluster, facts: &FactWorld, rng: &mut dyn RngCore) -> Instance {
    let (fields, answer, candidates, key): (Vec<(String, String)>, String, Vec<String>, String) =
        match cluster {
            Cluster::Nli => {
                let mut names = NAMES.to_vec();
                shuffle(rng, &mut names);
                let (a, b, c) = (names[0], names[1], names[2]);
                let (_, obj) = *pick(rng, &OBJECTS);
                let x = range(rng, 1, 9);
                let mut y = range(rng, 1, 9);
                while y == x {
                    y = range(rng, 1, 9);
                }
                let premise = format!("{a} has {x} {obj}. {b} has {y} {obj}.");
                let label = below(rng, 3);
                let more = |p: &str, q: &str| format!("{p} has more {obj} than {q}.");
                let fewer = |p: &str, q: &str| format!("{p} has fewer {obj} than {q}.");
                let (hyp, ans) = match label {
                    0 => {
                        // entailed
                        if chance(rng, 0.5) {
                            if x > y {
                                (more(a, b), "yes")
                            } else {
                                (more(b, a), "yes")
                            }
                        } else if x < y {
                            (fewer(a, b), "yes")
                        } else {
                            (fewer(b, a), "yes")
                        }
                    }
                    1 => {
                        let other = if chance(rng, 0.5) { a } else { b };
                        if chance(rng, 0.5) {
                            (more(c, other), "it is not possible to tell")
                        } else {
                            (fewer(other, c), "it is not possible to tell")
                        }
                    }
                    _ => {
                        if chance(rng, 0.5) {
                            if x > y {
                                (more(b, a), "no")
                            } else {
                                (more(a, b), "no")
                            }
                        } else if x < y {
                            (fewer(b, a), "no")
                        } else {
                            (fewer(a, b), "no")
                        }
                    }
                };
                let key = format!("{premise}|{hyp}");
                (
                    vec![field("premise", premise), field("hypothesis", hyp)],
                    ans.to_string(),
                    labels(cluster).iter().map(|s| s.to_string()).collect(),
                    key,
                )
            }
            Cluster::Sentiment => {
                let noun = *pick(rng, &NOUNS);
                let positive = chance(rng, 0.5);
                let words: &[&str] = if positive { &POSITIVE } else { &NEGATIVE };
                let w1 = *pick(rng, words);
                let mut w2 = *pick(rng, words);
                while w2 == w1 {
                    w2 = *pick(rng, words);
                }
                let review = match below(rng, 3) {
                    0 => format!("The {noun} was {w1} and {w2}."),
                    1 => format!("What a {w1} {noun}, truly {w2}."),
                    _ => format!("I found the {noun} {w1}, even {w2}."),
                };
                let ans = if positive { "positive" } else { "negative" };
                (
                    vec![field("review", review.clone()), field("noun", noun)],
                    ans.into(),
                    labels(cluster).iter().map(|s| s.to_string()).collect(),
                    review,
                )
            }
            Cluster::Paraphrase => {
                let mut names = NAMES.to_vec();
                shuffle(rng, &mut names);
                let (a, b) = (names[0], names[1]);
                let (obj, _) = *pick(rng, &OBJECTS);
                let first = format!("{a} gave {b} a {obj}.");
                let (second, ans) = match below(rng, 4) {
                    0 => (format!("{b} was given a {obj} by {a}."), "yes"),
                    1 => (format!("{b} received a {obj} from {a}."), "yes"),
                    2 => (format!("{a} was given a {obj} by {b}."), "no"),
                    _ => (format!("{b} gave {a} a {obj}."), "no"),
                };
                let key = format!("{first}|{second}");
                (
                    vec![field("first", first), field("second", second)],
                    ans.into(),
                    labels(cluster).iter().map(|s| s.to_string()).collect(),
                    key,
                )
            }
            Cluster::Comparison => {
                let a = range(rng, 0, 99);
                let mut b = range(rng, 0, 99);
                while b == a {
                    b = range(rng, 0, 99);
                }
                let larger = chance(rng, 0.5);
                let ans = if larger { a.max(b) } else { a.min(b) };
                let key = format!("{}-{}", a.min(b), a.max(b));
                (
                    vec![
                        field("a", a.to_string()),
                        field("b", b.to_string()),
                        field("rel", if larger { "larger" } else { "smaller" }),
                    ],
                    ans.to_string(),
                    vec![a.to_string(), b.to_string()],
                    key,
                )
            }
            Cluster::Topic => {
                let t = below(rng, TOPICS.len());
                let w = &TOPIC_WORDS[t];
                let w1 = *pick(rng, w);
                let mut w2 = *pick(rng, w);
                while w2 == w1 {
                    w2 = *pick(rng, w);
                }
                let sentence = match below(rng, 3) {
                    0 => format!("We talked about the {w1} and the {w2}."),
                    1 => format!("Everyone noticed the {w1} before the {w2}."),
                    _ => format!("The {w1} came with the {w2} today."),
                };
                (
                    vec![field("sentence", sentence.clone())],
                    TOPICS[t].into(),
                    labels(cluster).iter().map(|s| s.to_string()).collect(),
                    sentence,
                )
            }
            Cluster::Arithmetic => {
                let a = range(rng, 0, 49);
                let b = range(rng, 0, 49);
                let key = format!("{}+{}", a.min(b), a.max(b));
                (
                    vec![field("a", a.to_string()), field("b", b.to_string())],
                    (a + b).to_string(),
                    number_candidates(rng, a + b, 10),
                    key,
                )
            }
            Cluster::Lists => {
                let n = range(rng, 3, 5) as usize;
                let mut xs: Vec<i64> = Vec::new();
                while xs.len() < n {
                    let x = range(rng, 0, 30);
                    if !xs.contains(&x) {
                        xs.push(x);
                    }
                }
                let max = *xs.iter().max().expect("non-empty");
                // Distractors: the list's other numbers (the natural mistakes).
                let mut candidates: Vec<String> = xs.iter().map(i64::to_string).collect();
                candidates.truncate(4);
                if !candidates.contains(&max.to_string()) {
                    candidates[0] = max.to_string();
                }
                let mut sorted = xs.clone();
                sorted.sort_unstable();
                (
                    vec![field("list", list_text(&xs)), field("n", n.to_string())],
                    max.to_string(),
                    candidates,
                    list_text(&sorted),
                )
            }
            Cluster::Facts => {
                let i = below(rng, facts.capitals.len());
                let (country, capital) = &facts.capitals[i];
                let mut candidates = vec![capital.clone()];
                while candidates.len() < 4.min(facts.capitals.len()) {
                    let other = &pick(rng, &facts.capitals).1;
                    if !candidates.contains(other) {
                        candidates.push(other.clone());
                    }
                }
                shuffle(rng, &mut candidates);
                (
                    vec![field("country", country.clone())],
                    capital.clone(),
                    candidates,
                    format!("#{i}"),
                )
            }
            Cluster::Counting => {
                let n = range(rng, 2, 7);
                let words: Vec<&str> = (0..n).map(|_| *pick(rng, &COUNT_WORDS)).collect();
                let mut sentence = words.join(" ");
                sentence[..1].make_ascii_uppercase();
                (
                    vec![field("sentence", sentence.clone())],
                    n.to_string(),
                    number_candidates(rng, n, 3)
                        .into_iter()
                        .filter(|c| c != "0")
                        .collect(),
                    sentence,
                )
            }
            Cluster::Antonyms => {
                let pair = below(rng, ANTONYMS.len());
                let (x, y) = ANTONYMS[pair];
                let (word, ans) = if chance(rng, 0.5) { (x, y) } else { (y, x) };
                let mut candidates = vec![ans.to_string()];
                while candidates.len() < 4 {
                    let (p, q) = *pick(rng, &ANTONYMS);
                    let d = if chance(rng, 0.5) { p } else { q };
                    if d != word && !candidates.iter().any(|c| c == d) {
                        candidates.push(d.to_string());
                    }
                }
                shuffle(rng, &mut candidates);
                (
                    vec![field("word", word)],
                    ans.into(),
                    candidates,
                    format!("#{pair}"),
                )
            }
        };
    Instance {
        cluster,
        fields,
        answer,
        candidates,
        key,
    }
}

/// Draws an instance of `cluster` from the requested split (eval or not), by rejection.
pub fn instance_in(
    cluster: Cluster,
    facts: &FactWorld,
    seed: u64,
    eval: bool,
    rng: &mut dyn RngCore,
) -> Result<Instance> {
    for _ in 0..10_000 {
        let inst = instance(cluster, facts, rng);
        if is_eval_key(seed, &inst.key) == eval {
            return Ok(inst);
        }
    }
    Err(DataError::Config {
        field: "seed",
        problem: format!(
            "cluster {} has no {} instances for this seed",
            cluster.name(),
            if eval { "eval" } else { "training" }
        ),
    })
}

/// Whether an instance key belongs to the eval split of `seed`.
pub fn is_eval_instance(seed: u64, inst: &Instance) -> bool {
    is_eval_key(seed, &inst.key)
}

/// Sizes and the held-out clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlanConfig {
    pub seed: u64,
    /// Clusters evaluated zero-shot and never trained on.
    pub held_out: Vec<Cluster>,
    /// Training records per training cluster (each with a random training template).
    pub train_per_cluster: usize,
    /// Eval items per cluster (held-out clusters: all forward templates; seen clusters: the
    /// eval-only templates).
    pub eval_per_cluster: usize,
    /// Pretraining documents (a few sentences each) holding the world's knowledge.
    pub corpus_docs: usize,
    /// Invented countries in the fact world.
    pub countries: usize,
}

impl Default for FlanConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            held_out: vec![Cluster::Antonyms, Cluster::Topic, Cluster::Counting],
            train_per_cluster: 1000,
            eval_per_cluster: 100,
            corpus_docs: 8000,
            countries: 40,
        }
    }
}

/// A training record (the `{"prompt", "completion"}` SFT shape plus where it came from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlanRecord {
    pub prompt: String,
    pub completion: String,
    pub cluster: Cluster,
    /// Index into the cluster's templates; `None` for the no-template ablation.
    pub template: Option<usize>,
    pub inverted: bool,
}

/// An eval item: a prompt, its answer and the candidates for rank classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlanEval {
    pub prompt: String,
    pub answer: String,
    pub options: Vec<String>,
    pub cluster: Cluster,
    pub template: usize,
}

impl crate::JsonlRecord for FlanEval {
    fn from_json(value: &serde_json::Value) -> std::result::Result<Self, crate::RecordError> {
        use crate::RecordError;
        let f = crate::Fields::of(value)?;
        let answer = f.nonempty_string("answer")?.to_string();
        let items = f.array("options", "strings (the candidate answers)")?;
        let mut options = Vec::with_capacity(items.len());
        for (i, o) in items.iter().enumerate() {
            let o = o.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                RecordError::field(format!("options[{i}]"), "expected a non-empty string")
            })?;
            options.push(o.to_string());
        }
        if options.len() < 2 {
            return Err(RecordError::field(
                "options",
                format!("expected at least 2 candidates, found {}", options.len()),
            ));
        }
        if !options.contains(&answer) {
            return Err(RecordError::field(
                "options",
                format!("the answer {answer:?} is not among the options {options:?}"),
            ));
        }
        let name = f.string("cluster")?;
        let cluster = Cluster::from_name(name)
            .ok_or_else(|| RecordError::field("cluster", Cluster::unknown(name)))?;
        let template = match value.get("template") {
            None => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| RecordError::field("template", "expected a non-negative integer"))?
                as usize,
        };
        Ok(Self {
            prompt: f.nonempty_string("prompt")?.to_string(),
            answer,
            options,
            cluster,
            template,
        })
    }
}

/// Everything `rlhf flan build` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlanData {
    pub config: FlanConfig,
    pub facts: FactWorld,
    /// Templated training records of the training clusters.
    pub train: Vec<FlanRecord>,
    /// The same instances without instructions (FLAN's no-template ablation; forward only).
    pub train_no_template: Vec<FlanRecord>,
    /// Held-out clusters, every forward template.
    pub eval_held_out: Vec<FlanEval>,
    /// Training clusters under their eval-only templates, on eval-split instances.
    pub eval_seen: Vec<FlanEval>,
    /// Pretraining documents.
    pub corpus: Vec<String>,
}

impl FlanData {
    /// The training clusters, in [`Cluster::ALL`] order.
    pub fn train_clusters(&self) -> Vec<Cluster> {
        Cluster::ALL
            .into_iter()
            .filter(|c| !self.config.held_out.contains(c))
            .collect()
    }
}

/// Indices of a cluster's forward templates used for training.
pub fn train_templates(c: Cluster) -> Vec<usize> {
    let t = c.templates();
    let forward = t.iter().filter(|t| !t.is_inverted()).count();
    (0..t.len())
        .filter(|&i| t[i].is_inverted() || i + EVAL_TEMPLATES < forward)
        .collect()
}

/// Indices of a cluster's eval-only forward templates.
pub fn eval_templates(c: Cluster) -> Vec<usize> {
    let t = c.templates();
    let forward = t.iter().filter(|t| !t.is_inverted()).count();
    (forward.saturating_sub(EVAL_TEMPLATES)..forward).collect()
}

fn eval_item(inst: &Instance, c: Cluster, ti: usize) -> Result<FlanEval> {
    let (prompt, answer) = render(inst, &c.templates()[ti])?.expect("forward templates apply");
    Ok(FlanEval {
        prompt,
        answer,
        options: inst.candidates.clone(),
        cluster: c,
        template: ti,
    })
}

/// Builds the data of one seed.
pub fn build(cfg: &FlanConfig) -> Result<FlanData> {
    if cfg.held_out.len() >= Cluster::ALL.len() {
        return Err(DataError::Config {
            field: "held_out",
            problem: "at least one cluster must remain for training".into(),
        });
    }
    if cfg.countries < 5 {
        return Err(DataError::Config {
            field: "countries",
            problem: format!(
                "expected at least 5 (a fifth are asked about only in eval), found {}",
                cfg.countries
            ),
        });
    }
    let facts = FactWorld::new(cfg.seed, cfg.countries);
    let mut train = Vec::new();
    let mut train_no_template = Vec::new();
    let mut eval_seen = Vec::new();
    let mut eval_held_out = Vec::new();
    for (ci, c) in Cluster::ALL.into_iter().enumerate() {
        let mut rng = world_rng(cfg.seed, 0xF1A0 + ci as u64);
        let forward: Vec<usize> = (0..c.templates().len())
            .filter(|&i| !c.templates()[i].is_inverted())
            .collect();
        if cfg.held_out.contains(&c) {
            for k in 0..cfg.eval_per_cluster {
                let inst = instance_in(c, &facts, cfg.seed, true, &mut rng)?;
                eval_held_out.push(eval_item(&inst, c, forward[k % forward.len()])?);
            }
            continue;
        }
        let templates = train_templates(c);
        let mut made = 0;
        while made < cfg.train_per_cluster {
            let inst = instance_in(c, &facts, cfg.seed, false, &mut rng)?;
            let ti = *pick(&mut rng, &templates);
            if let Some((prompt, completion)) = render(&inst, &c.templates()[ti])? {
                train.push(FlanRecord {
                    prompt,
                    completion,
                    cluster: c,
                    template: Some(ti),
                    inverted: c.templates()[ti].is_inverted(),
                });
                made += 1;
                let (prompt, completion) = render_no_template(&inst);
                train_no_template.push(FlanRecord {
                    prompt,
                    completion,
                    cluster: c,
                    template: None,
                    inverted: false,
                });
            }
        }
        let eval_t = eval_templates(c);
        for k in 0..cfg.eval_per_cluster {
            let inst = instance_in(c, &facts, cfg.seed, true, &mut rng)?;
            eval_seen.push(eval_item(&inst, c, eval_t[k % eval_t.len()])?);
        }
    }
    let corpus = corpus(cfg, &facts);
    Ok(FlanData {
        config: cfg.clone(),
        facts,
        train,
        train_no_template,
        eval_held_out,
        eval_seen,
        corpus,
    })
}

/// Declarative sentences carrying the world's knowledge (never a template's phrasing or an
/// instruction): what a base model knows before instruction tuning.
fn corpus(cfg: &FlanConfig, facts: &FactWorld) -> Vec<String> {
    let mut rng = world_rng(cfg.seed, 0xF1AC);
    let rng: &mut dyn RngCore = &mut rng;
    (0..cfg.corpus_docs)
        .map(|_| {
            let n = range(rng, 2, 4);
            (0..n)
                .map(|_| corpus_sentence(rng, facts))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn corpus_sentence(rng: &mut dyn RngCore, facts: &FactWorld) -> String {
    match below(rng, 10) {
        0 | 1 => {
            let (country, capital) = pick(rng, &facts.capitals);
            if chance(rng, 0.5) {
                format!("{capital} is the capital city of {country}.")
            } else {
                format!("The people of {country} govern from {capital}.")
            }
        }
        2 => {
            let (x, y) = *pick(rng, &ANTONYMS);
            if chance(rng, 0.5) {
                format!("The words {x} and {y} have opposite meanings.")
            } else {
                format!("Something {x} is not {y}.")
            }
        }
        3 => {
            let (a, b) = (range(rng, 0, 49), range(rng, 0, 49));
            format!("{a} and {b} make {} together.", a + b)
        }
        4 => {
            let (a, b) = (range(rng, 0, 99), range(rng, 0, 99));
            if a == b {
                format!("{a} equals {b}.")
            } else {
                format!("{} is greater than {}.", a.max(b), a.min(b))
            }
        }
        5 => {
            let inst = instance(Cluster::Sentiment, facts, rng);
            let review = inst.field("review").unwrap_or_default().to_string();
            if inst.answer == "positive" {
                format!("{review} I would happily go again.")
            } else {
                format!("{review} I would never go again.")
            }
        }
        6 => {
            let t = below(rng, TOPICS.len());
            let w = &TOPIC_WORDS[t];
            format!(
                "This is a story about {}: the {} and the {}.",
                TOPICS[t],
                pick(rng, w),
                pick(rng, w)
            )
        }
        7 => {
            let mut names = NAMES.to_vec();
            shuffle(rng, &mut names);
            let (_, obj) = *pick(rng, &OBJECTS);
            let (x, y) = (range(rng, 1, 9), range(rng, 1, 9));
            let (a, b) = (names[0], names[1]);
            if x == y {
                format!("{a} has {x} {obj}. {b} has {y} {obj}. They have the same.")
            } else {
                let (hi, lo) = if x > y { (a, b) } else { (b, a) };
                format!("{a} has {x} {obj}. {b} has {y} {obj}. So {hi} has more than {lo}.")
            }
        }
        8 => {
            let mut names = NAMES.to_vec();
            shuffle(rng, &mut names);
            let (obj, _) = *pick(rng, &OBJECTS);
            let (a, b) = (names[0], names[1]);
            format!("{a} gave {b} a {obj}, so {b} got a {obj} from {a}.")
        }
        _ => {
            let n = range(rng, 3, 5) as usize;
            let xs: Vec<i64> = (0..n).map(|_| range(rng, 0, 30)).collect();
            format!(
                "Of {}, the biggest is {}.",
                list_text(&xs),
                xs.iter().max().expect("non-empty")
            )
        }
    }
}

/// Writes `train.jsonl`, `train-no-template.jsonl`, `eval-held-out.jsonl`, `eval-seen.jsonl`,
/// `corpus.txt` and `flan.json` (the config, clusters, templates and fact world) to `dir`.
pub fn write(dir: &std::path::Path, data: &FlanData) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        op: "create directory",
        source,
    })?;
    let mut files = Vec::new();
    let mut put = |name: &str, f: &dyn Fn(&std::path::Path) -> Result<()>| -> Result<()> {
        let p = dir.join(name);
        f(&p)?;
        files.push(p);
        Ok(())
    };
    put("train.jsonl", &|p| crate::write_jsonl(p, &data.train))?;
    put("train-no-template.jsonl", &|p| {
        crate::write_jsonl(p, &data.train_no_template)
    })?;
    put("eval-held-out.jsonl", &|p| {
        crate::write_jsonl(p, &data.eval_held_out)
    })?;
    put("eval-seen.jsonl", &|p| {
        crate::write_jsonl(p, &data.eval_seen)
    })?;
    put("corpus.txt", &|p| {
        crate::write_text(p, &(data.corpus.join("\n") + "\n"))
    })?;
    let manifest = serde_json::json!({
        "config": data.config,
        "train_clusters": data.train_clusters(),
        "clusters": Cluster::ALL.iter().map(|c| serde_json::json!({
            "name": c.name(),
            "classification": c.is_classification(),
            "templates": c.templates().iter().enumerate().map(|(i, t)| serde_json::json!({
                "index": i,
                "text": t.text,
                "inverted": t.is_inverted(),
                "eval_only": eval_templates(*c).contains(&i),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "facts": data.facts,
    });
    put("flan.json", &|p| {
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|source| DataError::Serialize {
                path: p.to_path_buf(),
                source,
            })?;
        crate::write_text(p, &(text + "\n"))
    })?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(held_out: Vec<Cluster>) -> FlanData {
        build(&FlanConfig {
            seed: 3,
            held_out,
            train_per_cluster: 60,
            eval_per_cluster: 20,
            corpus_docs: 50,
            countries: 12,
        })
        .unwrap()
    }

    #[test]
    fn every_template_renders_for_every_cluster() {
        let facts = FactWorld::new(1, 8);
        let mut rng = world_rng(1, 1);
        for c in Cluster::ALL {
            assert!((8..=10).contains(&c.templates().len()), "{}", c.name());
            let inverted = c.templates().iter().filter(|t| t.is_inverted()).count();
            assert!(inverted <= 3, "{}: {inverted} inverted", c.name());
            for _ in 0..30 {
                let inst = instance(c, &facts, &mut rng);
                assert!(inst.candidates.contains(&inst.answer), "{inst:?}");
                for t in c.templates() {
                    if let Some((p, target)) = render(&inst, t).unwrap() {
                        assert!(!p.contains('{') && !p.contains('}'), "{p}");
                        assert!(!target.is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn options_suffix_lists_the_labels_on_classification_prompts_only() {
        let facts = FactWorld::new(1, 8);
        let mut rng = world_rng(2, 1);
        let inst = instance(Cluster::Nli, &facts, &mut rng);
        let (p, a) = render(&inst, &Cluster::Nli.templates()[0])
            .unwrap()
            .unwrap();
        assert!(
            p.ends_with("\nOPTIONS:\n- yes\n- it is not possible to tell\n- no"),
            "{p}"
        );
        assert_eq!(a, inst.answer);
        // An inverted template asks for a field, without options.
        let (p, target) = render(&inst, &Cluster::Nli.templates()[8])
            .unwrap()
            .unwrap();
        assert!(!p.contains("OPTIONS"));
        assert_eq!(Some(target.as_str()), inst.field("hypothesis"));
        assert!(p.contains(&format!("\"{}\"", inst.answer)));
        // Generative clusters never get options.
        let inst = instance(Cluster::Arithmetic, &facts, &mut rng);
        let (p, a) = render(&inst, &Cluster::Arithmetic.templates()[0])
            .unwrap()
            .unwrap();
        assert!(!p.contains("OPTIONS"));
        let (x, y): (i64, i64) = (
            inst.field("a").unwrap().parse().unwrap(),
            inst.field("b").unwrap().parse().unwrap(),
        );
        assert_eq!(p, format!("What is {x} plus {y}?"));
        assert_eq!(a, (x + y).to_string());
    }

    #[test]
    fn labels_follow_from_the_instance() {
        let facts = FactWorld::new(4, 8);
        let mut rng = world_rng(4, 2);
        for _ in 0..200 {
            let i = instance(Cluster::Nli, &facts, &mut rng);
            let premise = i.field("premise").unwrap();
            let hyp = i.field("hypothesis").unwrap();
            let who = hyp.split_whitespace().next().unwrap();
            let mentioned = premise.contains(&format!("{who} has"));
            let other_mentioned = NAMES
                .iter()
                .filter(|n| hyp.contains(&format!(" than {n}.")))
                .all(|n| premise.contains(&format!("{n} has")));
            let unknown = !mentioned || !other_mentioned;
            assert_eq!(unknown, i.answer == "it is not possible to tell", "{i:?}");
            let c = instance(Cluster::Comparison, &facts, &mut rng);
            let (a, b): (i64, i64) = (
                c.field("a").unwrap().parse().unwrap(),
                c.field("b").unwrap().parse().unwrap(),
            );
            let want = if c.field("rel") == Some("larger") {
                a.max(b)
            } else {
                a.min(b)
            };
            assert_eq!(c.answer, want.to_string());
        }
    }

    #[test]
    fn held_out_clusters_never_appear_in_training_data() {
        let held = vec![Cluster::Facts, Cluster::Sentiment];
        let d = small(held.clone());
        assert!(d.train.iter().all(|r| !held.contains(&r.cluster)));
        assert!(
            d.train_no_template
                .iter()
                .all(|r| !held.contains(&r.cluster))
        );
        assert!(d.eval_seen.iter().all(|r| !held.contains(&r.cluster)));
        assert!(d.eval_held_out.iter().all(|r| held.contains(&r.cluster)));
        assert_eq!(d.eval_held_out.len(), 40);
        assert_eq!(d.train.len(), 60 * 8);
        // No held-out prompt's text occurs in training, and held-out instructions never do.
        let train_prompts: HashSet<&str> = d.train.iter().map(|r| r.prompt.as_str()).collect();
        for e in &d.eval_held_out {
            assert!(!train_prompts.contains(e.prompt.as_str()));
        }
        assert!(
            !d.train
                .iter()
                .any(|r| r.prompt.contains("capital") || r.prompt.contains("review"))
        );
    }

    #[test]
    fn seen_cluster_eval_uses_unseen_templates_and_instances() {
        let d = small(vec![Cluster::Topic]);
        for e in &d.eval_seen {
            assert!(eval_templates(e.cluster).contains(&e.template));
            assert!(!train_templates(e.cluster).contains(&e.template));
        }
        assert!(
            d.train
                .iter()
                .all(|r| train_templates(r.cluster).contains(&r.template.unwrap()))
        );
        // Eval instances come from the eval split; training ones never do.
        let facts = FactWorld::new(3, 12);
        let mut rng = world_rng(9, 9);
        for c in Cluster::ALL {
            for _ in 0..20 {
                let e = instance_in(c, &facts, 3, true, &mut rng).unwrap();
                assert!(is_eval_instance(3, &e));
                let t = instance_in(c, &facts, 3, false, &mut rng).unwrap();
                assert!(!is_eval_instance(3, &t));
            }
        }
    }

    #[test]
    fn the_fact_world_changes_with_the_seed_and_lives_in_the_corpus() {
        let a = FactWorld::new(1, 10);
        let b = FactWorld::new(2, 10);
        assert_ne!(a, b);
        let d = small(vec![Cluster::Facts]);
        let text = d.corpus.join(" ");
        let known = d
            .facts
            .capitals
            .iter()
            .filter(|(country, capital)| {
                text.contains(country.as_str()) && text.contains(capital.as_str())
            })
            .count();
        assert!(known >= 8, "{known} of 12 facts in a 50-document corpus");
        // The corpus never uses an instruction's wording.
        assert!(!text.contains('?') && !text.contains("OPTIONS"));
    }

    #[test]
    fn no_template_records_hold_only_the_inputs() {
        let d = small(vec![]);
        let r = d
            .train_no_template
            .iter()
            .find(|r| r.cluster == Cluster::Arithmetic)
            .unwrap();
        let lines: Vec<&str> = r.prompt.lines().collect();
        assert_eq!(lines.len(), 2);
        let sum: i64 = lines.iter().map(|l| l.parse::<i64>().unwrap()).sum();
        assert_eq!(r.completion, sum.to_string());
        assert_eq!(d.train_no_template.len(), d.train.len());
    }

    #[test]
    fn unknown_cluster_names_are_rejected_with_the_list() {
        let e = Cluster::parse("nope").unwrap_err().to_string();
        assert!(e.contains("nli") && e.contains("antonyms"), "{e}");
        assert_eq!(Cluster::parse("facts").unwrap(), Cluster::Facts);
    }
}
