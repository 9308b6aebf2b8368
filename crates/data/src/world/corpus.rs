//! Pretraining documents drawn from the task world: short stories in its vocabulary (names,
//! relatives, objects, entities and their facts, number facts), solved word problems, list
//! statements and word-instruction examples, so a tiny model pretrained on them knows the words,
//! the numbers and the answer formats before SFT.
//!
//! Stories may mention every name and entity (a model must know a word to read it), but every
//! solved task and every counting narrative comes from the train split, so no eval item is ever
//! seen. Writing files is `write.rs`.

use rand::RngCore;

use super::arithmetic;
use super::config::{Family, Split};
use super::task::Task;
use super::vocab::{CONTAINERS, ENTITIES, OBJECTS, RELATIVES, all_names, article};
use crate::rng::{below, chance, pick, range, unit};

/// One pretraining document. Kinds: stories 50%, solved word problems 20%, list examples 15%,
/// word-instruction examples 15% (a disabled family's share goes to stories): mostly language,
/// with enough solved tasks to teach the formats.
pub(crate) fn document<R: RngCore + ?Sized>(
    rng: &mut R,
    families: &[Family],
    max_steps: usize,
) -> String {
    let has = |f| families.contains(&f);
    let u = unit(rng);
    if u < 0.2 && has(Family::Arithmetic) {
        let count = range(rng, 1, 2) as usize;
        solved(rng, &[Family::Arithmetic], count, max_steps)
    } else if (0.2..0.35).contains(&u) && has(Family::Lists) {
        let count = range(rng, 2, 4) as usize;
        solved(rng, &[Family::Lists], count, max_steps)
    } else if (0.35..0.5).contains(&u) && (has(Family::WordCount) || has(Family::Repeat)) {
        let word_families: Vec<Family> = [Family::WordCount, Family::Repeat]
            .into_iter()
            .filter(|f| has(*f))
            .collect();
        let count = range(rng, 2, 4) as usize;
        solved(rng, &word_families, count, max_steps)
    } else {
        story(rng, max_steps)
    }
}

/// `count` train-split tasks, each as its prompt on one line and its clean solution on the next.
fn solved<R: RngCore + ?Sized>(
    rng: &mut R,
    families: &[Family],
    count: usize,
    max_steps: usize,
) -> String {
    (0..count)
        .map(|_| {
            let family = *pick(rng, families);
            let task = Task::generate(rng, family, Split::Train, max_steps);
            format!("{}\n{}", task.prompt(), task.solution())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A story of 6–12 sentences about one character, mixing kinds of sentences.
fn story<R: RngCore + ?Sized>(rng: &mut R, max_steps: usize) -> String {
    let names: Vec<_> = all_names().collect();
    let (name, gender) = *pick(rng, &names);
    let sentences = range(rng, 6, 12);
    let mut out = vec![format!("This is {name}.")];
    while (out.len() as i64) < sentences {
        match below(rng, 5) {
            0 => out.extend(counting(rng, max_steps)),
            1 => out.extend(entity_facts(rng, name)),
            2 => {
                let rel = pick(rng, RELATIVES);
                let s = match below(rng, 4) {
                    0 => format!("{name} walks with {} {rel}.", gender.possessive()),
                    1 => format!("{name} plays with {} {rel}.", gender.possessive()),
                    2 => format!("{name} and {} {rel} go to the park.", gender.possessive()),
                    _ => format!(
                        "{} {rel} smiles at {}.",
                        cap(gender.possessive()),
                        gender.object()
                    ),
                };
                out.push(s);
            }
            3 => out.push(number_fact(rng)),
            _ => {
                let object = pick(rng, OBJECTS);
                let s = match below(rng, 3) {
                    0 => format!("{name} likes {object}."),
                    1 => format!(
                        "{name} keeps the {object} in {} {}.",
                        gender.possessive(),
                        pick(rng, CONTAINERS)
                    ),
                    _ => format!("{name} counts {} {object}.", gender.possessive()),
                };
                out.push(s);
            }
        }
    }
    out.join(" ")
}

/// A train-split word problem told as a story: its statements, then how many there are now.
fn counting<R: RngCore + ?Sized>(rng: &mut R, max_steps: usize) -> Vec<String> {
    let steps = range(rng, 1, max_steps.clamp(1, 2) as i64) as usize;
    let p = arithmetic::generate(rng, Split::Train, steps);
    let prompt = p.prompt();
    let mut parts: Vec<String> = super::template::sentences(&prompt)
        .iter()
        .map(|s| s.to_string())
        .collect();
    parts.pop(); // the question
    let (name, object) = p.entities();
    parts.push(format!("Now {name} has {} {object}.", p.answer()));
    parts
}

fn entity_facts<R: RngCore + ?Sized>(rng: &mut R, name: &str) -> Vec<String> {
    let e = pick(rng, ENTITIES);
    let adj = pick(rng, &e.adjectives);
    let mut out = vec![format!("{name} sees {} {}.", article(e.noun), e.noun)];
    out.push(format!("The {} is {adj}.", e.noun));
    if chance(rng, 0.5) {
        out.push(format!("The {} {}.", e.noun, e.verb));
    } else {
        out.push(format!(
            "{} are {}.",
            cap(e.plural),
            pick(rng, &e.adjectives)
        ));
    }
    out
}

fn number_fact<R: RngCore + ?Sized>(rng: &mut R) -> String {
    let a = range(rng, 1, 20);
    let b = range(rng, 1, 10);
    match below(rng, 7) {
        0 => format!("{a} and {b} make {}.", a + b),
        1 => format!("{a} plus {b} is {}.", a + b),
        2 if a > b => format!("{a} minus {b} is {}.", a - b),
        3 => format!("{} times {b} is {}.", a.min(9), a.min(9) * b),
        4 if a != b => format!("{} is more than {}.", a.max(b), a.min(b)),
        5 => format!("After {a} comes {}.", a + 1),
        _ => format!("{a}, {}, {}, {}.", a + 1, a + 2, a + 3),
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
