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
    stops: Vec<String>,
    /// What has been handed out so far; always a prefix of the text.
    sent: String,
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
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
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
        // A stop sequence may start inside sent text only if that text was held back as its
        // prefix, which never happens; searching from a little before `from` is still needed
        // when the sent part changes its ending (it cannot: it is final).
        self.stops
            .iter()
            .filter_map(|s| full.find(s.as_str()))
            .min()
            .map(|cut| cut.max(from))
    }

    /// Bytes at the end that may not be sent yet.
    fn held_back(&self, full: &str) -> usize {
        let partial_char = full.len() - full.trim_end_matches('\u{FFFD}').len();
        let stop_prefix = self
            .stops
            .iter()
            .filter_map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|&k| s.is_char_boundary(k))
                    .find(|&k| full.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
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

    #[test]
    fn without_stops_everything_streams_and_equals_the_text() {
        let (d, stopped) = stream(&[], &["one", " two", " three"]);
        assert!(!stopped);
        assert_eq!(d.concat(), "one two three");
        assert_eq!(d[0], "one");
    }
}
