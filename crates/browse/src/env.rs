//! The text browser an agent drives with WebGPT's commands (Nakano et al. 2021, table 1):
//!
//! | command | effect |
//! |---|---|
//! | `Search <query>` | BM25 search; the results page lists `[i] title: snippet` |
//! | `Clicked on link <i>` | opens result `i` of the results page on view |
//! | `Find in page: <text>` | moves the window to the next line containing the text (wrapping) |
//! | `Quote: <text>` | keeps the text as a numbered quote, only if it occurs on the page |
//! | `Scroll down` / `Scroll up` | moves the window one window's height |
//! | `Top` | back to the page's first line |
//! | `Back` | the previous view (a results page or another page) |
//! | `End: Answer` | stops browsing; the answer is written from the question and the quotes |
//!
//! The observation ([`Browser::render`]) is text: the question, the quotes so far, the last few
//! actions, a note about the last action (an error, "not found"), and the results or the
//! window of the page. A command that cannot apply (a quote that is not on the page, a link
//! that does not exist) leaves the state alone and says why in the note, as WebGPT's
//! environment does; it still counts as an action.
//!
//! A final answer cites quotes as `[1]`, `[2]`: [`parse_answer`] reads them and
//! [`check_citations`] verifies each cited quote against its page in the index.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::index::{Document, Hit, SearchIndex};

/// How the browser looks and how long an episode may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowseConfig {
    /// Results a search shows. 3.
    pub results: usize,
    /// Page lines in the window. 3.
    pub window: usize,
    /// Lines longer than this many characters are wrapped. 90.
    pub wrap: usize,
    /// Actions shown under "Past". 3.
    pub past: usize,
    /// Quotes an answer may collect. 3.
    pub max_quotes: usize,
    /// Characters of one quote at most. 200.
    pub max_quote_chars: usize,
    /// Actions before the episode is ended for the agent. 10.
    pub max_actions: usize,
}

impl Default for BrowseConfig {
    fn default() -> Self {
        Self {
            results: 3,
            window: 3,
            wrap: 90,
            past: 3,
            max_quotes: 3,
            max_quote_chars: 200,
            max_actions: 10,
        }
    }
}

/// One browsing command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Search(String),
    Click(usize),
    Find(String),
    Quote(String),
    ScrollDown,
    ScrollUp,
    Top,
    Back,
    Answer,
}

impl Command {
    /// Parses a command as the agent writes it (case of the keyword and spacing forgiven; the
    /// text after it is kept as written). The error says what was expected.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let lower = t.to_lowercase();
        let rest = |prefix: &str| t[prefix.len()..].trim().to_string();
        let nonempty = |what: &str, s: String| {
            if s.is_empty() {
                Err(format!("'{what}' needs text after it"))
            } else {
                Ok(s)
            }
        };
        if lower.starts_with("search ") || lower == "search" {
            return nonempty("Search", rest("search")).map(Self::Search);
        }
        if lower.starts_with("clicked on link") {
            let n = rest("clicked on link");
            return n
                .trim_start_matches('<')
                .trim_end_matches('>')
                .parse()
                .map(Self::Click)
                .map_err(|_| format!("'Clicked on link' needs a result number, found {n:?}"));
        }
        if lower.starts_with("find in page:") {
            return nonempty("Find in page:", rest("find in page:")).map(Self::Find);
        }
        if lower.starts_with("quote:") {
            return nonempty("Quote:", rest("quote:")).map(Self::Quote);
        }
        match lower.as_str() {
            "scroll down" => Ok(Self::ScrollDown),
            "scroll up" => Ok(Self::ScrollUp),
            "top" => Ok(Self::Top),
            "back" => Ok(Self::Back),
            "end: answer" => Ok(Self::Answer),
            _ => Err(format!(
                "unknown command {:?}: expected Search <query>, Clicked on link <i>, Find in \
                 page: <text>, Quote: <text>, Scroll down, Scroll up, Top, Back or End: Answer",
                cut(t, 40)
            )),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Search(q) => write!(f, "Search {q}"),
            Self::Click(i) => write!(f, "Clicked on link {i}"),
            Self::Find(t) => write!(f, "Find in page: {t}"),
            Self::Quote(t) => write!(f, "Quote: {t}"),
            Self::ScrollDown => f.write_str("Scroll down"),
            Self::ScrollUp => f.write_str("Scroll up"),
            Self::Top => f.write_str("Top"),
            Self::Back => f.write_str("Back"),
            Self::Answer => f.write_str("End: Answer"),
        }
    }
}

/// A quote the agent kept: verified to occur on the page at `url` when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// 1-based: what an answer cites as `[id]`.
    pub id: usize,
    pub text: String,
    pub url: String,
    pub title: String,
}

/// A page as the browser shows it: wrapped lines and the window's first line.
#[derive(Debug, Clone, PartialEq)]
struct Page {
    doc: Document,
    lines: Vec<String>,
    top: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum View {
    Blank,
    Results { query: String, hits: Vec<Hit> },
    Page(Page),
}

/// The browser's state for one question.
pub struct Browser<'a> {
    index: &'a SearchIndex,
    cfg: BrowseConfig,
    question: String,
    view: View,
    back: Vec<View>,
    quotes: Vec<Quote>,
    past: Vec<String>,
    note: Option<String>,
    actions: usize,
    done: bool,
}

impl<'a> Browser<'a> {
    pub fn new(index: &'a SearchIndex, question: &str, cfg: BrowseConfig) -> Self {
        Self {
            index,
            cfg,
            question: question.trim().to_string(),
            view: View::Blank,
            back: Vec::new(),
            quotes: Vec::new(),
            past: Vec::new(),
            note: None,
            actions: 0,
            done: false,
        }
    }

    pub fn question(&self) -> &str {
        &self.question
    }

    pub fn quotes(&self) -> &[Quote] {
        &self.quotes
    }

    pub fn actions(&self) -> usize {
        self.actions
    }

    /// True after `End: Answer` or when the action budget is spent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The note the last action left (an error or "not found"), if any.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The URL of the page on view, if a page is on view.
    pub fn page_url(&self) -> Option<&str> {
        match &self.view {
            View::Page(p) => Some(&p.doc.url),
            _ => None,
        }
    }

    /// The lines of the page window on view (empty unless a page is on view).
    pub fn visible_lines(&self) -> &[String] {
        match &self.view {
            View::Page(p) => &p.lines[p.top..(p.top + self.cfg.window).min(p.lines.len())],
            _ => &[],
        }
    }

    /// The results on view (empty unless a results page is on view).
    pub fn results(&self) -> &[Hit] {
        match &self.view {
            View::Results { hits, .. } => hits,
            _ => &[],
        }
    }

    /// Parses and applies the agent's text; text that is not a command is a wasted action with
    /// a note saying what was expected.
    pub fn act(&mut self, text: &str) -> Result<()> {
        match Command::parse(text) {
            Ok(cmd) => self.step(&cmd),
            Err(problem) => {
                self.count(cut(text.trim(), 40));
                self.note = Some(format!("Error: {problem}"));
                Ok(())
            }
        }
    }

    fn count(&mut self, shown: String) {
        self.past.push(shown);
        self.actions += 1;
        if self.actions >= self.cfg.max_actions {
            self.done = true;
        }
    }

    /// Applies one command.
    pub fn step(&mut self, cmd: &Command) -> Result<()> {
        if self.done {
            self.note = Some("Error: the episode has ended".into());
            return Ok(());
        }
        self.note = None;
        let w = self.cfg.window;
        match cmd {
            Command::Search(q) => {
                let hits = self.index.search(q, self.cfg.results)?;
                if hits.is_empty() {
                    self.note = Some(format!("No results for {q:?}"));
                }
                self.go(View::Results {
                    query: q.clone(),
                    hits,
                });
            }
            Command::Click(i) => match self.results().get(*i).cloned() {
                Some(hit) => match self.index.get(&hit.url)? {
                    Some(doc) => {
                        let lines = wrap_lines(&doc.text, self.cfg.wrap);
                        self.go(View::Page(Page { doc, lines, top: 0 }));
                    }
                    None => self.note = Some(format!("Error: page {} is gone", hit.url)),
                },
                None if matches!(self.view, View::Results { .. }) => {
                    self.note = Some(format!("Error: there is no link {i} on this page"))
                }
                None => self.note = Some("Error: no search results on view to click".into()),
            },
            Command::Find(text) => match &mut self.view {
                View::Page(p) => {
                    let needle = normalise(text);
                    let n = p.lines.len();
                    let hit = (1..=n)
                        .map(|k| (p.top + k) % n)
                        .find(|&i| normalise(&p.lines[i]).contains(&needle));
                    match hit {
                        Some(i) => p.top = i,
                        None => self.note = Some(format!("{text:?} not found on this page")),
                    }
                }
                _ => self.note = Some("Error: no page on view to search".into()),
            },
            Command::Quote(text) => self.quote(text),
            Command::ScrollDown | Command::ScrollUp | Command::Top => match &mut self.view {
                View::Page(p) => {
                    let last = p.lines.len().saturating_sub(1);
                    p.top = match cmd {
                        Command::ScrollDown if p.top + w > last => {
                            self.note = Some("Already at the end of the page".into());
                            p.top
                        }
                        Command::ScrollDown => p.top + w,
                        Command::ScrollUp => p.top.saturating_sub(w),
                        _ => 0,
                    };
                }
                _ => self.note = Some("Error: no page on view to scroll".into()),
            },
            Command::Back => match self.back.pop() {
                Some(v) => self.view = v,
                None => self.note = Some("Error: nothing to go back to".into()),
            },
            Command::Answer => self.done = true,
        }
        let shown = match cmd {
            Command::Quote(t) => format!("Quote: {}", cut(t, 30)),
            c => cut(&c.to_string(), 40),
        };
        self.count(shown);
        Ok(())
    }

    fn go(&mut self, view: View) {
        let old = std::mem::replace(&mut self.view, view);
        if old != View::Blank {
            self.back.push(old);
        }
    }

    fn quote(&mut self, text: &str) {
        let View::Page(p) = &self.view else {
            self.note = Some("Error: quotes come from a page; open one first".into());
            return;
        };
        let text = text.trim();
        if text.chars().count() > self.cfg.max_quote_chars {
            self.note = Some(format!(
                "Error: a quote is at most {} characters",
                self.cfg.max_quote_chars
            ));
        } else if self.quotes.len() >= self.cfg.max_quotes {
            self.note = Some(format!(
                "Error: already {} quotes, the most an answer may use",
                self.cfg.max_quotes
            ));
        } else if !occurs_in(text, &p.doc.text) {
            self.note = Some("Error: the quote is not on this page".into());
        } else if self
            .quotes
            .iter()
            .any(|q| normalise(&q.text) == normalise(text))
        {
            self.note = Some("Error: already quoted".into());
        } else {
            self.quotes.push(Quote {
                id: self.quotes.len() + 1,
                text: text.to_string(),
                url: p.doc.url.clone(),
                title: p.doc.title.clone(),
            });
        }
    }

    /// The observation: question, quotes, past actions, the last action's note, and the
    /// results or page window; the agent writes its next command after it.
    pub fn render(&self) -> String {
        let mut s = format!("Question: {}\n{}", self.question, self.render_quotes());
        let past = &self.past[self.past.len().saturating_sub(self.cfg.past)..];
        s += &format!(
            "Past: {}\n",
            if past.is_empty() {
                "none".to_string()
            } else {
                past.join(" | ")
            }
        );
        if let Some(n) = &self.note {
            s += &format!("Note: {n}\n");
        }
        match &self.view {
            View::Blank => s += "Page: blank\n",
            View::Results { query, hits } => {
                s += &format!("Results for {query}:\n");
                for (i, h) in hits.iter().enumerate() {
                    s += &format!("[{i}] {}: {}\n", h.title, h.snippet);
                }
            }
            View::Page(p) => {
                let end = (p.top + self.cfg.window).min(p.lines.len());
                s += &format!(
                    "Page: {} (lines {}-{} of {})\n",
                    p.doc.title,
                    p.top + 1,
                    end,
                    p.lines.len()
                );
                for l in &p.lines[p.top..end] {
                    s += l;
                    s.push('\n');
                }
            }
        }
        s + "Action:"
    }

    fn render_quotes(&self) -> String {
        if self.quotes.is_empty() {
            return "Quotes: none\n".into();
        }
        let mut s = "Quotes:\n".to_string();
        for q in &self.quotes {
            s += &format!("[{}] {}\n", q.id, q.text);
        }
        s
    }

    /// What the answer is written from: the question and the quotes (WebGPT's answering
    /// phase sees no page).
    pub fn answer_prompt(&self) -> String {
        answer_prompt(&self.question, &self.quotes)
    }
}

/// The answering prompt for `question` and `quotes`.
pub fn answer_prompt(question: &str, quotes: &[Quote]) -> String {
    let mut s = format!("Question: {question}\n");
    if quotes.is_empty() {
        s += "Quotes: none\n";
    } else {
        s += "Quotes:\n";
        for q in quotes {
            s += &format!("[{}] {}\n", q.id, q.text);
        }
    }
    s + "Answer:"
}

/// An answer with its citations removed and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitedAnswer {
    /// The answer without the `[n]` markers, whitespace collapsed.
    pub text: String,
    /// Cited quote ids in order of first appearance.
    pub cited: Vec<usize>,
}

/// Splits `[n]` citation markers from an answer ("Tasko [1]." → "Tasko.", [1]). A bracket
/// that does not hold a number stays in the text.
pub fn parse_answer(answer: &str) -> CitedAnswer {
    let mut text = String::new();
    let mut cited = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if after[..close].trim().parse::<usize>().is_ok() => {
                let n: usize = after[..close].trim().parse().expect("checked");
                if !cited.contains(&n) {
                    cited.push(n);
                }
                rest = &after[close + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    let text = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" .", ".")
        .replace(" ,", ",");
    CitedAnswer { text, cited }
}

/// What the citations of an answer are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Support {
    /// At least one citation, and every cited id names a quote.
    pub cites_quotes: bool,
    /// Every cited quote occurs, as quoted, on the page at its URL in the index.
    pub quotes_verified: bool,
    /// The answer's claim (its text without the final full stop) occurs in a cited quote, and
    /// both checks above hold: the answer is backed by its references.
    pub supported: bool,
}

/// Verifies an answer's citations against `quotes` and the pages in `index`.
pub fn check_citations(
    answer: &CitedAnswer,
    quotes: &[Quote],
    index: &SearchIndex,
) -> Result<Support> {
    let cited: Vec<&Quote> = answer
        .cited
        .iter()
        .filter_map(|&n| quotes.iter().find(|q| q.id == n))
        .collect();
    let cites_quotes = !answer.cited.is_empty() && cited.len() == answer.cited.len();
    let mut quotes_verified = cites_quotes;
    for q in &cited {
        let on_page = index
            .get(&q.url)?
            .is_some_and(|page| occurs_in(&q.text, &page.text));
        quotes_verified &= on_page;
    }
    let claim = normalise(answer.text.trim_end_matches('.'));
    let in_quote = !claim.is_empty()
        && cited
            .iter()
            .any(|q| contains_words(&normalise(&q.text), &claim));
    Ok(Support {
        cites_quotes,
        quotes_verified,
        supported: cites_quotes && quotes_verified && in_quote,
    })
}

/// Whether `quote` occurs in `page`, ignoring case and runs of whitespace (wrapped lines).
pub fn occurs_in(quote: &str, page: &str) -> bool {
    let q = normalise(quote);
    !q.is_empty() && normalise(page).contains(&q)
}

/// Lower case, whitespace collapsed to single spaces.
pub fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `needle` occurs in `hay` as whole words.
fn contains_words(hay: &str, needle: &str) -> bool {
    let word = |c: char| c.is_alphanumeric();
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back().is_none_or(|c| !word(c));
        let after = hay[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !word(c));
        before && after
    })
}

/// The page's non-empty lines, each wrapped at `width` characters on word boundaries.
pub fn wrap_lines(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut cur = String::new();
        for w in line.split_whitespace() {
            if !cur.is_empty() && cur.chars().count() + 1 + w.chars().count() > width {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(w);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}
