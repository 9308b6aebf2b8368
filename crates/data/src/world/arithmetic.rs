//! Arithmetic word problems in the seed's style ("Jane has 12 flowers. She gives 2 to her mom and
//! 3 to her dad. How many flowers does she have left?"): the grammar, a generator, a parser that
//! inverts the generator, and the chain-of-thought solution (one sentence per step, then
//! "The answer is N.").
//!
//! A step is one arithmetic operation: "3 bags with 4 in each" is one (3 * 4), and the seed's
//! "gives 2 ... and 3 ..." is two. Flawed solutions live in `flaws.rs`; scoring in `oracle.rs`.

use rand::RngCore;

use super::config::{Split, split_of};
use super::template::{Captures, matches, render, sentences};
use super::vocab::{CONTAINERS, Gender, OBJECTS, RELATIVES, gender_of, names_in, objects_in};
use crate::rng::{below, chance, pick, range};
use Kind::{Add, Double, Sub, Triple};

mod parse;
pub(crate) use parse::parse;

/// One arithmetic operation with its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add(i64),
    Sub(i64),
    Mul(i64),
}

impl Op {
    pub fn apply(self, x: i64) -> i64 {
        match self {
            Op::Add(a) => x + a,
            Op::Sub(a) => x - a,
            Op::Mul(a) => x * a,
        }
    }

    pub fn operand(self) -> i64 {
        match self {
            Op::Add(a) | Op::Sub(a) | Op::Mul(a) => a,
        }
    }

    pub fn symbol(self) -> char {
        match self {
            Op::Add(_) => '+',
            Op::Sub(_) => '-',
            Op::Mul(_) => '*',
        }
    }
}

/// One step of a solution: `before op = after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    pub before: i64,
    pub after: i64,
}

impl Step {
    /// "12 - 2 = 10"
    pub fn equation(&self) -> String {
        format!(
            "{} {} {} = {}",
            self.before,
            self.op.symbol(),
            self.op.operand(),
            self.after
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Sub,
    Double,
    Triple,
}

/// A sentence that changes the count, with one CoT sentence per operation it contains.
struct EventTemplate {
    text: &'static str,
    kinds: &'static [Kind],
    cot: &'static [&'static str],
}

const fn ev(
    text: &'static str,
    kinds: &'static [Kind],
    cot: &'static [&'static str],
) -> EventTemplate {
    EventTemplate { text, kinds, cot }
}

const EVENTS: &[EventTemplate] = &[
    ev(
        "{subj} buys {a} more.",
        &[Add],
        &["{Subj} buys {a} more, so {eq}."],
    ),
    ev(
        "{subj} finds {a} more.",
        &[Add],
        &["{Subj} finds {a} more, so {eq}."],
    ),
    ev(
        "{subj} gets {a} more from {poss} {rel}.",
        &[Add],
        &["{Subj} gets {a} more from {poss} {rel}, so {eq}."],
    ),
    ev(
        "{Poss} {rel} gives {objp} {a} more.",
        &[Add],
        &["{Poss} {rel} gives {objp} {a} more, so {eq}."],
    ),
    ev(
        "{subj} gives {a} to {poss} {rel}.",
        &[Sub],
        &["{Subj} gives {a} to {poss} {rel}, so {eq}."],
    ),
    ev(
        "{subj} gives away {a}.",
        &[Sub],
        &["{Subj} gives away {a}, so {eq}."],
    ),
    ev("{subj} loses {a}.", &[Sub], &["{Subj} loses {a}, so {eq}."]),
    ev("{subj} sells {a}.", &[Sub], &["{Subj} sells {a}, so {eq}."]),
    ev(
        "Then the number of {things} doubles.",
        &[Double],
        &["The number doubles, so {eq}."],
    ),
    ev(
        "Then the number of {things} triples.",
        &[Triple],
        &["The number triples, so {eq}."],
    ),
    ev(
        "{subj} gives {a} to {poss} {rel} and {b} to {poss} {rel2}.",
        &[Sub, Sub],
        &[
            "{Subj} gives {a} to {poss} {rel}, so {eq}.",
            "{Subj} gives {b} to {poss} {rel2}, so {eq}.",
        ],
    ),
    ev(
        "{subj} buys {a} more and finds {b} more.",
        &[Add, Add],
        &[
            "{Subj} buys {a} more, so {eq}.",
            "{Subj} finds {b} more, so {eq}.",
        ],
    ),
    ev(
        "{subj} finds {a} more but loses {b}.",
        &[Add, Sub],
        &[
            "{Subj} finds {a} more, so {eq}.",
            "{Subj} loses {b}, so {eq}.",
        ],
    ),
    ev(
        "{subj} sells {a} and buys {b} more.",
        &[Sub, Add],
        &[
            "{Subj} sells {a}, so {eq}.",
            "{Subj} buys {b} more, so {eq}.",
        ],
    ),
];

const STARTS: &[&str] = &["{name} has {n} {things}.", "{name} collects {n} {things}."];
const START_GROUPS: &str = "{name} has {k} {boxes} with {m} {things} in each.";
const GROUPS_COT: &str = "{Subj} has {k} {boxes} of {m}, so {eq}.";

/// Questions; the flag marks "left", which reads well only after a subtraction.
const QUESTIONS: &[(&str, bool)] = &[
    ("How many {things} does {name} have now?", false),
    ("How many {things} does {pron} have now?", false),
    ("How many {things} does {name} have in the end?", false),
    ("How many {things} does {pron} have left?", true),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    Has {
        template: usize,
        n: i64,
    },
    Groups {
        k: i64,
        m: i64,
        container: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    template: usize,
    /// Whether `{subj}` is the name rather than the pronoun.
    by_name: bool,
    numbers: Vec<i64>,
    relatives: Vec<&'static str>,
}

/// An arithmetic word problem, exactly as rendered in its prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordProblem {
    name: &'static str,
    gender: Gender,
    object: &'static str,
    start: Start,
    events: Vec<Event>,
    question: usize,
}

impl WordProblem {
    /// A problem with exactly `steps` operations (at least 1) whose name, object and operand
    /// tuple all lie in `split`: for experiments that control the number of steps.
    pub fn generate<R: RngCore + ?Sized>(rng: &mut R, split: Split, steps: usize) -> Self {
        generate(rng, split, steps)
    }

    /// The solution's steps in order.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut x = match self.start {
            Start::Has { n, .. } => n,
            Start::Groups { k, m, .. } => {
                steps.push(Step {
                    op: Op::Mul(m),
                    before: k,
                    after: k * m,
                });
                k * m
            }
        };
        for op in self.events.iter().flat_map(event_ops) {
            let after = op.apply(x);
            steps.push(Step {
                op,
                before: x,
                after,
            });
            x = after;
        }
        steps
    }

    /// The number the problem starts from (before the first step).
    pub fn start_value(&self) -> i64 {
        match self.start {
            Start::Has { n, .. } => n,
            Start::Groups { k, .. } => k,
        }
    }

    /// The gold answer.
    pub fn answer(&self) -> i64 {
        self.steps().last().map_or(self.start_value(), |s| s.after)
    }

    /// The person's name and the counted object, e.g. ("Jane", "flowers").
    pub fn entities(&self) -> (&'static str, &'static str) {
        (self.name, self.object)
    }

    pub(crate) fn gender(&self) -> Gender {
        self.gender
    }

    pub fn prompt(&self) -> String {
        let mut parts = vec![match &self.start {
            Start::Has { template, n } => render(STARTS[*template], |s| self.slot(s, *n)),
            Start::Groups { k, m, container } => render(START_GROUPS, |s| match s {
                "k" => k.to_string(),
                "m" => m.to_string(),
                "boxes" => container.to_string(),
                _ => self.slot(s, 0),
            }),
        }];
        for ev in &self.events {
            let t = &EVENTS[ev.template];
            parts.push(render(t.text, |s| self.event_slot(ev, s)));
        }
        parts.push(render(QUESTIONS[self.question].0, |s| self.slot(s, 0)));
        parts.join(" ")
    }

    /// The clean chain-of-thought demonstration: one sentence per step, then the answer line.
    pub fn solution(&self) -> String {
        let mut out = self.cot_sentences();
        out.push(answer_line(self.answer()));
        out.join(" ")
    }

    /// One chain-of-thought sentence per step, e.g. "She gives 2 to her mom, so 12 - 2 = 10.",
    /// for experiments that build other formats (direct, answer-first, dots) from it.
    pub fn cot_sentences(&self) -> Vec<String> {
        let steps = self.steps();
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| self.step_sentence(i, s))
            .collect()
    }

    /// The CoT sentence for step `i`, showing `step`'s numbers (which flawed solutions alter).
    pub(crate) fn step_sentence(&self, i: usize, step: &Step) -> String {
        let eq = step.equation();
        let first = i == 0;
        let grouped = matches!(self.start, Start::Groups { .. });
        if grouped && i == 0 {
            let Start::Groups { k, m, container } = self.start else {
                unreachable!("checked above")
            };
            return render(GROUPS_COT, |s| match s {
                "k" => k.to_string(),
                "m" => m.to_string(),
                "boxes" => container.to_string(),
                "eq" => eq.clone(),
                _ => self.cot_slot(s, first),
            });
        }
        let mut j = i - usize::from(grouped);
        for ev in &self.events {
            let t = &EVENTS[ev.template];
            if j < t.kinds.len() {
                return render(t.cot[j], |s| match s {
                    "eq" => eq.clone(),
                    "Subj" => self.cot_slot(s, first),
                    _ => self.event_slot(ev, s),
                });
            }
            j -= t.kinds.len();
        }
        eq
    }

    /// The key that decides the operand split: the computation itself (start value and every
    /// operation), so "3 bags of 2" and "has 3, then doubles" share a key.
    pub(crate) fn operand_key(&self) -> String {
        let mut key = format!("arith:{}", self.start_value());
        for s in self.steps() {
            key.push_str(&format!("|{}{}", s.op.symbol(), s.op.operand()));
        }
        key
    }

    fn slot(&self, slot: &str, n: i64) -> String {
        match slot {
            "name" => self.name.to_string(),
            "things" => self.object.to_string(),
            "pron" => self.gender.subject_lower().to_string(),
            "n" => n.to_string(),
            _ => String::new(),
        }
    }

    fn cot_slot(&self, slot: &str, first: bool) -> String {
        match slot {
            "Subj" if first => self.name.to_string(),
            "Subj" => self.gender.subject().to_string(),
            _ => self.slot(slot, 0),
        }
    }

    fn event_slot(&self, ev: &Event, slot: &str) -> String {
        let g = self.gender;
        match slot {
            "subj" if ev.by_name => self.name.to_string(),
            "subj" => g.subject().to_string(),
            "Poss" => capitalize(g.possessive()),
            "poss" => g.possessive().to_string(),
            "objp" => g.object().to_string(),
            "rel" => ev
                .relatives
                .first()
                .copied()
                .unwrap_or_default()
                .to_string(),
            "rel2" => ev.relatives.get(1).copied().unwrap_or_default().to_string(),
            "a" => ev.numbers.first().map_or(String::new(), i64::to_string),
            "b" => ev.numbers.get(1).map_or(String::new(), i64::to_string),
            _ => self.slot(slot, 0),
        }
    }
}

/// "The answer is 7." — the answer contract of every numeric task (E3, E8 rely on it).
pub fn answer_line(answer: i64) -> String {
    format!("The answer is {answer}.")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn event_ops(ev: &Event) -> impl Iterator<Item = Op> + '_ {
    let mut numbers = ev.numbers.iter();
    EVENTS[ev.template].kinds.iter().map(move |k| match k {
        Add => Op::Add(numbers.next().copied().unwrap_or(0)),
        Sub => Op::Sub(numbers.next().copied().unwrap_or(0)),
        Double => Op::Mul(2),
        Triple => Op::Mul(3),
    })
}

/// A problem with `steps` operations whose name, object and operand tuple all lie in `split`.
pub(crate) fn generate<R: RngCore + ?Sized>(
    rng: &mut R,
    split: Split,
    steps: usize,
) -> WordProblem {
    loop {
        let p = draw(rng, split, steps.max(1));
        // Rejection keeps the operand split exact; about 1 in 5 draws lands in eval, so eval
        // generation takes ~5 draws and train ~1.25.
        if split_of(&p.operand_key()) == split {
            return p;
        }
    }
}

fn draw<R: RngCore + ?Sized>(rng: &mut R, split: Split, steps: usize) -> WordProblem {
    let (name, gender) = *pick(rng, &names_in(split));
    let object = *pick(rng, &objects_in(split));
    let mut remaining = steps;
    // A quarter of problems start with a multiplication, as the seed's 1–4 step problems mix
    // operations; it uses one step.
    let start = if chance(rng, 0.25) {
        remaining -= 1;
        let (k, m) = (range(rng, 2, 5), range(rng, 2, 6));
        let container = *pick(rng, CONTAINERS);
        Start::Groups { k, m, container }
    } else {
        Start::Has {
            template: below(rng, STARTS.len()),
            n: range(rng, 5, 20),
        }
    };
    let mut x = match start {
        Start::Has { n, .. } => n,
        Start::Groups { k, m, .. } => k * m,
    };
    let mut used_mul = matches!(start, Start::Groups { .. });
    let mut events = Vec::new();
    while remaining > 0 {
        let options: Vec<usize> = (0..EVENTS.len())
            .filter(|&t| EVENTS[t].kinds.len() <= remaining && feasible(t, x, used_mul))
            .collect();
        let template = *pick(rng, &options);
        let ev = draw_event(rng, template, &mut x);
        used_mul |= EVENTS[template]
            .kinds
            .iter()
            .any(|k| matches!(k, Double | Triple));
        remaining -= EVENTS[template].kinds.len();
        events.push(ev);
    }
    let last_is_sub = events
        .last()
        .and_then(|e| EVENTS[e.template].kinds.last())
        .is_some_and(|k| *k == Sub);
    let questions: Vec<usize> = (0..QUESTIONS.len())
        .filter(|&q| last_is_sub || !QUESTIONS[q].1)
        .collect();
    WordProblem {
        name,
        gender,
        object,
        start,
        events,
        question: *pick(rng, &questions),
    }
}

/// Subtractions must leave at least 1 (small English has no negative flowers); one
/// multiplication at most, and only on counts up to 12, keeps every number below 100.
fn feasible(template: usize, x: i64, used_mul: bool) -> bool {
    let kinds = EVENTS[template].kinds;
    let subs = kinds.iter().filter(|k| **k == Sub).count() as i64;
    let muls = kinds.iter().any(|k| matches!(k, Double | Triple));
    x > subs && !(muls && (used_mul || x > 12))
}

fn draw_event<R: RngCore + ?Sized>(rng: &mut R, template: usize, x: &mut i64) -> Event {
    let t = &EVENTS[template];
    let mut numbers = Vec::new();
    for (i, kind) in t.kinds.iter().enumerate() {
        let subs_after = t.kinds[i + 1..].iter().filter(|k| **k == Sub).count() as i64;
        match kind {
            Add => {
                let a = range(rng, 1, 9);
                *x += a;
                numbers.push(a);
            }
            Sub => {
                let a = range(rng, 1, 9.min(*x - 1 - subs_after).max(1));
                *x -= a;
                numbers.push(a);
            }
            Double => *x *= 2,
            Triple => *x *= 3,
        }
    }
    let mut relatives = Vec::new();
    for slot in ["{rel}", "{rel2}"] {
        if t.text.contains(slot) {
            let options: Vec<&'static str> = RELATIVES
                .iter()
                .copied()
                .filter(|r| !relatives.contains(r))
                .collect();
            relatives.push(*pick(rng, &options));
        }
    }
    Event {
        template,
        by_name: t.text.contains("{subj}") && chance(rng, 0.3),
        numbers,
        relatives,
    }
}
