//! Oracle tests: for every family, on generated tasks, a correct response outscores every wrong
//! one and a clean one every sloppy one of the same correctness; plus hand-written cases.

use rlhf_data::{
    Family, LENGTH_PENALTY_CAP, Quality, Split, Task, extract_answer, grade, respond, score,
    world_rng,
};

const QUALITIES: [Quality; 4] = [
    Quality::Clean,
    Quality::Sloppy,
    Quality::Wrong,
    Quality::WrongSloppy,
];

#[test]
fn every_family_orders_correct_over_wrong_and_clean_over_sloppy() {
    let mut rng = world_rng(21, 0);
    for family in Family::ALL {
        for i in 0..400 {
            let split = if i % 2 == 0 {
                Split::Train
            } else {
                Split::Eval
            };
            let task = Task::generate(&mut rng, family, split, 4);
            // Five responses of each quality; class k must strictly beat class k + 1.
            let mut classes: Vec<(f64, f64)> = Vec::new();
            for quality in QUALITIES {
                let mut lo = f64::INFINITY;
                let mut hi = f64::NEG_INFINITY;
                for _ in 0..5 {
                    let r = respond(&task, quality, &mut rng);
                    let g = grade(&task, &r.text);
                    let what = format!(
                        "{family:?} {:?} -> {:?} ({})",
                        task.prompt(),
                        r.text,
                        r.flaw
                    );
                    assert_eq!(g.correct, quality.is_correct(), "correctness of {what}");
                    assert_eq!(g.formatted, quality.is_formatted(), "format of {what}");
                    lo = lo.min(g.score);
                    hi = hi.max(g.score);
                }
                classes.push((lo, hi));
            }
            for k in 0..3 {
                assert!(
                    classes[k].0 > classes[k + 1].1,
                    "{family:?} {}: {classes:?}",
                    task.prompt()
                );
            }
        }
    }
}

const SEED: &str = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers \
                    does she have left?";

#[test]
fn seed_example_cases() {
    let s = |r: &str| score(SEED, r).expect("known prompt");
    let clean = "Jane gives 2 to her mom, so 12 - 2 = 10. She gives 3 to her dad, so 10 - 3 = 7. \
                 The answer is 7.";
    let direct = "The answer is 7.";
    let sloppy = "12 - 2 - 3 = 7, so she has 7 flowers left.";
    let false_step = "Jane gives 2 to her mom, so 12 - 2 = 9. She gives 3 to her dad, so 9 - 3 = \
                      7. The answer is 7.";
    let wrong_clean = "Jane gives 2 to her mom, so 12 - 2 = 10. The answer is 10.";
    let wrong_sloppy = "She has 8 left.";
    assert_eq!(s(clean), 1.3);
    assert_eq!(s(direct), 1.3);
    assert_eq!(s(sloppy), 1.0);
    assert_eq!(
        s(false_step),
        1.0,
        "a false equation breaks the format, not the answer"
    );
    assert_eq!(s(wrong_clean), 0.3);
    assert_eq!(s(wrong_sloppy), 0.0);
    // Rambling costs a little, capped, and never overturns format or correctness.
    let ramble = format!(
        "{} {clean}",
        "Let me think about this very carefully. ".repeat(20)
    );
    let g = grade(&Task::parse(SEED).expect("parses"), &ramble);
    assert!(g.correct && g.formatted && g.chars_over > 300);
    assert!((s(&ramble) - (1.3 - LENGTH_PENALTY_CAP)).abs() < 1e-12);
    assert!(s(&ramble) > s(sloppy));
    let ramble_wrong = format!("{} {wrong_clean}", "Hmm. ".repeat(100));
    assert!(s(&ramble_wrong) > s(wrong_sloppy));
    // Hedging: two answer lines are not the format, and the last one counts.
    assert_eq!(s("The answer is 8. The answer is 7."), 1.0);
    assert_eq!(s("The answer is 7. I hope this helps!"), 1.0);
}

#[test]
fn list_cases() {
    let p = "Sort these numbers from smallest to largest: 9, 2, 5.";
    let s = |r: &str| score(p, r).expect("known prompt");
    assert_eq!(s("2, 5, 9"), 1.3);
    assert_eq!(s("2, 5, 9."), 1.3);
    assert_eq!(s("Sure! Here they are: 2, 5, 9."), 1.0);
    assert_eq!(s("2 5 9"), 1.0);
    assert_eq!(s("2, 9, 5"), 0.3);
    assert_eq!(s("2, 5"), 0.3);
    assert_eq!(s("I cannot do that."), 0.0);
    let count = "How many numbers are in this list: 4, 8, 1?";
    assert_eq!(score(count, "The answer is 3.").expect("known"), 1.3);
    assert_eq!(score(count, "There are 3 numbers.").expect("known"), 1.0);
    assert_eq!(score(count, "The answer is 4.").expect("known"), 0.3);
}

#[test]
fn word_constraint_cases() {
    let p = "Describe a cat in exactly 5 words.";
    let s = |r: &str| score(p, r).expect("known prompt");
    assert_eq!(s("The cat is very soft."), 1.3);
    assert_eq!(
        s("My cats sleep all day."),
        1.3,
        "any five words naming the entity"
    );
    assert_eq!(s("the cat is very soft"), 1.0);
    assert_eq!(s("The cat is soft."), 0.3);
    assert_eq!(s("The dog is very soft."), 0.3, "must be about the cat");
    assert_eq!(s("Sure! The cat is very soft."), 0.0);
    let r = "Repeat the word red 3 times.";
    let s = |x: &str| score(r, x).expect("known prompt");
    assert_eq!(s("red red red"), 1.3);
    assert_eq!(s("red red red."), 1.3);
    assert_eq!(s("Red, red, red"), 1.0);
    assert_eq!(s("red red"), 0.3);
    assert_eq!(s("Sure! red red red red"), 0.0);
}

#[test]
fn unknown_prompts_are_errors_not_scores() {
    let e = score("What is the capital of France?", "Paris").expect_err("not a world prompt");
    assert!(
        e.to_string()
            .starts_with("the oracle does not recognise the prompt"),
        "{e}"
    );
    assert!(score("Describe a dragon in exactly 5 words.", "x").is_err());
}

#[test]
fn answer_extraction_contract() {
    assert_eq!(
        extract_answer("3 * 4 = 12. 12 + 5 = 17. The answer is 17."),
        Some(17)
    );
    assert_eq!(extract_answer("The Answer is 17"), Some(17));
    assert_eq!(extract_answer("She has 17 now."), Some(17));
    assert_eq!(extract_answer(""), None);
}
