//! The small English vocabulary of the task world: names with pronouns, countable objects,
//! containers, relatives, describable entities with facts, and words to repeat; plus which of
//! them each split may use in tasks.
//!
//! Only single words, so that prompts parse back unambiguously (`template.rs`). The pretraining
//! corpus uses every word; tasks use only their split's words (see `split_of`).

use super::config::{Split, split_of};

/// A person's gender, which picks the pronouns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Female,
    Male,
}

impl Gender {
    /// Subject pronoun, capitalised: "She".
    pub fn subject(self) -> &'static str {
        match self {
            Gender::Female => "She",
            Gender::Male => "He",
        }
    }

    /// Subject pronoun, lower case: "she".
    pub fn subject_lower(self) -> &'static str {
        match self {
            Gender::Female => "she",
            Gender::Male => "he",
        }
    }

    /// Possessive: "her" / "his".
    pub fn possessive(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "his",
        }
    }

    /// Object pronoun: "her" / "him".
    pub fn object(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "him",
        }
    }
}

const FEMALE: &[&str] = &[
    "Jane", "Mia", "Emma", "Lily", "Ava", "Zoe", "Nora", "Ruby", "Ella", "Lucy", "Anna", "Sara",
    "Kate", "Rose", "Amy", "Maya", "Ivy", "Lena", "Tara", "Nina", "Olive", "Clara", "Grace",
    "Hana", "Leah", "Iris", "Jade", "Elsa", "Fay", "Gina",
];

const MALE: &[&str] = &[
    "Tom", "Sam", "Ben", "Max", "Leo", "Jack", "Noah", "Liam", "Owen", "Finn", "Luke", "Adam",
    "Eli", "Hugo", "Ivan", "Joel", "Kai", "Omar", "Paul", "Ravi", "Theo", "Ted", "Carl", "Dan",
    "Evan", "Gus", "Hank", "Ian", "Jon", "Ken",
];

/// Countable objects, plural (problems never need the singular: counts are at least 2).
pub const OBJECTS: &[&str] = &[
    "flowers", "apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards",
    "coins", "stamps", "crayons", "balloons", "candies", "oranges", "pears", "eggs", "cupcakes",
    "toys", "rocks", "beads", "buttons", "feathers", "kites", "socks", "hats", "cups", "plates",
    "leaves", "nuts", "grapes", "carrots", "muffins", "bottles", "ribbons", "blocks", "dolls",
    "bells", "lemons", "peaches",
];

/// Containers for "3 bags with 4 apples in each".
pub const CONTAINERS: &[&str] = &["bags", "boxes", "baskets", "jars", "packs", "bowls"];

/// People a character gives to or gets from.
pub const RELATIVES: &[&str] = &[
    "mom", "dad", "sister", "brother", "friend", "teacher", "grandma", "grandpa", "aunt", "uncle",
    "cousin", "neighbor",
];

/// Something to describe in exactly N words, with the facts the gold answers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    pub noun: &'static str,
    pub plural: &'static str,
    pub adjectives: [&'static str; 3],
    /// Third person singular: "purrs".
    pub verb: &'static str,
}

const fn e(
    noun: &'static str,
    plural: &'static str,
    adjectives: [&'static str; 3],
    verb: &'static str,
) -> Entity {
    Entity {
        noun,
        plural,
        adjectives,
        verb,
    }
}

pub const ENTITIES: &[Entity] = &[
    e("cat", "cats", ["soft", "small", "lazy"], "purrs"),
    e("dog", "dogs", ["loyal", "happy", "friendly"], "barks"),
    e("bird", "birds", ["small", "quick", "light"], "sings"),
    e("fish", "fish", ["wet", "shiny", "quiet"], "swims"),
    e("horse", "horses", ["big", "strong", "fast"], "runs"),
    e("cow", "cows", ["big", "calm", "slow"], "moos"),
    e("owl", "owls", ["wise", "quiet", "brown"], "hoots"),
    e("frog", "frogs", ["green", "small", "wet"], "jumps"),
    e("duck", "ducks", ["yellow", "noisy", "round"], "quacks"),
    e("bee", "bees", ["busy", "small", "striped"], "buzzes"),
    e("lion", "lions", ["brave", "strong", "proud"], "roars"),
    e("bear", "bears", ["big", "brown", "strong"], "sleeps"),
    e("mouse", "mice", ["tiny", "quick", "gray"], "squeaks"),
    e("rabbit", "rabbits", ["soft", "fast", "white"], "hops"),
    e("sheep", "sheep", ["white", "woolly", "calm"], "grazes"),
    e("goat", "goats", ["stubborn", "hungry", "funny"], "climbs"),
    e("pig", "pigs", ["pink", "round", "happy"], "eats"),
    e("fox", "foxes", ["clever", "red", "quick"], "hides"),
    e("wolf", "wolves", ["gray", "wild", "strong"], "howls"),
    e("snake", "snakes", ["long", "quiet", "smooth"], "slides"),
    e("turtle", "turtles", ["slow", "old", "calm"], "swims"),
    e("whale", "whales", ["huge", "gentle", "blue"], "sings"),
    e("tree", "trees", ["tall", "green", "old"], "grows"),
    e("river", "rivers", ["long", "cold", "wide"], "flows"),
    e("moon", "moons", ["bright", "round", "pale"], "shines"),
    e("sun", "suns", ["hot", "bright", "yellow"], "shines"),
    e("star", "stars", ["tiny", "bright", "far"], "twinkles"),
    e("cloud", "clouds", ["white", "soft", "light"], "floats"),
    e("boat", "boats", ["small", "fast", "blue"], "floats"),
    e("train", "trains", ["long", "loud", "fast"], "moves"),
    e("ball", "balls", ["round", "bouncy", "red"], "bounces"),
    e("clock", "clocks", ["round", "old", "loud"], "ticks"),
    e("lamp", "lamps", ["bright", "small", "warm"], "glows"),
    e("bell", "bells", ["loud", "shiny", "small"], "rings"),
    e("baby", "babies", ["tiny", "sweet", "sleepy"], "cries"),
    e("kite", "kites", ["light", "colorful", "high"], "flies"),
];

/// Words for "Repeat the word X N times".
pub const REPEAT_WORDS: &[&str] = &[
    "red", "blue", "green", "yellow", "pink", "purple", "black", "white", "happy", "sunny",
    "hello", "yes", "no", "jump", "run", "sing", "dance", "smile", "apple", "banana", "tree",
    "moon", "star", "cake", "milk", "book", "rain", "snow", "wind", "fire", "stone", "sand",
    "door", "hat", "shoe", "boat", "drum", "song", "bread", "water", "cloud", "river", "grass",
    "light", "music", "paper", "house", "chair", "table", "window",
];

/// A name and its gender, or `None` for a word that is not one of the world's names.
pub fn gender_of(name: &str) -> Option<Gender> {
    if FEMALE.contains(&name) {
        Some(Gender::Female)
    } else if MALE.contains(&name) {
        Some(Gender::Male)
    } else {
        None
    }
}

/// Every name with its gender.
pub fn all_names() -> impl Iterator<Item = (&'static str, Gender)> {
    let f = FEMALE.iter().map(|&n| (n, Gender::Female));
    f.chain(MALE.iter().map(|&n| (n, Gender::Male)))
}

/// The split a name belongs to.
pub fn name_split(name: &str) -> Split {
    split_of(&format!("name:{name}"))
}

/// The split an object noun belongs to.
pub fn object_split(object: &str) -> Split {
    split_of(&format!("object:{object}"))
}

/// The split an entity belongs to.
pub fn entity_split(noun: &str) -> Split {
    split_of(&format!("entity:{noun}"))
}

/// The split a repeat word belongs to.
pub fn word_split(word: &str) -> Split {
    split_of(&format!("word:{word}"))
}

/// The names a split's tasks may use.
pub fn names_in(split: Split) -> Vec<(&'static str, Gender)> {
    all_names()
        .filter(|(n, _)| name_split(n) == split)
        .collect()
}

/// The objects a split's tasks may use.
pub fn objects_in(split: Split) -> Vec<&'static str> {
    OBJECTS
        .iter()
        .copied()
        .filter(|o| object_split(o) == split)
        .collect()
}

/// The entities a split's tasks may use.
pub fn entities_in(split: Split) -> Vec<&'static Entity> {
    ENTITIES
        .iter()
        .filter(|e| entity_split(e.noun) == split)
        .collect()
}

/// The repeat words a split's tasks may use.
pub fn words_in(split: Split) -> Vec<&'static str> {
    REPEAT_WORDS
        .iter()
        .copied()
        .filter(|w| word_split(w) == split)
        .collect()
}

/// "a" or "an" before `word`.
pub fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}
