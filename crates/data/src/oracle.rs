//! The oracle: the gold-standard scorer of a response to a task-world prompt, and the "human"
//! behind every simulated labeler. Correctness first, then format, then length, weighted so the
//! order is lexicographic: any correct response outscores any wrong one, and within a class a
//! well-formatted response outscores a sloppy one whatever their lengths.
//!
//! It recognises prompts by parsing them (`Task::parse`), not by lookup. It does not rank or add
//! noise; that is `labeler.rs`.

use crate::error::Result;
use crate::world::lists::ListAnswer;
use crate::world::words::count_words;
use crate::world::{Task, arithmetic::WordProblem};

/// Reward for a correct answer. It exceeds the largest possible rest of the score
/// (`FORMAT_REWARD`), so correctness dominates.
pub const CORRECT_REWARD: f64 = 1.0;
/// Reward for following the format (answer line, list shape, one sentence, bare repetition).
/// It exceeds `LENGTH_PENALTY_CAP`, so format dominates length.
pub const FORMAT_REWARD: f64 = 0.3;
/// Penalty per character beyond the length budget: 100 surplus characters cost 0.1.
pub const LENGTH_PENALTY_PER_CHAR: f64 = 0.001;
/// Most the length penalty can take, below `FORMAT_REWARD` to keep the order lexicographic.
pub const LENGTH_PENALTY_CAP: f64 = 0.2;

/// The oracle's verdict on one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grade {
    /// The answer (or the constraint) is right.
    pub correct: bool,
    /// The response has the clean format of its family.
    pub formatted: bool,
    /// Characters beyond the length budget.
    pub chars_over: usize,
    /// `CORRECT_REWARD·correct + FORMAT_REWARD·formatted − length penalty`.
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
            let e = t.entity();
            let named = response
                .split_whitespace()
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric())
                        .to_lowercase()
                })
                .any(|w| w == e.noun || w == e.plural);
            let correct = named && count_words(response) == t.words();
            (correct, one_sentence(response))
        }
        Task::Repeat(t) => check_repeat(response, t.word(), t.times()),
    };
    let chars_over = response
        .trim()
        .chars()
        .count()
        .saturating_sub(length_budget(task));
    let penalty = (chars_over as f64 * LENGTH_PENALTY_PER_CHAR).min(LENGTH_PENALTY_CAP);
    let score = CORRECT_REWARD * f64::from(u8::from(correct))
        + FORMAT_REWARD * f64::from(u8::from(formatted))
        - penalty;
    Grade {
        correct,
        formatted,
        chars_over,
        score,
    }
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
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let num = |t: &str| {
        t.trim_end_matches(['.', ',', ';', ':', '!', '?'])
            .parse::<i64>()
            .ok()
    };
    tokens.windows(5).all(|w| {
        let (Some(a), Some(b), Some(c)) = (num(w[0]), num(w[2]), num(w[4])) else {
            return true;
        };
        if w[3] != "=" {
            return true;
        }
        let value = match w[1] {
            "+" => a.checked_add(b),
            "-" => a.checked_sub(b),
            "*" | "x" | "×" => a.checked_mul(b),
            _ => return true,
        };
        value == Some(c)
    })
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
    let count = response
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| w == word)
        .count();
    let r = response.trim();
    let body = r.strip_suffix('.').unwrap_or(r);
    let first = body.split(' ').next().unwrap_or_default();
    let formatted = !first.is_empty()
        && first.chars().all(|c| c.is_ascii_lowercase())
        && body.split(' ').all(|w| w == first);
    (count == times, formatted)
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
