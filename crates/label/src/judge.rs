//! AI feedback: a model behind an OpenAI-compatible endpoint ranks each prompt's responses.
//!
//! The judge sees the responses labelled A, B, C… and is asked for the letters best first,
//! `>` between ranks and `=` for ties (`B > A = C`). Answers are parsed leniently: brackets,
//! bold, "Response B", commas and arrows are accepted; of several lines the one naming the most
//! responses wins (or all lines read as one, for one response per line); responses it leaves
//! out tie last. An answer naming none, or a request the judge refuses (400, e.g. too long for
//! its context), is counted as unparsed and the prompt skipped.
//!
//! Not here: the HTTP client (`rlhf-client`).

use rlhf_client::types::ChatMessage;
use rlhf_client::{Ask, Llm};
use rlhf_data::{Ranking, RankingRecord, SampleRecord};

use crate::error::{LabelError, Result};

/// Letters for up to 26 responses.
fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

pub fn judge_prompt(prompt: &str, responses: &[String]) -> String {
    let mut text = format!(
        "Rank the responses to the instruction from best to worst. Judge correctness first, \
         then how well the instruction is followed, then concision. Reply with the letters \
         only, best first, with '>' between ranks and '=' for equally good responses, e.g. \
         {}.\n\n[Instruction]\n{prompt}\n",
        example(responses.len())
    );
    for (i, r) in responses.iter().enumerate() {
        text.push_str(&format!("\n[Response {}]\n{r}\n", letter(i)));
    }
    text.push_str("\nRanking:");
    text
}

fn example(k: usize) -> String {
    match k {
        2 => "B > A".into(),
        3 => "B > A = C".into(),
        _ => "B > A = D > C".into(),
    }
}

/// Parses one line: (groups of response indices, best first; distinct responses named).
fn parse_line(line: &str, k: usize) -> (Vec<Vec<usize>>, usize) {
    let chars: Vec<char> = line.chars().collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut seen = vec![false; k];
    let mut tie = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == '=' {
            tie = true;
            continue;
        }
        let standalone = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_none_or(|c| !c.is_alphanumeric())
        };
        let is_letter = c.is_ascii_uppercase()
            && ((c as u8 - b'A') as usize) < k
            && standalone(i.checked_sub(1))
            && standalone(Some(i + 1));
        if !is_letter {
            continue;
        }
        let idx = (c as u8 - b'A') as usize;
        if std::mem::replace(&mut seen[idx], true) {
            tie = false;
            continue;
        }
        match groups.last_mut() {
            Some(g) if tie => g.push(idx),
            _ => groups.push(vec![idx]),
        }
        tie = false;
    }
    let named = seen.iter().filter(|&&s| s).count();
    (groups, named)
}

/// The judge's ranking of `k` responses, or None when the answer names none of them.
pub fn parse_ranking(answer: &str, k: usize) -> Option<Ranking> {
    let line = answer
        .lines()
        .map(|l| parse_line(l, k))
        .fold((vec![], 0), |best, cur| {
            if cur.1 >= best.1 && cur.1 > 0 {
                cur
            } else {
                best
            }
        });
    // A ranking written one response per line ("1. D\n2. B…") names more across lines.
    let whole = parse_line(&answer.lines().collect::<Vec<_>>().join(" > "), k);
    let (mut groups, named) = if whole.1 > line.1 { whole } else { line };
    if named == 0 {
        return None;
    }
    let missing: Vec<usize> = (0..k)
        .filter(|i| !groups.iter().flatten().any(|j| j == i))
        .collect();
    if !missing.is_empty() {
        groups.push(missing);
    }
    Ranking::new(groups, k).ok()
}

/// What the judge produced: rankings, and how many prompts it could not rank.
pub struct Judged {
    pub records: Vec<RankingRecord>,
    pub unparsed: Vec<(usize, String)>,
}

/// Asks the judge `llm` to rank each sample's responses; `progress(done)` after each.
pub fn rank_all(
    llm: &Llm,
    samples: &[SampleRecord],
    mut progress: impl FnMut(usize),
) -> Result<Judged> {
    let mut judged = Judged {
        records: vec![],
        unparsed: vec![],
    };
    for (n, s) in samples.iter().enumerate() {
        if s.responses.len() > 26 {
            return Err(LabelError::Invalid(format!(
                "sample {}: the judge ranks at most 26 responses, got {}",
                n + 1,
                s.responses.len()
            )));
        }
        let messages = vec![
            ChatMessage::system("You are a careful, impartial judge of answers."),
            ChatMessage::user(judge_prompt(&s.prompt, &s.responses)),
        ];
        let ask = Ask {
            max_tokens: 32 + 4 * s.responses.len() as u32,
            temperature: 0.0,
            seed: None,
        };
        let answer = match llm.ask(messages, ask) {
            Ok(answer) => answer,
            // The judge refused this request (e.g. too long for its context): skip the sample,
            // keep going; server and network failures still stop the run.
            Err(e @ rlhf_client::ClientError::Status { status: 400, .. }) => {
                judged.unparsed.push((n + 1, format!("refused: {e}")));
                progress(n + 1);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match parse_ranking(&answer, s.responses.len()) {
            Some(ranking) => {
                let record = RankingRecord::new(s.prompt.clone(), s.responses.clone(), ranking)
                    .map_err(|e| LabelError::Invalid(format!("sample {}: {e}", n + 1)))?;
                judged.records.push(record);
            }
            None => judged.unparsed.push((n + 1, answer)),
        }
        progress(n + 1);
    }
    Ok(judged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(answer: &str, k: usize) -> Option<Vec<Vec<usize>>> {
        parse_ranking(answer, k).map(|r| r.groups().to_vec())
    }

    #[test]
    fn parses_the_usual_shapes_of_a_ranking() {
        assert_eq!(groups("B > A = C", 3), Some(vec![vec![1], vec![0, 2]]));
        assert_eq!(
            groups("**C**, [A], Response B", 3),
            Some(vec![vec![2], vec![0], vec![1]])
        );
        assert_eq!(
            groups("1. D\n2. B\n3. A\n4. C", 4),
            Some(vec![vec![3], vec![1], vec![0], vec![2]])
        );
        assert_eq!(
            groups("Sure! Here is my ranking.\nD > B > A > C", 4),
            Some(vec![vec![3], vec![1], vec![0], vec![2]])
        );
        // Unnamed responses tie last; repeats are ignored.
        assert_eq!(
            groups("C > C > A", 4),
            Some(vec![vec![2], vec![0], vec![1, 3]])
        );
        // Letters inside words and letters beyond K do not count.
        assert_eq!(groups("Both are ABSENT; E is best", 3), None);
        assert_eq!(groups("", 2), None);
    }

    #[test]
    fn the_prompt_labels_every_response() {
        let p = judge_prompt("Sort 3, 1", &["1, 3".into(), "3, 1".into()]);
        assert!(p.contains("[Response A]\n1, 3") && p.contains("[Response B]\n3, 1"));
        assert!(p.contains("B > A"));
    }
}
