//! Responses of a chosen quality for any task: clean, sloppy (right answer, broken format),
//! wrong (clean format, wrong answer) or both. They make the deliberately imperfect SFT
//! demonstrations and the realistic candidates the labelers are calibrated on.
//!
//! Every flaw is one the oracle can detect (a missing or misplaced answer line, a false equation,
//! chatter around a list, a wrong word count...), and the tests check that the oracle grades each
//! quality as intended. Scoring is `oracle.rs`.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::arithmetic::{Op, Step, WordProblem, answer_line};
use super::lists::{ListAnswer, ListOp, ListTask, join};
use super::task::Task;
use super::vocab::REPEAT_WORDS;
use super::words::{MAX_WORDS, MIN_WORDS, RepeatTask, WordCountTask, describe, repeat, variants};
use crate::rng::{below, chance, pick};

/// The intended quality of a generated response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Right answer, clean format.
    Clean,
    /// Right answer, broken format (missing answer line, chatter, wrong separators...).
    Sloppy,
    /// Wrong answer in a clean format (off by one, wrong operation, wrong sort...).
    Wrong,
    /// Wrong answer and broken format.
    WrongSloppy,
}

impl Quality {
    pub fn is_correct(self) -> bool {
        matches!(self, Quality::Clean | Quality::Sloppy)
    }

    pub fn is_formatted(self) -> bool {
        matches!(self, Quality::Clean | Quality::Wrong)
    }

    /// The snake_case name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Clean => "clean",
            Quality::Sloppy => "sloppy",
            Quality::Wrong => "wrong",
            Quality::WrongSloppy => "wrong_sloppy",
        }
    }
}

/// A generated response and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub text: String,
    pub quality: Quality,
    /// The flaw(s) applied, e.g. "off_by_one+no_answer_line"; empty for clean responses.
    pub flaw: String,
}

/// A response to `task` of the given quality.
pub fn respond<R: RngCore + ?Sized>(task: &Task, quality: Quality, rng: &mut R) -> Response {
    let wrong = !quality.is_correct();
    let sloppy = !quality.is_formatted();
    let (text, flaws) = match task {
        Task::Arithmetic(p) => arithmetic(p, wrong, sloppy, rng),
        Task::Lists(t) => match t.answer() {
            ListAnswer::List(gold) => list(t, gold, wrong, sloppy, rng),
            ListAnswer::Number(gold) => number(t, gold, wrong, sloppy, rng),
        },
        Task::WordCount(t) => word_count(t, wrong, sloppy, rng),
        Task::Repeat(t) => repeat_words(t, wrong, sloppy, rng),
    };
    Response {
        text,
        quality,
        flaw: flaws.join("+"),
    }
}

/// An edit to a chain of thought.
#[derive(Clone, Copy)]
enum Edit {
    None,
    /// Use the wrong operation at this step (still computed correctly).
    Flip(usize),
    /// Leave this step out.
    Skip(usize),
    /// Miscompute this step by the given amount (a false equation).
    Slip(usize, i64),
}

/// Recomputes the chain after `edit`, keeping each step's original index for its sentence.
fn replay(steps: &[Step], edit: Edit) -> Vec<(usize, Step)> {
    let mut x = steps.first().map_or(0, |s| s.before);
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let op = match (edit, s.op) {
            (Edit::Flip(j), Op::Sub(a)) if j == i => Op::Add(a),
            (Edit::Flip(j), Op::Add(a) | Op::Mul(a)) if j == i => Op::Sub(a),
            _ => s.op,
        };
        if matches!(edit, Edit::Skip(j) if j == i) {
            continue;
        }
        let mut after = op.apply(x);
        if let Edit::Slip(j, d) = edit {
            if j == i {
                after += d;
            }
        }
        out.push((
            i,
            Step {
                op,
                before: x,
                after,
            },
        ));
        x = after;
    }
    out
}

fn plus_or_minus_one<R: RngCore + ?Sized>(rng: &mut R, x: i64) -> i64 {
    if x <= 1 || chance(rng, 0.5) {
        x + 1
    } else {
        x - 1
    }
}

fn arithmetic<R: RngCore + ?Sized>(
    p: &WordProblem,
    wrong: bool,
    sloppy: bool,
    rng: &mut R,
) -> (String, Vec<&'static str>) {
    let steps = p.steps();
    let gold = p.answer();
    let mut flaws = Vec::new();
    let (chain, shown) = if wrong {
        wrong_chain(&steps, gold, sloppy, &mut flaws, rng)
    } else {
        (replay(&steps, Edit::None), gold)
    };
    let sentences: Vec<String> = chain.iter().map(|(i, s)| p.step_sentence(*i, s)).collect();
    let mut text = sentences.join(" ");
    let sep = if text.is_empty() { "" } else { " " };
    if !sloppy {
        return (format!("{text}{sep}{}", answer_line(shown)), flaws);
    }
    let (_, object) = p.entities();
    let pron = p.gender().subject();
    let kind = *pick(
        rng,
        &[
            "no_answer_line",
            "trailing_chatter",
            "answer_first",
            "bare_number",
            "lowercase_line",
        ],
    );
    flaws.push(kind);
    text = match kind {
        "no_answer_line" => format!(
            "{text}{sep}So {} has {shown} {object}.",
            pron.to_lowercase()
        ),
        "trailing_chatter" => format!("{text}{sep}{} I hope this helps!", answer_line(shown)),
        "answer_first" => format!("{}{sep}{text}", answer_line(shown)),
        "bare_number" => shown.to_string(),
        _ => format!("{text}{sep}the answer is {shown}"),
    };
    (text, flaws)
}

/// A chain whose final value is not `gold`: a wrong operation, a skipped step, an off-by-one
/// final answer, or (only when the response is sloppy anyway) a miscomputed step.
fn wrong_chain<R: RngCore + ?Sized>(
    steps: &[Step],
    gold: i64,
    sloppy: bool,
    flaws: &mut Vec<&'static str>,
    rng: &mut R,
) -> (Vec<(usize, Step)>, i64) {
    let mut kinds = vec!["wrong_op", "off_by_one"];
    if steps.len() >= 2 {
        kinds.push("skip_step");
    }
    if sloppy {
        kinds.push("slip");
    }
    let kind = *pick(rng, &kinds);
    let j = below(rng, steps.len().max(1));
    let chain = match kind {
        "wrong_op" => replay(steps, Edit::Flip(j)),
        "skip_step" => replay(steps, Edit::Skip(j)),
        "slip" => replay(steps, Edit::Slip(j, if chance(rng, 0.5) { 1 } else { -1 })),
        _ => replay(steps, Edit::None),
    };
    let last = chain.last().map_or(gold, |(_, s)| s.after);
    if kind != "off_by_one" && last != gold {
        flaws.push(kind);
        return (chain, last);
    }
    // Off by one in the final line only: the reasoning is right, the answer contradicts it.
    flaws.push("off_by_one");
    (replay(steps, Edit::None), plus_or_minus_one(rng, gold))
}

fn list<R: RngCore + ?Sized>(
    t: &ListTask,
    gold: Vec<i64>,
    wrong: bool,
    sloppy: bool,
    rng: &mut R,
) -> (String, Vec<&'static str>) {
    let mut flaws = Vec::new();
    let mut shown = gold.clone();
    if wrong {
        let mut kinds = vec!["swap", "drop"];
        if t.items() != gold.as_slice() {
            kinds.push("unchanged");
        }
        let kind = *pick(rng, &kinds);
        flaws.push(kind);
        match kind {
            "swap" => {
                let i = below(rng, shown.len() - 1);
                shown.swap(i, i + 1);
            }
            "drop" => {
                shown.remove(below(rng, shown.len()));
            }
            _ => shown = t.items().to_vec(),
        }
    }
    let clean = join(&shown);
    if !sloppy {
        return (clean, flaws);
    }
    let kind = *pick(rng, &["chatter", "spaces", "and", "trailing"]);
    flaws.push(kind);
    let text = match kind {
        "chatter" => format!("Sure! Here is the list: {clean}."),
        "spaces" => shown
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        "and" => {
            let (last, rest) = shown.split_last().map_or((0, &[][..]), |(l, r)| (*l, r));
            format!("{} and {last}", join(rest))
        }
        _ => format!("{clean}. Done!"),
    };
    (text, flaws)
}

fn number<R: RngCore + ?Sized>(
    t: &ListTask,
    gold: i64,
    wrong: bool,
    sloppy: bool,
    rng: &mut R,
) -> (String, Vec<&'static str>) {
    let mut flaws = Vec::new();
    let mut shown = gold;
    if wrong {
        let mut sorted = t.items().to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let (kind, value) = match t.op() {
            ListOp::Max if n >= 2 => ("second_largest", sorted[n - 2]),
            ListOp::Min if n >= 2 => ("second_smallest", sorted[1]),
            _ => ("off_by_one", plus_or_minus_one(rng, gold)),
        };
        flaws.push(kind);
        shown = value;
    }
    if !sloppy {
        return (answer_line(shown), flaws);
    }
    let kind = *pick(rng, &["bare_number", "sentence", "chatter"]);
    flaws.push(kind);
    let text = match (kind, t.op()) {
        ("bare_number", _) => shown.to_string(),
        ("sentence", ListOp::Count) => format!("There are {shown} numbers."),
        ("sentence", ListOp::Max) => format!("The largest number is {shown}."),
        ("sentence", _) => format!("The smallest number is {shown}."),
        _ => format!("{} Easy!", answer_line(shown)),
    };
    (text, flaws)
}

fn word_count<R: RngCore + ?Sized>(
    t: &WordCountTask,
    wrong: bool,
    sloppy: bool,
    rng: &mut R,
) -> (String, Vec<&'static str>) {
    let e = t.entity();
    let mut flaws = Vec::new();
    let mut words = t.words().clamp(MIN_WORDS, MAX_WORDS);
    let mut subject = below(rng, 4);
    let mut no_entity = false;
    if wrong {
        let kind = *pick(rng, &["word_count_off", "no_entity"]);
        flaws.push(kind);
        if kind == "word_count_off" || t.words() != words {
            words = if words == MAX_WORDS || (words > MIN_WORDS && chance(rng, 0.5)) {
                words - 1
            } else {
                words + 1
            };
        } else {
            subject = 2; // "This ..." becomes "This one ..."
            no_entity = true;
        }
    }
    let variant = below(rng, variants(words).max(1));
    let mut text = describe(e, words, subject, variant).unwrap_or_default();
    if no_entity {
        text = text.replacen(&format!("This {}", e.noun), "This one", 1);
    }
    if !sloppy {
        return (text, flaws);
    }
    let kind = *pick(rng, &["lowercase", "no_period", "two_lines"]);
    flaws.push(kind);
    let body = text.trim_end_matches('.');
    let text = match kind {
        "lowercase" => body.to_lowercase(),
        "no_period" => body.to_string(),
        _ => body.replacen(' ', "\n", 1) + ".",
    };
    (text, flaws)
}

fn repeat_words<R: RngCore + ?Sized>(
    t: &RepeatTask,
    wrong: bool,
    sloppy: bool,
    rng: &mut R,
) -> (String, Vec<&'static str>) {
    let mut flaws = Vec::new();
    let (mut word, mut times) = (t.word(), t.times());
    if wrong {
        let kind = *pick(rng, &["count_off", "other_word"]);
        flaws.push(kind);
        if kind == "count_off" {
            // Never down to one word: a single word cannot show the sloppy separators.
            times = if times <= 2 {
                times + 1
            } else {
                plus_or_minus_one(rng, times as i64) as usize
            };
        } else {
            let others: Vec<&str> = REPEAT_WORDS
                .iter()
                .copied()
                .filter(|w| *w != word)
                .collect();
            word = *pick(rng, &others);
        }
    }
    let clean = repeat(word, times);
    if !sloppy {
        return (clean, flaws);
    }
    let kind = *pick(rng, &["chatter", "commas", "capital"]);
    flaws.push(kind);
    let text = match kind {
        "chatter" => format!("Sure! {clean}"),
        "commas" => vec![word; times].join(", "),
        _ => {
            let mut c = clean.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    };
    (text, flaws)
}
