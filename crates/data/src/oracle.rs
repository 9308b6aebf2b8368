//! The oracle: the gold-standard scorer of a response to a task-world prompt, and the "human"
//! behind every simulated labeler. It grades like a careful rater, by a rubric:
//!
//! 1. **Correctness** dominates: a right answer earns [`CORRECT_REWARD`] (1.0), more than any
//!    wrong answer can earn in total, so any correct response outscores any wrong one.
//! 2. **Work** orders the wrong answers: up to [`WORK_REWARD`] (0.45) for how much of the work
//!    holds ([`Grade::work`], 0 to 1), as a careful rater gives partial credit. Word problems:
//!    0.5 × the share of the solution's steps written as a true equation (`12 - 2 = 10`; half a
//!    step for the step's operation and operand applied correctly to a carried wrong value),
//!    0.15 when the stated answer is the result of the solution's last operation, 0.2 × the
//!    share of the written equations that are true, 0.15 × the share of the problem's numbers
//!    that the equations use. Sorted or reversed lists: 0.5 × the longest common subsequence with
//!    the gold list over the longer length, 0.25 × the share of the gold numbers present, 0.25 ×
//!    the closeness of the length. A count: the closeness of the number; the largest (smallest)
//!    item: half for how near the top (bottom) of the list the named item is, half for how near
//!    its value is. Word counts: the closeness of the count (halved if the response does not name
//!    the thing described). Repetitions: half for the closeness of the word's count, half for
//!    the closeness of the number of words.
//! 3. **Format** adds [`FORMAT_REWARD`] (0.3): the answer line, the list shape, one sentence, a
//!    bare repetition.
//! 4. **Length** subtracts up to [`LENGTH_PENALTY_CAP`] (0.2) beyond the task's budget.
//!
//! Work, format and length add up, so among wrong answers a solution whose steps mostly hold
//! can outrank a tidy guess; with equal work, the formatted response wins whatever the lengths.
//! Two responses tie only when they earn the same credits under every item.
//!
//! It recognises prompts by parsing them (`Task::parse`), not by lookup. It does not rank or add
//! noise; that is `labeler.rs`.

use crate::error::Result;
use crate::world::{
    ListAnswer, ListOp, ListTask, Step, Task, WordCountTask, WordProblem, count_words,
};

/// Reward for a correct answer. It exceeds the most a wrong answer can earn
/// (`WORK_REWARD + FORMAT_REWARD`) by more than `LENGTH_PENALTY_CAP`, so correctness dominates.
pub const CORRECT_REWARD: f64 = 1.0;
/// Most credit a wrong answer earns for its work ([`Grade::work`] = 1).
pub const WORK_REWARD: f64 = 0.45;
/// Reward for following the format (answer line, list shape, one sentence, bare repetition).
/// It exceeds `LENGTH_PENALTY_CAP`, so format dominates length.
pub const FORMAT_REWARD: f64 = 0.3;
/// Penalty per character beyond the length budget: 100 surplus characters cost 0.1.
pub const LENGTH_PENALTY_PER_CHAR: f64 = 0.001;
/// Most the length penalty can take, below `FORMAT_REWARD`: with equal work, format dominates
/// length.
pub const LENGTH_PENALTY_CAP: f64 = 0.2;

/// A word problem's work credit: weights of the steps that hold, of a final answer from the
/// right last operation, of the true equations and of the problem's numbers used (sum 1).
const STEPS_WEIGHT: f64 = 0.5;
const LAST_OP_WEIGHT: f64 = 0.15;
const TRUE_EQUATIONS_WEIGHT: f64 = 0.2;
const NUMBERS_USED_WEIGHT: f64 = 0.15;

/// The oracle's verdict on one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grade {
    /// The answer (or the constraint) is right.
    pub correct: bool,
    /// How much of the work holds, from 0 to 1 (1 for a correct answer); see the module docs.
    pub work: f64,
    /// The response has the clean format of its family.
    pub formatted: bool,
    /// Characters beyond the length budget.
    pub chars_over: usize,
    /// `CORRECT_REWARD` if correct, else `WORK_REWARD·work`; plus `FORMAT_REWARD·formatted`,
    /// minus the length penalty.
    pub score: f64,
}

/// Scores a response to a task-world prompt; fails if the prompt is not one.
pub fn score(prompt: &str, response: &str) -> Result<f64> {
    Ok(grade(&Task::parse(prompt)?, response).score)
}

/// Grades a response to a task.
pub fn grade(task: &Task, response: &str) -> Grade {
    let (correct, formatted) = match task {
        Task::Arithmetic(p) => check_number(response, p.answer(), Some(p)),
        Task::Lists(t) => match t.answer() {
            ListAnswer::Number(n) => check_number(response, n, None),
            ListAnswer::List(gold) => check_list(response, &gold),
        },
        Task::WordCount(t) => {
            let correct = names_entity(response, t) && count_words(response) == t.words();
            (correct, one_sentence(response))
        }
        Task::Repeat(t) => check_repeat(response, t.word(), t.times()),
    };
    let work = if correct {
        1.0
    } else {
        work_credit(task, response)
    };
    let chars_over = response
        .trim()
        .chars()
        .count()
        .saturating_sub(length_budget(task));
    let penalty = (chars_over as f64 * LENGTH_PENALTY_PER_CHAR).min(LENGTH_PENALTY_CAP);
    let earned = if correct {
        CORRECT_REWARD
    } else {
        WORK_REWARD * work
    };
    let score = earned + FORMAT_REWARD * f64::from(u8::from(formatted)) - penalty;
    Grade {
        correct,
        work,
        formatted,
        chars_over,
        score,
    }
}

/// The response's words, lower-cased, without surrounding punctuation.
fn bare_words(response: &str) -> impl Iterator<Item = String> + '_ {
    response.split_whitespace().map(|w| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    })
}

fn names_entity(response: &str, t: &WordCountTask) -> bool {
    let e = t.entity();
    bare_words(response).any(|w| w == e.noun || w == e.plural)
}

/// How much of a wrong answer's work holds, from 0 to 1 (rubric item 2 in the module docs).
fn work_credit(task: &Task, response: &str) -> f64 {
    match task {
        Task::Arithmetic(p) => steps_credit(p, response),
        Task::Lists(t) => match t.answer() {
            ListAnswer::List(gold) => last_number_run(response).map_or(0.0, |run| {
                let longer = run.len().max(gold.len()) as f64;
                0.5 * lcs(&run, &gold) as f64 / longer
                    + 0.25 * shared(&gold, &run) as f64 / gold.len().max(1) as f64
                    + 0.25 * closeness(run.len(), gold.len())
            }),
            ListAnswer::Number(gold) => {
                extract_answer(response).map_or(0.0, |n| number_closeness(t, gold, n))
            }
        },
        Task::WordCount(t) => {
            let near = closeness(count_words(response), t.words());
            if names_entity(response, t) {
                near
            } else {
                near / 2.0
            }
        }
        Task::Repeat(t) => {
            0.5 * closeness(word_count_of(response, t.word()), t.times())
                + 0.5 * closeness(response.split_whitespace().count(), t.times())
        }
    }
}

/// How many of `want`'s items `got` holds, counting repeats (a multiset intersection).
fn shared(want: &[i64], got: &[i64]) -> usize {
    let mut left = got.to_vec();
    want.iter()
        .filter(|x| {
            left.iter()
                .position(|y| y == *x)
                .map(|i| left.swap_remove(i))
                .is_some()
        })
        .count()
}

/// `1 − |got − want| / want`, floored at 0.
fn closeness(got: usize, want: usize) -> f64 {
    (1.0 - got.abs_diff(want) as f64 / want.max(1) as f64).max(0.0)
}

/// A wrong number for a list question: for a count, how close it is; for the largest
/// (smallest) item, half for how near the top (bottom) of the sorted list the named item is (0
/// if it is not in the list), half for how near its value is (`1 − |n − gold| / |gold|`).
fn number_closeness(t: &ListTask, gold: i64, n: i64) -> f64 {
    let mut sorted = t.items().to_vec();
    sorted.sort_unstable();
    let len = sorted.len();
    let from_top = |pos: usize| match t.op() {
        ListOp::Max => len - 1 - pos,
        _ => pos,
    };
    match t.op() {
        ListOp::Count => {
            let want = usize::try_from(gold).unwrap_or(0);
            usize::try_from(n).map_or(0.0, |got| closeness(got, want))
        }
        ListOp::Max | ListOp::Min if len >= 2 => {
            let rank = sorted
                .iter()
                .position(|&x| x == n)
                .map_or(0.0, |pos| 1.0 - from_top(pos) as f64 / (len - 1) as f64);
            let value =
                (1.0 - n.abs_diff(gold) as f64 / gold.unsigned_abs().max(1) as f64).max(0.0);
            0.5 * rank + 0.5 * value
        }
        _ => 0.0,
    }
}

/// Length of the longest common subsequence of two short lists.
fn lcs(a: &[i64], b: &[i64]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y {
                diag + 1
            } else {
                row[j + 1].max(row[j])
            };
            diag = up;
        }
    }
    row[b.len()]
}

/// An equation `a op b = c` as written in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Equation {
    a: i64,
    op: char,
    b: i64,
    c: i64,
}

impl Equation {
    fn holds(self) -> bool {
        let value = match self.op {
            '+' => self.a.checked_add(self.b),
            '-' => self.a.checked_sub(self.b),
            _ => self.a.checked_mul(self.b),
        };
        value == Some(self.c)
    }

    /// Whether this applies `step`'s operation and operand (to any value; either order for
    /// the commutative ones).
    fn same_operation(self, step: &Step) -> bool {
        let (op, operand) = (step.op.symbol(), step.op.operand());
        self.op == op && (self.b == operand || (op != '-' && self.a == operand))
    }

    /// Whether this is `step` itself: its operation on its numbers with its result.
    fn is_step(self, step: &Step) -> bool {
        self.same_operation(step)
            && self.c == step.after
            && (self.a == step.before || (step.op.symbol() != '-' && self.b == step.before))
    }
}

/// Every spaced `a op b = c` in the text, op one of + - * x × (x and × read as *).
fn equations(text: &str) -> Vec<Equation> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let num = |t: &str| {
        t.trim_end_matches(['.', ',', ';', ':', '!', '?'])
            .parse::<i64>()
            .ok()
    };
    tokens
        .windows(5)
        .filter_map(|w| {
            let op = match w[1] {
                "+" => '+',
                "-" => '-',
                "*" | "x" | "×" => '*',
                _ => return None,
            };
            (w[3] == "=").then_some(())?;
            Some(Equation {
                a: num(w[0])?,
                op,
                b: num(w[2])?,
                c: num(w[4])?,
            })
        })
        .collect()
}

/// Work credit of a word-problem answer (weights above): the gold steps are matched in order
/// against the response's equations (1 for the step itself, true; 1/2 for its operation and
/// operand applied correctly to another value); the stated answer should be the result of the
/// response's last equation, applying the solution's last operation; the equations should be
/// true; and they should use the problem's numbers (the start and every operand).
fn steps_credit(p: &WordProblem, response: &str) -> f64 {
    let steps = p.steps();
    let eqs = equations(response);
    if steps.is_empty() || eqs.is_empty() {
        return 0.0;
    }
    let mut from = 0;
    let mut credit = 0.0;
    for step in &steps {
        let rest = &eqs[from..];
        let hit = rest
            .iter()
            .position(|e| e.holds() && e.is_step(step))
            .map(|i| (i, 1.0))
            .or_else(|| {
                rest.iter()
                    .position(|e| e.holds() && e.same_operation(step))
                    .map(|i| (i, 0.5))
            });
        if let Some((i, c)) = hit {
            credit += c;
            from += i + 1;
        }
    }
    let last = eqs[eqs.len() - 1];
    let final_from_last_op = steps
        .last()
        .is_some_and(|s| last.same_operation(s) && extract_answer(response) == Some(last.c));
    let true_share = eqs.iter().filter(|e| e.holds()).count() as f64 / eqs.len() as f64;
    let mut numbers = vec![p.start_value()];
    numbers.extend(steps.iter().map(|s| s.op.operand()));
    let written: Vec<i64> = eqs.iter().flat_map(|e| [e.a, e.b]).collect();
    let used = shared(&numbers, &written) as f64 / numbers.len() as f64;
    STEPS_WEIGHT * credit / steps.len() as f64
        + LAST_OP_WEIGHT * f64::from(u8::from(final_from_last_op))
        + TRUE_EQUATIONS_WEIGHT * true_share
        + NUMBERS_USED_WEIGHT * used
}

/// Characters a response may use before the length penalty starts: the clean solution's
/// length, half again for rephrasing, plus 40 for a short sentence of its own.
pub fn length_budget(task: &Task) -> usize {
    let gold = task.solution().chars().count();
    gold + gold / 2 + 40
}

/// The final numeric answer of a response: the number after the last "answer is"
/// (case-insensitive), else the last integer anywhere. This is the extraction contract for
/// chain of thought and self-consistency (E3, E8).
pub fn extract_answer(response: &str) -> Option<i64> {
    let lower = response.to_ascii_lowercase();
    if let Some(at) = lower.rfind("answer is") {
        let rest = response[at + "answer is".len()..].trim_start();
        if let Some(n) = leading_integer(rest) {
            return Some(n);
        }
    }
    integers(response).last().copied()
}

fn leading_integer(s: &str) -> Option<i64> {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || end > 15 {
        return None;
    }
    digits[..end].parse::<i64>().ok().map(|n| sign * n)
}

/// Every integer written with digits; a '-' directly before digits, at the start or after
/// whitespace, is a sign ("-3"), while "12 - 2" is a subtraction.
fn integers(s: &str) -> Vec<i64> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let negative = start >= 1
            && b[start - 1] == b'-'
            && (start == 1 || b[start - 2].is_ascii_whitespace());
        if let Ok(n) = s[start..i.min(start + 15)].parse::<i64>() {
            out.push(if negative { -n } else { n });
        }
    }
    out
}

/// Numeric answers: correct if the extracted answer is `gold`; formatted if the response ends
/// with the single answer line "The answer is N." and, for word problems, every "a op b = c"
/// it writes is true (a chain of thought with a false step is not clean even if its answer is).
fn check_number(response: &str, gold: i64, problem: Option<&WordProblem>) -> (bool, bool) {
    let correct = extract_answer(response) == Some(gold);
    let r = response.trim();
    let lines = r.to_ascii_lowercase().matches("answer is").count();
    let ends_with_line = r
        .rfind("The answer is ")
        .map(|at| &r[at + "The answer is ".len()..])
        .and_then(|tail| tail.strip_suffix('.'))
        .is_some_and(|n| leading_integer(n).is_some_and(|v| v.to_string() == n));
    let at_sentence_start = r
        .rfind("The answer is ")
        .is_some_and(|at| at == 0 || r[..at].ends_with(". ") || r[..at].ends_with('\n'));
    let equations_ok = problem.is_none() || equations_hold(r);
    (
        correct,
        lines == 1 && ends_with_line && at_sentence_start && equations_ok,
    )
}

/// Whether every "a op b = c" (spaced, op one of + - * x ×) in the text is arithmetically true.
fn equations_hold(text: &str) -> bool {
    equations(text).iter().all(|e| e.holds())
}

/// List answers: correct if the last run of two or more numbers (separated by commas, spaces or
/// "and") is the gold list; formatted if the whole response is "n, n, ..., n" with an optional
/// final period.
fn check_list(response: &str, gold: &[i64]) -> (bool, bool) {
    let correct = last_number_run(response).as_deref() == Some(gold);
    let r = response.trim();
    let body = r.strip_suffix('.').unwrap_or(r);
    let formatted = body.contains(", ")
        && body
            .split(", ")
            .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()));
    (correct, formatted)
}

fn last_number_run(text: &str) -> Option<Vec<i64>> {
    let mut runs: Vec<Vec<i64>> = vec![Vec::new()];
    for token in text.split_whitespace() {
        let core = token.trim_matches(|c: char| matches!(c, ',' | '.' | ':' | ';' | '!' | '?'));
        if let Ok(n) = core.parse::<i64>() {
            if let Some(run) = runs.last_mut() {
                run.push(n);
            }
            // A number followed by sentence punctuation ends its run.
            if token.ends_with(['.', ':', ';', '!', '?']) {
                runs.push(Vec::new());
            }
        } else if core != "and" && !core.is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.into_iter().rev().find(|r| r.len() >= 2)
}

/// Word constraints: one line, one sentence, starting with a capital and ending with a period.
fn one_sentence(response: &str) -> bool {
    let r = response.trim();
    let inner_stop = r
        .char_indices()
        .any(|(i, c)| matches!(c, '.' | '!' | '?') && i + c.len_utf8() < r.len());
    r.chars().next().is_some_and(char::is_uppercase)
        && r.ends_with('.')
        && !inner_stop
        && !r.contains('\n')
}

/// Repeat: correct if the word occurs exactly `times` times (ignoring case and punctuation);
/// formatted if the response is nothing but one lower-case word repeated, separated by single
/// spaces, with an optional final period (the shape, whichever word or count it has).
fn check_repeat(response: &str, word: &str, times: usize) -> (bool, bool) {
    let count = word_count_of(response, word);
    let r = response.trim();
    let body = r.strip_suffix('.').unwrap_or(r);
    let first = body.split(' ').next().unwrap_or_default();
    let formatted = !first.is_empty()
        && first.chars().all(|c| c.is_ascii_lowercase())
        && body.split(' ').all(|w| w == first);
    (count == times, formatted)
}

/// Occurrences of `word`, ignoring case and punctuation.
fn word_count_of(response: &str, word: &str) -> usize {
    bare_words(response).filter(|w| w == word).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_answer_line_else_the_last_integer() {
        assert_eq!(extract_answer("12 - 2 = 10. The answer is 10."), Some(10));
        assert_eq!(extract_answer("The answer is 7. No wait, 9"), Some(7));
        assert_eq!(extract_answer("So she has 7 flowers left."), Some(7));
        assert_eq!(extract_answer("the answer is -3."), Some(-3));
        assert_eq!(extract_answer("It is 5 - 8, so -3"), Some(-3));
        assert_eq!(extract_answer("no numbers"), None);
    }

    #[test]
    fn equations_are_checked() {
        assert!(equations_hold("She has 3 * 4 = 12. 12 - 2 = 10."));
        assert!(!equations_hold("12 - 2 = 11."));
        assert!(equations_hold("no maths here"));
    }

    #[test]
    fn number_runs() {
        assert_eq!(last_number_run("Sure! Here: 2, 5, 9."), Some(vec![2, 5, 9]));
        assert_eq!(last_number_run("2 5 and 9"), Some(vec![2, 5, 9]));
        assert_eq!(
            last_number_run("I see 3 numbers: 2, 5, 9"),
            Some(vec![2, 5, 9])
        );
        assert_eq!(last_number_run("just 4"), None);
    }
}
