//! An LLM as a pairwise judge: shown an instruction and two responses, it answers A or B. Each
//! pair is asked twice with the order swapped, so that position bias (judges favour the first
//! answer) cancels and a judge that always says "A" scores exactly 0.5.
//!
//! Not here: the endpoint and its defaults (`rlhf_client::Endpoint`), the K-way ranking prompt of
//! AI feedback (`rlhf_label::judge`).

use rlhf_client::{Ask, ChatMessage, Endpoint, Llm};

use crate::error::Result;
use crate::judge::Verdicts;

/// A connected LLM judge.
#[derive(Debug)]
pub struct LlmJudge {
    pub llm: Llm,
}

impl LlmJudge {
    /// Connects to the endpoint (resolving the model name when none was given).
    pub fn connect(endpoint: &Endpoint) -> Result<Self> {
        Ok(Self {
            llm: endpoint.connect()?,
        })
    }

    /// 'A' or 'B' as the judge answered for (`first`, `second`), `None` when it named neither.
    pub fn choose(&self, prompt: &str, first: &str, second: &str) -> Result<Option<char>> {
        let question = format!(
            "Which response follows the instruction better? Judge correctness first, then \
             format, then concision. Answer with a single letter: A or B.\n\n\
             [Instruction]\n{prompt}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n\
             Answer (A or B):"
        );
        let messages = vec![
            ChatMessage::system("You are a careful, impartial judge."),
            ChatMessage::user(question),
        ];
        let ask = Ask {
            max_tokens: 8,
            temperature: 0.0,
            seed: None,
        };
        Ok(parse_letter(&self.llm.ask(messages, ask)?))
    }

    /// A's outcome against B per prompt: the mean of the two orders' verdicts, an answer that is
    /// neither letter counting as a tie.
    pub fn verdicts(
        &self,
        prompts: &[String],
        a: &[String],
        b: &[String],
        mut progress: impl FnMut(usize),
    ) -> Result<Verdicts> {
        let (mut outcomes, mut unparsed) = (Vec::with_capacity(prompts.len()), 0);
        for (i, ((p, a), b)) in prompts.iter().zip(a).zip(b).enumerate() {
            let first = self.choose(p, a, b)?;
            let second = self.choose(p, b, a)?;
            let half = |v: Option<char>, a_letter: char| match v {
                Some(c) => f64::from(u8::from(c == a_letter)),
                None => 0.5,
            };
            unparsed += usize::from(first.is_none()) + usize::from(second.is_none());
            outcomes.push((half(first, 'A') + half(second, 'B')) / 2.0);
            progress(i + 1);
        }
        Ok(Verdicts {
            scores: None,
            outcomes,
            unparsed,
        })
    }
}

/// "A", "**B**", "Response A.", "(b)" → the letter; anything else → None.
pub fn parse_letter(answer: &str) -> Option<char> {
    let t = answer.trim_matches(|c: char| !c.is_alphanumeric());
    let t = t
        .strip_prefix("Response ")
        .or_else(|| t.strip_prefix("response "))
        .unwrap_or(t);
    match t {
        "A" | "a" => Some('A'),
        "B" | "b" => Some('B'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters() {
        for (s, want) in [
            ("A", Some('A')),
            (" **B**\n", Some('B')),
            ("Response A.", Some('A')),
            ("(b)", Some('B')),
        ] {
            assert_eq!(parse_letter(s), want, "{s:?}");
        }
        for s in ["", "AB", "A is better than B", "C"] {
            assert_eq!(parse_letter(s), None, "{s:?}");
        }
    }
}
