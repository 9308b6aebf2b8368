//! The entity world of experiment E7: invented towns whose facts (river, mayor, what they are
//! known for, the colour of their flag) are drawn anew for every seed, so that no model can
//! answer closed-book better than chance. Each town has one page; pages mention other towns
//! (trade partners), so a search returns distractors. Questions ask one fact of one town.
//!
//! [`EntityWorld::demonstration`] drives the real [`Browser`] with a scripted, noisy demonstrator
//! (search the town, sometimes open a wrong result and go back, find or scroll to the fact, quote
//! it, answer citing the quote; sometimes quote the wrong line or answer something the quotes do
//! not say), which is what behaviour cloning learns from. [`grade`] is the oracle: is the answer
//! right, and is it supported by its verified quotes.

use std::collections::HashSet;

use rand::RngCore;
use rlhf_data::rng::{below, chance, invented_word, pick, shuffle};
use rlhf_data::world_rng;
use serde::{Deserialize, Serialize};

use crate::env::{
    BrowseConfig, Browser, CitedAnswer, Command, Support, check_citations, parse_answer,
};
use crate::error::{BrowseError, Result};
use crate::index::{Document, SearchIndex};

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pa", "se", "do", "ri", "fu", "ba", "te", "gi",
    "mo", "la", "su", "ne", "vi", "ko", "da", "ru",
];
const REGIONS: [&str; 8] = [
    "northern", "southern", "eastern", "western", "high", "low", "green", "rocky",
];
const EXPORTS: [&str; 16] = [
    "wool", "salt", "glass", "cheese", "honey", "rope", "paper", "silver", "pottery", "wine",
    "timber", "soap", "leather", "copper", "tea", "bread",
];
const COLOURS: [&str; 8] = [
    "red", "blue", "green", "yellow", "white", "black", "purple", "orange",
];
/// Invented river and mayor names per seed.
const NAMES_PER_POOL: usize = 24;

/// The fact a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attr {
    River,
    Mayor,
    Export,
    Flag,
}

impl Attr {
    pub const ALL: [Attr; 4] = [Attr::River, Attr::Mayor, Attr::Export, Attr::Flag];

    /// The words a demonstrator types into "Find in page:".
    pub fn keyword(self) -> &'static str {
        match self {
            Attr::River => "river",
            Attr::Mayor => "mayor",
            Attr::Export => "known for",
            Attr::Flag => "flag",
        }
    }
}

/// One town and its facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Town {
    pub name: String,
    pub region: String,
    pub river: String,
    pub mayor: String,
    pub export: String,
    pub flag: String,
    pub bridges: u32,
    /// Index of the town it trades with.
    pub partner: usize,
    /// The order of the six fact lines on its page.
    pub order: Vec<usize>,
}

impl Town {
    pub fn fact(&self, attr: Attr) -> &str {
        match attr {
            Attr::River => &self.river,
            Attr::Mayor => &self.mayor,
            Attr::Export => &self.export,
            Attr::Flag => &self.flag,
        }
    }
}

/// A question about one fact of one town.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub text: String,
    pub answer: String,
    pub town: usize,
    pub attr: Attr,
}

/// The demonstrator's mistakes, as probabilities per demonstration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoNoise {
    /// Opens a wrong result first, then goes Back. 0.15.
    pub wrong_click: f64,
    /// Scrolls past the fact and back up. 0.1.
    pub extra_scroll: f64,
    /// Quotes another fact line of the page and answers from it (wrong but "supported"). 0.1.
    pub wrong_quote: f64,
    /// Quotes the right line but answers a value the quotes do not hold. 0.1.
    pub unsupported: f64,
}

impl Default for DemoNoise {
    fn default() -> Self {
        Self {
            wrong_click: 0.15,
            extra_scroll: 0.1,
            wrong_quote: 0.1,
            unsupported: 0.1,
        }
    }
}

/// One step of a demonstration: what the browser showed and what the demonstrator typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoStep {
    pub observation: String,
    pub action: String,
}

/// A whole demonstration: the browsing steps, then the answer written from the quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demonstration {
    pub steps: Vec<DemoStep>,
    pub answer_prompt: String,
    pub answer: String,
}

/// The oracle's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub correct: bool,
    pub support: Support,
    /// 1 for a right answer, plus 0.5 when it is supported: a labeler prefers right answers,
    /// and among those, ones backed by their references.
    pub score: f64,
}

/// The oracle: compares the answer (citations removed, case and a final full stop ignored) with
/// the town's fact, and verifies its citations.
pub fn grade(
    q: &Question,
    answer: &str,
    quotes: &[crate::env::Quote],
    index: &SearchIndex,
) -> Result<Grade> {
    let parsed: CitedAnswer = parse_answer(answer);
    let support = check_citations(&parsed, quotes, index)?;
    let said = parsed
        .text
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_lowercase();
    let correct = said == q.answer.to_lowercase();
    Ok(Grade {
        correct,
        support,
        score: f64::from(u8::from(correct)) + 0.5 * f64::from(u8::from(support.supported)),
    })
}

/// The world of one seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityWorld {
    pub seed: u64,
    pub towns: Vec<Town>,
    pub rivers: Vec<String>,
    pub mayors: Vec<String>,
}

impl EntityWorld {
    pub fn new(seed: u64, towns: usize) -> Result<Self> {
        if towns < 2 {
            return Err(BrowseError::Invalid(
                "the entity world needs at least 2 towns".into(),
            ));
        }
        let mut rng = world_rng(seed, 0xB40E);
        let mut seen = HashSet::new();
        let rivers: Vec<String> = (0..NAMES_PER_POOL)
            .map(|_| invented_word(&mut rng, &SYLLABLES, 2, &mut seen))
            .collect();
        let mayors: Vec<String> = (0..NAMES_PER_POOL)
            .map(|_| invented_word(&mut rng, &SYLLABLES, 2, &mut seen))
            .collect();
        let towns = (0..towns)
            .map(|i| {
                let mut order: Vec<usize> = (0..6).collect();
                shuffle(&mut rng, &mut order);
                let mut partner = below(&mut rng, towns - 1);
                if partner >= i {
                    partner += 1;
                }
                Town {
                    name: invented_word(&mut rng, &SYLLABLES, 3, &mut seen),
                    region: pick(&mut rng, &REGIONS).to_string(),
                    river: pick(&mut rng, &rivers).clone(),
                    mayor: pick(&mut rng, &mayors).clone(),
                    export: pick(&mut rng, &EXPORTS).to_string(),
                    flag: pick(&mut rng, &COLOURS).to_string(),
                    bridges: 2 + below(&mut rng, 30) as u32,
                    partner,
                    order,
                }
            })
            .collect();
        Ok(Self {
            seed,
            towns,
            rivers,
            mayors,
        })
    }

    /// The accuracy of guessing each question's answer uniformly from its pool, averaged over
    /// the four kinds of question: what closed-book answering can reach.
    pub fn chance(&self) -> f64 {
        let pools = [
            self.rivers.len(),
            self.mayors.len(),
            EXPORTS.len(),
            COLOURS.len(),
        ];
        pools.iter().map(|&n| 1.0 / n as f64).sum::<f64>() / pools.len() as f64
    }

    /// The lines of town `i`'s page: an introduction, then six facts in the town's order.
    pub fn page_lines(&self, i: usize) -> Vec<String> {
        let t = &self.towns[i];
        let partner = &self.towns[t.partner].name;
        let facts = [
            format!("The river {} flows through {}.", t.river, t.name),
            format!("The mayor of {} is {}.", t.name, t.mayor),
            format!("{} is known for its {}.", t.name, t.export),
            format!("The flag of {} is {}.", t.name, t.flag),
            format!("{} trades with {}.", t.name, partner),
            format!("{} has {} bridges.", t.name, t.bridges),
        ];
        let mut lines = vec![format!("{} is a town in the {} hills.", t.name, t.region)];
        lines.extend(t.order.iter().map(|&k| facts[k].clone()));
        lines
    }

    /// The line of town `i`'s page that states `attr`.
    pub fn fact_line(&self, i: usize, attr: Attr) -> String {
        let k = Attr::ALL.iter().position(|&a| a == attr).expect("in ALL");
        let lines = self.page_lines(i);
        let at = self.towns[i]
            .order
            .iter()
            .position(|&o| o == k)
            .expect("a permutation");
        lines[1 + at].clone()
    }

    /// One page per town.
    pub fn documents(&self) -> Vec<Document> {
        (0..self.towns.len())
            .map(|i| Document {
                url: format!("town/{i}"),
                title: self.towns[i].name.clone(),
                text: self.page_lines(i).join("\n"),
            })
            .collect()
    }

    /// Every question (four per town) about the towns in `towns`.
    pub fn questions(&self, towns: std::ops::Range<usize>) -> Vec<Question> {
        towns
            .flat_map(|i| Attr::ALL.iter().map(move |&a| (i, a)))
            .map(|(i, attr)| {
                let t = &self.towns[i];
                let text = match attr {
                    Attr::River => format!("Which river flows through {}?", t.name),
                    Attr::Mayor => format!("Who is the mayor of {}?", t.name),
                    Attr::Export => format!("What is {} known for?", t.name),
                    Attr::Flag => format!("What color is the flag of {}?", t.name),
                };
                Question {
                    text,
                    answer: t.fact(attr).to_string(),
                    town: i,
                    attr,
                }
            })
            .collect()
    }

    /// A scripted demonstration for `q`, run through the real browser (so every observation is
    /// exactly what a model will see). The noise makes some demonstrations wrong on purpose.
    pub fn demonstration(
        &self,
        q: &Question,
        index: &SearchIndex,
        cfg: BrowseConfig,
        noise: &DemoNoise,
        rng: &mut dyn RngCore,
    ) -> Result<Demonstration> {
        let town = &self.towns[q.town];
        let mut b = Browser::new(index, &q.text, cfg);
        let mut steps = Vec::new();
        let mut act = |b: &mut Browser, cmd: Command| -> Result<()> {
            steps.push(DemoStep {
                observation: b.render(),
                action: cmd.to_string(),
            });
            b.step(&cmd)?;
            match b.note() {
                Some(n) if n.starts_with("Error") => Err(BrowseError::Invalid(format!(
                    "the demonstrator's {cmd} failed for {:?}: {n}",
                    q.text
                ))),
                _ => Ok(()),
            }
        };
        act(&mut b, Command::Search(town.name.clone()))?;
        let right = b.results().iter().position(|h| h.title == town.name);
        let Some(right) = right else {
            return Err(BrowseError::Invalid(format!(
                "searching {:?} did not list its page among {} results",
                town.name, cfg.results
            )));
        };
        let n_hits = b.results().len();
        if n_hits > 1 && chance(rng, noise.wrong_click) {
            let mut wrong = below(rng, n_hits - 1);
            if wrong >= right {
                wrong += 1;
            }
            act(&mut b, Command::Click(wrong))?;
            act(&mut b, Command::Back)?;
        }
        act(&mut b, Command::Click(right))?;
        let wrong_quote = chance(rng, noise.wrong_quote);
        let target_attr = if wrong_quote {
            let others: Vec<Attr> = Attr::ALL.into_iter().filter(|&a| a != q.attr).collect();
            *pick(rng, &others)
        } else {
            q.attr
        };
        let line = self.fact_line(q.town, target_attr);
        let visible = |b: &Browser| b.visible_lines().contains(&line);
        if !visible(&b) {
            if chance(rng, 0.5) {
                act(&mut b, Command::Find(target_attr.keyword().to_string()))?;
            }
            while !visible(&b) {
                act(&mut b, Command::ScrollDown)?;
            }
        }
        if chance(rng, noise.extra_scroll) && b.note().is_none() {
            act(&mut b, Command::ScrollDown)?;
            if b.note().is_none() {
                act(&mut b, Command::ScrollUp)?;
            }
            while !visible(&b) {
                act(&mut b, Command::ScrollUp)?;
            }
        }
        act(&mut b, Command::Quote(line.clone()))?;
        act(&mut b, Command::Answer)?;
        let value = if chance(rng, noise.unsupported) {
            let pool: Vec<&str> = match q.attr {
                Attr::River => self.rivers.iter().map(String::as_str).collect(),
                Attr::Mayor => self.mayors.iter().map(String::as_str).collect(),
                Attr::Export => EXPORTS.to_vec(),
                Attr::Flag => COLOURS.to_vec(),
            };
            let claim = pool
                .iter()
                .filter(|v| !line.to_lowercase().contains(&v.to_lowercase()))
                .copied()
                .collect::<Vec<_>>();
            pick(rng, &claim).to_string()
        } else {
            town.fact(target_attr).to_string()
        };
        Ok(Demonstration {
            steps,
            answer_prompt: b.answer_prompt(),
            answer: format!("{value} [1]."),
        })
    }
}
