//! The parser of arithmetic word problems: the inverse of `WordProblem::prompt`, matching each
//! sentence against the same templates and checking that names, pronouns and objects agree.
//!
//! It only recognises the generator's grammar; the oracle relies on it to recognise prompts.

use super::{
    CONTAINERS, Captures, EVENTS, Event, Gender, OBJECTS, QUESTIONS, RELATIVES, START_GROUPS,
    STARTS, Start, WordProblem, capitalize, gender_of, matches, sentences,
};

/// Parses a prompt of this grammar back into its problem; `Err` says why it is not one.
pub(crate) fn parse(prompt: &str) -> Result<WordProblem, String> {
    let parts = sentences(prompt);
    let [first, middle @ .., last] = parts.as_slice() else {
        return Err("a word problem has a statement and a question".into());
    };
    let (name, gender, object, start) = parse_start(first)?;
    let mut p = WordProblem {
        name,
        gender,
        object,
        start,
        events: Vec::new(),
        question: 0,
    };
    for s in middle {
        let ev = (0..EVENTS.len())
            .find_map(|t| parse_event(&p, t, s))
            .ok_or_else(|| format!("unrecognised sentence {s:?}"))?;
        p.events.push(ev);
    }
    p.question = (0..QUESTIONS.len())
        .find(|&q| matches(QUESTIONS[q].0, last).is_some_and(|c| common_ok(&p, &c)))
        .ok_or_else(|| format!("unrecognised question {last:?}"))?;
    Ok(p)
}

type Parsed = (&'static str, Gender, &'static str, Start);

fn parse_start(s: &str) -> Result<Parsed, String> {
    let known = |c: &Captures<'_, '_>| -> Option<(&'static str, Gender, &'static str)> {
        let name = c.get("name")?;
        let gender = gender_of(name)?;
        let name = super::super::vocab::all_names()
            .find(|(n, _)| *n == name)?
            .0;
        let object = *OBJECTS.iter().find(|o| Some(**o) == c.get("things"))?;
        Some((name, gender, object))
    };
    for (template, t) in STARTS.iter().enumerate() {
        if let Some(c) = matches(t, s) {
            if let (Some((name, g, obj)), Some(n)) = (known(&c), c.number("n")) {
                return Ok((name, g, obj, Start::Has { template, n }));
            }
        }
    }
    if let Some(c) = matches(START_GROUPS, s) {
        let container = CONTAINERS.iter().find(|b| Some(**b) == c.get("boxes"));
        if let (Some((name, g, obj)), Some(k), Some(m), Some(container)) =
            (known(&c), c.number("k"), c.number("m"), container)
        {
            return Ok((name, g, obj, Start::Groups { k, m, container }));
        }
    }
    Err(format!("unrecognised first sentence {s:?}"))
}

/// Slots shared by every sentence: the name, pronoun and object must agree with the start.
fn common_ok(p: &WordProblem, c: &Captures<'_, '_>) -> bool {
    c.iter().all(|(slot, v)| match slot {
        "name" => v == p.name,
        "things" => v == p.object,
        "pron" => v == p.gender.subject_lower(),
        _ => true,
    })
}

fn parse_event(p: &WordProblem, template: usize, s: &str) -> Option<Event> {
    let t = &EVENTS[template];
    let c = matches(t.text, s)?;
    let g = p.gender;
    let mut by_name = false;
    for (slot, v) in c.iter() {
        let ok = match slot {
            "subj" => {
                by_name = v == p.name;
                by_name || v == g.subject()
            }
            "Poss" => v == capitalize(g.possessive()),
            "poss" => v == g.possessive(),
            "objp" => v == g.object(),
            "rel" | "rel2" => RELATIVES.contains(&v),
            "a" | "b" => c.number(slot).is_some(),
            _ => common_ok(p, &c),
        };
        if !ok {
            return None;
        }
    }
    let numbers = ["a", "b"].iter().filter_map(|s| c.number(s)).collect();
    let relatives = ["rel", "rel2"]
        .iter()
        .filter_map(|s| c.get(s))
        .filter_map(|v| RELATIVES.iter().copied().find(|r| *r == v))
        .collect();
    Some(Event {
        template,
        by_name,
        numbers,
        relatives,
    })
}
