//! A choice's text as its tokens arrive: where a stop sequence cuts it, and how much of it can be
//! sent to a streaming client without ever taking text back.
//!
//! Text is held back while it could still turn into a stop sequence (a suffix that is a prefix of
//! one) or while the last token ends inside a UTF-8 character (decoded as U+FFFD). Streamed and
//! non-streamed answers are both the concatenation of the pieces `push` and `finish` return, so
//! they are equal whenever the tokens are.
//!
//! Not here: decoding tokens (the engine), the wire format (the API).

#[derive(Debug, Clone, Default)]
pub struct StopText {
    stops: Vec<Stop>,
    /// What has been handed out so far; always a prefix of the text.
    sent: String,
}

/// A stop sequence with its KMP failure table, so that finding how much of it the text ends
/// with costs O(its length) per token, not O(length²).
#[derive(Debug, Clone, Default)]
struct Stop {
    text: String,
    /// `fail[i]`: the length of the longest proper prefix of `text[..=i]` that is also its
    /// suffix (bytes).
    fail: Vec<usize>,
}

impl Stop {
    fn new(text: String) -> Self {
        let b = text.as_bytes();
        let mut fail = vec![0; b.len()];
        let mut k = 0;
        for i in 1..b.len() {
            while k > 0 && b[i] != b[k] {
                k = fail[k - 1];
            }
            if b[i] == b[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Self { text, fail }
    }

    /// The longest proper prefix of the stop that `full` ends with (bytes). Only the last
    /// `len - 1` bytes of `full` can take part, so the work is bounded by the stop's length.
    fn held(&self, full: &str) -> usize {
        let (s, f) = (self.text.as_bytes(), full.as_bytes());
        let tail = &f[f.len().saturating_sub(s.len().saturating_sub(1))..];
        let mut k = 0;
        for &c in tail {
            while k > 0 && (k == s.len() || c != s[k]) {
                k = self.fail[k - 1];
            }
            if c == s[k] {
                k += 1;
            }
        }
        // A whole match is a stop (found by `first_stop`), not a prefix to hold.
        if k == s.len() { self.fail[k - 1] } else { k }
    }
}

/// What a new token changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Text that is now final and can be sent.
    pub delta: String,
    /// A stop sequence appeared: the text ends before it.
    pub stopped: bool,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(Stop::new)
            .collect();
        Self {
            stops,
            sent: String::new(),
        }
    }

    /// Everything handed out so far.
    pub fn sent(&self) -> &str {
        &self.sent
    }

    /// Takes the whole decoded text after a new token.
    pub fn push(&mut self, full: &str) -> Step {
        let from = self.sent.len();
        if let Some(cut) = self.first_stop(full, from) {
            return Step {
                delta: self.advance(full, cut),
                stopped: true,
            };
        }
        let safe = full.len() - self.held_back(full);
        Step {
            delta: self.advance(full, safe),
            stopped: false,
        }
    }

    /// The rest of the text when generation ends without a stop sequence (EOS or length).
    pub fn finish(&mut self, full: &str) -> String {
        match self.first_stop(full, self.sent.len()) {
            Some(cut) => self.advance(full, cut),
            None => self.advance(full, full.len()),
        }
    }

    /// Byte offset of the earliest stop sequence that ends after `from` (text before `from` was
    /// already checked and sent).
    fn first_stop(&self, full: &str, from: usize) -> Option<usize> {
        // Sent text never holds a stop nor ends with a stop's prefix (that is held back), so a
        // stop can only start at `from` or later: only the new text is searched, and the work
        // per token is bounded by the new text plus the stops, not by the whole answer.
        let start = (0..=from.min(full.len()))
            .rev()
            .find(|&i| full.is_char_boundary(i))
            .unwrap_or(0);
        self.stops
            .iter()
            .filter(|s| s.text.len() <= full.len() - start)
            .filter_map(|s| full[start..].find(s.text.as_str()).map(|i| start + i))
            .min()
            .map(|cut| cut.max(from))
    }

    /// Bytes at the end that may not be sent yet.
    fn held_back(&self, full: &str) -> usize {
        let partial_char = full.len() - full.trim_end_matches('\u{FFFD}').len();
        // A byte-wise match of a stop's prefix against the end of valid UTF-8 text ends on a
        // character boundary of both, so no boundary check is needed.
        let stop_prefix = self.stops.iter().map(|s| s.held(full)).max().unwrap_or(0);
        partial_char.max(stop_prefix)
    }

    /// Hands out `full[sent..end]` if the text still extends what was sent.
    fn advance(&mut self, full: &str, end: usize) -> String {
        let from = self.sent.len();
        if end <= from || !full.starts_with(self.sent.as_str()) || !full.is_char_boundary(end) {
            return String::new();
        }
        let delta = full[from..end].to_string();
        self.sent.push_str(&delta);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds growing prefixes (one per "token") and returns the deltas and whether it stopped.
    fn stream(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut st = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let (mut full, mut out) = (String::new(), vec![]);
        for p in pieces {
            full.push_str(p);
            let step = st.push(&full);
            out.push(step.delta);
            if step.stopped {
                return (out, true);
            }
        }
        out.push(st.finish(&full));
        (out, false)
    }

    #[test]
    fn stop_sequence_is_cut_and_its_prefix_never_sent() {
        let (d, stopped) = stream(&["\n\nUser:"], &["Hi", " there", "\n", "\nUs", "er:", " x"]);
        assert!(stopped);
        assert_eq!(d, vec!["Hi", " there", "", "", ""]);
        assert_eq!(d.concat(), "Hi there");
    }

    #[test]
    fn a_false_alarm_is_released_later() {
        let (d, stopped) = stream(&["END"], &["a", "E", "N", "d", "!"]);
        assert!(!stopped);
        assert_eq!(d, vec!["a", "", "", "ENd", "!", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins_and_it_can_arrive_inside_one_token() {
        let (d, stopped) = stream(&["c", "b"], &["a", "xbyc"]);
        assert!(stopped);
        assert_eq!(d.concat(), "ax");
    }

    #[test]
    fn partial_utf8_is_held_until_complete() {
        let mut st = StopText::new(vec![]);
        assert_eq!(st.push("a\u{FFFD}").delta, "a");
        assert_eq!(st.push("aé").delta, "é");
        assert_eq!(st.finish("aé!"), "!");
        assert_eq!(st.sent(), "aé!");
    }

    /// The held-back length equals the brute-force definition (longest proper prefix of a stop
    /// that the text ends with) on periodic and overlapping stops.
    #[test]
    fn kmp_hold_equals_the_definition() {
        let brute = |s: &str, full: &str| {
            (1..s.len())
                .rev()
                .filter(|&k| s.is_char_boundary(k))
                .find(|&k| full.ends_with(&s[..k]))
                .unwrap_or(0)
        };
        let stops = ["aab", "abab", "aaaa", "abcabd", "é€é", "x"];
        let texts = [
            "", "a", "aa", "aaa", "aaab", "aba", "ababa", "abcab", "xxabcabc", "é€", "é",
        ];
        for s in stops {
            let stop = Stop::new(s.to_string());
            for t in texts {
                assert_eq!(stop.held(t), brute(s, t), "stop {s:?} text {t:?}");
            }
        }
    }

    /// Four stops of 250 kB against a growing answer: the matching work per token is bounded by
    /// the stops' length (it was quadratic in it: minutes for one token).
    #[test]
    fn long_stops_cost_linear_work() {
        let stops: Vec<String> = (0..4)
            .map(|i| format!("{}{i}", "ab".repeat(125_000)))
            .collect();
        let mut st = StopText::new(stops);
        let mut full = String::new();
        let t0 = std::time::Instant::now();
        for _ in 0..1000 {
            full.push_str("ab");
            st.push(&full);
        }
        assert!(t0.elapsed().as_secs_f64() < 2.0, "{:?}", t0.elapsed());
        assert_eq!(
            st.sent(),
            "",
            "the text is a prefix of every stop: nothing may be sent"
        );
    }

    #[test]
    fn without_stops_everything_streams_and_equals_the_text() {
        let (d, stopped) = stream(&[], &["one", " two", " three"]);
        assert!(!stopped);
        assert_eq!(d.concat(), "one two three");
        assert_eq!(d[0], "one");
    }
}
