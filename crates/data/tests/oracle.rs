//! Oracle tests: for every family, on generated tasks, the rubric's order (correct over wrong;
//! among wrong word-problem answers, more correct steps never lower; with equal work, format,
//! then length); plus hand-written cases.

use rlhf_data::{
    CORRECT_REWARD, FORMAT_REWARD, Family, LENGTH_PENALTY_CAP, LENGTH_PENALTY_PER_CHAR, Quality,
    Split, Task, WORK_REWARD, WordProblem, extract_answer, grade, respond, score, world_rng,
};

const QUALITIES: [Quality; 4] = [
    Quality::Clean,
    Quality::Sloppy,
    Quality::Wrong,
    Quality::WrongSloppy,
];

/// Rubric item by item, on generated responses of every quality: a correct response outscores
/// every wrong one; the score is exactly the rubric's sum; and of two responses with the same
/// correctness and the same work credit, the formatted one wins whatever the lengths.
#[test]
fn every_family_follows_the_rubric() {
    let mut rng = world_rng(21, 0);
    for family in Family::ALL {
        for i in 0..400 {
            let split = if i % 2 == 0 {
                Split::Train
            } else {
                Split::Eval
            };
            let task = Task::generate(&mut rng, family, split, 4);
            let mut graded = Vec::new();
            for quality in QUALITIES {
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
                    assert!((0.0..=1.0).contains(&g.work), "work of {what}: {}", g.work);
                    let earned = if g.correct {
                        CORRECT_REWARD
                    } else {
                        WORK_REWARD * g.work
                    };
                    let penalty =
                        (g.chars_over as f64 * LENGTH_PENALTY_PER_CHAR).min(LENGTH_PENALTY_CAP);
                    let sum = earned + FORMAT_REWARD * f64::from(u8::from(g.formatted)) - penalty;
                    assert!((g.score - sum).abs() < 1e-12, "rubric sum of {what}");
                    graded.push(g);
                }
            }
            for a in &graded {
                for b in &graded {
                    if a.correct && !b.correct {
                        assert!(a.score > b.score, "{}: {a:?} vs {b:?}", task.prompt());
                    }
                    if a.correct == b.correct && a.work == b.work && a.formatted && !b.formatted {
                        assert!(a.score > b.score, "{}: {a:?} vs {b:?}", task.prompt());
                    }
                }
            }
        }
    }
}

/// A response that writes the first `right` steps of `p`'s solution as true equations, then
/// miscomputes the next one by +1 and carries the error through the remaining steps (each
/// applied correctly to the wrong value), then states where it ended.
fn partly_right(p: &WordProblem, right: usize) -> String {
    let steps = p.steps();
    let mut x = p.start_value();
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let mut after = s.op.apply(x);
        if i == right {
            after += 1;
        }
        out.push(format!(
            "{x} {} {} = {after}.",
            s.op.symbol(),
            s.op.operand()
        ));
        x = after;
    }
    out.push(format!("The answer is {x}."));
    out.join(" ")
}

/// Among wrong word-problem answers of one shape, more correct steps never score lower; a
/// solution whose steps all hold but whose answer line is off outscores one that goes wrong at
/// the first step; and a bare wrong number earns no work credit.
#[test]
fn more_correct_steps_never_score_lower() {
    let mut rng = world_rng(22, 0);
    let mut strictly = 0;
    for i in 0..300 {
        let p = WordProblem::generate(&mut rng, Split::Train, 2 + i % 3);
        let task = Task::Arithmetic(p.clone());
        let n = p.steps().len();
        let grades: Vec<_> = (0..n)
            .map(|right| grade(&task, &partly_right(&p, right)))
            .collect();
        for (right, w) in grades.windows(2).enumerate() {
            assert!(!w[0].correct && !w[1].correct && !w[0].formatted);
            assert!(
                w[1].work >= w[0].work && w[1].score >= w[0].score - 0.002,
                "{} right steps vs {}: {:?} vs {:?} ({})",
                right + 1,
                right,
                w[1],
                w[0],
                partly_right(&p, right + 1)
            );
            strictly += usize::from(w[1].work > w[0].work);
        }
        let all_steps: Vec<String> = p
            .steps()
            .iter()
            .map(|s| format!("{}.", s.equation()))
            .collect();
        let off = format!("{} The answer is {}.", all_steps.join(" "), p.answer() + 1);
        let g = grade(&task, &off);
        assert!(
            !g.correct && g.formatted && (g.work - 0.85).abs() < 1e-12,
            "{off}: {g:?}"
        );
        assert!(g.score > grades[0].score, "{off}");
        let bare = grade(&task, &format!("The answer is {}.", p.answer() + 1));
        assert_eq!(bare.work, 0.0);
    }
    assert!(
        strictly > 300,
        "more steps usually earn strictly more ({strictly})"
    );
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
    // One of two steps holds (0.5 · 1/2), every equation written is true (0.2), two of the
    // problem's three numbers are used (0.15 · 2/3), the answer is not from the last operation.
    assert!((s(wrong_clean) - (0.3 + 0.45 * 0.55)).abs() < 1e-12);
    assert_eq!(s(wrong_sloppy), 0.0);
    // Both steps hold but the answer line says otherwise: all the work but the last operation's.
    let typo = "Jane gives 2 to her mom, so 12 - 2 = 10. She gives 3 to her dad, so 10 - 3 = 7. \
                The answer is 8.";
    assert!((s(typo) - (0.3 + 0.45 * 0.85)).abs() < 1e-12);
    // A wrong first step carried through with the right operation: half of step 2 (0.5 · 1/4),
    // the answer comes out of the right last operation (0.15), true equations (0.2), all the
    // numbers used (0.15).
    let carried = "Jane gives 2 to her mom, so 12 + 2 = 14. She gives 3 to her dad, so 14 - 3 = \
                   11. The answer is 11.";
    assert!((s(carried) - (0.3 + 0.45 * 0.625)).abs() < 1e-12);
    assert!(s(typo) > s(carried) && s(carried) > s(wrong_sloppy));
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
    assert!(s(&ramble_wrong) < s(wrong_clean));
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
    // Order (0.5 × LCS share), numbers present (0.25 × share), length (0.25 × closeness).
    let work = |x: f64| 0.3 + 0.45 * x;
    assert!((s("2, 9, 5") - work(0.5 * 2.0 / 3.0 + 0.25 + 0.25)).abs() < 1e-12);
    assert!(
        (s("2, 5") - work(0.5 * 2.0 / 3.0 + 0.25 * 2.0 / 3.0 + 0.25 * 2.0 / 3.0)).abs() < 1e-12
    );
    assert!((s("9, 5, 2") - work(0.5 / 3.0 + 0.5)).abs() < 1e-12);
    assert!(s("2, 9, 5") > s("9, 5, 2") && s("9, 5, 2") > s("1, 3, 4"));
    assert_eq!(s("I cannot do that."), 0.0);
    let count = "How many numbers are in this list: 4, 8, 1?";
    assert_eq!(score(count, "The answer is 3.").expect("known"), 1.3);
    assert_eq!(score(count, "There are 3 numbers.").expect("known"), 1.0);
    let near = score(count, "The answer is 4.").expect("known");
    assert!((near - (0.3 + 0.45 * 2.0 / 3.0)).abs() < 1e-12);
    assert!(near > score(count, "The answer is 5.").expect("known"));
    let max = "What is the largest number in this list: 4, 8, 1?";
    let second = score(max, "The answer is 4.").expect("known");
    // Half for its rank (second of three: 1/2), half for its value (4 of 8: 1/2).
    assert!((second - (0.3 + 0.45 * 0.5)).abs() < 1e-12);
    assert!(second > score(max, "The answer is 1.").expect("known"));
    assert!(score(max, "The answer is 7.").expect("known") > 0.3);
    assert!(
        score(max, "The answer is 7.").expect("known")
            > score(max, "The answer is 70.").expect("known")
    );
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
    // One word short: 4/5 of the count.
    assert!((s("The cat is soft.") - (0.3 + 0.45 * 0.8)).abs() < 1e-12);
    assert!(s("The cat is soft.") > s("The cat is."));
    // The right count about the wrong thing earns half.
    assert!((s("The dog is very soft.") - (0.3 + 0.45 * 0.5)).abs() < 1e-12);
    assert!((s("Sure! The cat is very soft.") - 0.45 * 0.8).abs() < 1e-12);
    let r = "Repeat the word red 3 times.";
    let s = |x: &str| score(r, x).expect("known prompt");
    assert_eq!(s("red red red"), 1.3);
    assert_eq!(s("red red red."), 1.3);
    assert_eq!(s("Red, red, red"), 1.0);
    // Half for the word's count, half for the number of words.
    assert!((s("red red") - (0.3 + 0.45 * 2.0 / 3.0)).abs() < 1e-12);
    assert!(s("red red") > s("red"));
    assert!((s("blue blue blue") - (0.3 + 0.45 * 0.5)).abs() < 1e-12);
    assert!((s("Sure! red red red red") - 0.45 * (0.5 * 2.0 / 3.0 + 0.5 / 3.0)).abs() < 1e-12);
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
