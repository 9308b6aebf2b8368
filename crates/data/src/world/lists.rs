//! List-operation instructions with checkable answers: "Sort these numbers from smallest to
//! largest: 9, 2, 5." (also descending, reverse, count, largest, smallest), with generator and
//! parser sharing one template table.
//!
//! List answers are written "2, 5, 9"; single-number answers use the "The answer is N." line of
//! the arithmetic family. Scoring is `oracle.rs`.

use rand::RngCore;

use super::arithmetic::answer_line;
use super::config::{Split, split_of};
use super::template::{matches, render};
use crate::rng::{below, range, shuffle};

/// What to do with the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOp {
    SortAsc,
    SortDesc,
    Reverse,
    Count,
    Max,
    Min,
}

impl ListOp {
    pub const ALL: [ListOp; 6] = [
        ListOp::SortAsc,
        ListOp::SortDesc,
        ListOp::Reverse,
        ListOp::Count,
        ListOp::Max,
        ListOp::Min,
    ];

    /// The snake_case name used in file metadata.
    pub fn name(self) -> &'static str {
        match self {
            ListOp::SortAsc => "sort_asc",
            ListOp::SortDesc => "sort_desc",
            ListOp::Reverse => "reverse",
            ListOp::Count => "count",
            ListOp::Max => "max",
            ListOp::Min => "min",
        }
    }

    /// Whether the answer is a list (else a single number).
    pub fn returns_list(self) -> bool {
        matches!(self, ListOp::SortAsc | ListOp::SortDesc | ListOp::Reverse)
    }
}

const TEMPLATES: &[(ListOp, &str)] = &[
    (
        ListOp::SortAsc,
        "Sort these numbers from smallest to largest: {list}.",
    ),
    (
        ListOp::SortAsc,
        "Put these numbers in order from smallest to largest: {list}.",
    ),
    (
        ListOp::SortDesc,
        "Sort these numbers from largest to smallest: {list}.",
    ),
    (
        ListOp::SortDesc,
        "Put these numbers in order from largest to smallest: {list}.",
    ),
    (
        ListOp::Reverse,
        "Write these numbers in reverse order: {list}.",
    ),
    (ListOp::Reverse, "Reverse this list: {list}."),
    (ListOp::Count, "How many numbers are in this list: {list}?"),
    (ListOp::Count, "Count the numbers in this list: {list}."),
    (
        ListOp::Max,
        "What is the largest number in this list: {list}?",
    ),
    (ListOp::Max, "Which number is the biggest: {list}?"),
    (
        ListOp::Min,
        "What is the smallest number in this list: {list}?",
    ),
    (ListOp::Min, "Which number is the smallest: {list}?"),
];

/// The gold answer of a list task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListAnswer {
    List(Vec<i64>),
    Number(i64),
}

/// A list task as rendered in its prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTask {
    template: usize,
    items: Vec<i64>,
}

impl ListTask {
    pub fn op(&self) -> ListOp {
        TEMPLATES[self.template].0
    }

    /// The numbers in prompt order.
    pub fn items(&self) -> &[i64] {
        &self.items
    }

    pub fn prompt(&self) -> String {
        render(TEMPLATES[self.template].1, |_| join(&self.items))
    }

    pub fn answer(&self) -> ListAnswer {
        let mut v = self.items.clone();
        match self.op() {
            ListOp::SortAsc => v.sort_unstable(),
            ListOp::SortDesc => v.sort_unstable_by(|a, b| b.cmp(a)),
            ListOp::Reverse => v.reverse(),
            ListOp::Count => return ListAnswer::Number(v.len() as i64),
            ListOp::Max => return ListAnswer::Number(v.iter().copied().max().unwrap_or(0)),
            ListOp::Min => return ListAnswer::Number(v.iter().copied().min().unwrap_or(0)),
        }
        ListAnswer::List(v)
    }

    /// The canonical answer text: "2, 5, 9" or "9".
    pub fn answer_text(&self) -> String {
        match self.answer() {
            ListAnswer::List(v) => join(&v),
            ListAnswer::Number(n) => n.to_string(),
        }
    }

    /// The clean demonstration: "2, 5, 9" or "The answer is 9."
    pub fn solution(&self) -> String {
        match self.answer() {
            ListAnswer::List(v) => join(&v),
            ListAnswer::Number(n) => answer_line(n),
        }
    }

    /// The operand split key: the multiset of numbers, whatever the operation, so the same
    /// numbers never appear in both splits.
    pub(crate) fn operand_key(&self) -> String {
        let mut v = self.items.clone();
        v.sort_unstable();
        format!("list:{}", join(&v))
    }
}

/// "9, 2, 5"
pub(crate) fn join(items: &[i64]) -> String {
    items
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A task whose multiset of numbers lies in `split`. 3–7 distinct numbers from 1–99: short
/// enough for a tiny model's context, long enough that sorting is not trivial.
pub(crate) fn generate<R: RngCore + ?Sized>(rng: &mut R, split: Split) -> ListTask {
    let template = below(rng, TEMPLATES.len());
    loop {
        let len = range(rng, 3, 7) as usize;
        let mut pool: Vec<i64> = (1..=99).collect();
        shuffle(rng, &mut pool);
        let task = ListTask {
            template,
            items: pool[..len].to_vec(),
        };
        if split_of(&task.operand_key()) == split {
            return task;
        }
    }
}

/// Parses a prompt of this grammar back into its task.
pub(crate) fn parse(prompt: &str) -> Result<ListTask, String> {
    for (template, (_, t)) in TEMPLATES.iter().enumerate() {
        let Some(c) = matches(t, prompt) else {
            continue;
        };
        if let Some(items) = c.get("list").and_then(parse_list) {
            return Ok(ListTask { template, items });
        }
    }
    Err("not a list instruction of the task world".into())
}

/// "9, 2, 5" → [9, 2, 5]; `None` unless every item is a number written with digits.
fn parse_list(s: &str) -> Option<Vec<i64>> {
    let items: Option<Vec<i64>> = s
        .split(", ")
        .map(|x| {
            let ok = !x.is_empty() && x.len() <= 9 && x.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| x.parse().ok()).flatten()
        })
        .collect();
    items.filter(|v| v.len() >= 2)
}
