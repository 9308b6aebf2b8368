//! Task-world tests: determinism from the seed, train/eval disjointness at the entity and
//! operand level, prompts that parse back, the SFT flaw rate, and files that read back.

use std::collections::{BTreeSet, HashSet};
use std::fs;

use rlhf_data::{
    EvalRecord, Family, PromptRecord, SftRecord, Split, Task, TextRecord, WorldConfig, build_world,
    grade, read_jsonl, world_rng, write_world,
};

const FILES: [&str; 7] = [
    "corpus.txt",
    "corpus.jsonl",
    "sft.jsonl",
    "prompts.jsonl",
    "eval.jsonl",
    "dev.jsonl",
    "world.json",
];

fn small(seed: u64) -> WorldConfig {
    WorldConfig {
        seed,
        corpus_docs: 300,
        sft_examples: 200,
        prompts: 100,
        eval_examples: 60,
        ..Default::default()
    }
}

#[test]
fn same_seed_gives_byte_identical_files() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let c = tempfile::tempdir().expect("tempdir");
    write_world(a.path(), &small(7)).expect("world a");
    write_world(b.path(), &small(7)).expect("world b");
    write_world(c.path(), &small(8)).expect("world c");
    for name in FILES {
        let x = fs::read(a.path().join(name)).expect("read a");
        let y = fs::read(b.path().join(name)).expect("read b");
        let z = fs::read(c.path().join(name)).expect("read c");
        assert_eq!(x, y, "{name} differs between two runs with the same seed");
        assert_ne!(x, z, "{name} is the same for seeds 7 and 8");
    }
}

#[test]
fn resizing_one_file_leaves_the_others_unchanged() {
    let mut bigger = small(7);
    bigger.corpus_docs = 500;
    let x = build_world(&small(7)).expect("world");
    let y = build_world(&bigger).expect("world");
    assert_eq!(x.sft, y.sft);
    assert_eq!(x.eval, y.eval);
    assert_eq!(x.corpus[..], y.corpus[..300]);
}

#[test]
fn default_world_files_read_back_with_the_configured_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = WorldConfig::default();
    let summary = write_world(dir.path(), &cfg).expect("world");
    let corpus_bytes = summary.files[0].bytes;
    assert!(
        (1_000_000..2_000_000).contains(&corpus_bytes),
        "corpus.txt is {corpus_bytes} B"
    );
    let sft: Vec<SftRecord> = read_jsonl(dir.path().join("sft.jsonl")).expect("sft");
    let prompts: Vec<PromptRecord> = read_jsonl(dir.path().join("prompts.jsonl")).expect("p");
    let eval: Vec<EvalRecord> = read_jsonl(dir.path().join("eval.jsonl")).expect("eval");
    let corpus: Vec<TextRecord> = read_jsonl(dir.path().join("corpus.jsonl")).expect("corpus");
    assert_eq!(sft.len(), cfg.sft_examples);
    assert_eq!(prompts.len(), cfg.prompts);
    assert_eq!(eval.len(), cfg.eval_examples);
    let dev: Vec<EvalRecord> = read_jsonl(dir.path().join("dev.jsonl")).expect("dev");
    // Word counts' held-out space is mostly taken by eval.jsonl: about 20 are left for dev.
    assert!(
        (230..=cfg.dev_examples).contains(&dev.len()),
        "{} dev items",
        dev.len()
    );
    // Dev is the eval split's distribution with no prompt of eval.jsonl.
    let eval_prompts: std::collections::HashSet<&str> =
        eval.iter().map(|r| r.prompt.as_str()).collect();
    assert!(
        dev.iter()
            .all(|r| !eval_prompts.contains(r.prompt.as_str()))
    );
    assert!(
        dev.iter()
            .all(|r| r.fields.get("split").and_then(|v| v.as_str()) == Some("eval"))
    );
    assert_eq!(corpus.len(), cfg.corpus_docs);
    let text = fs::read_to_string(dir.path().join("corpus.txt")).expect("corpus.txt");
    assert_eq!(text.trim_end().split("\n\n").count(), cfg.corpus_docs);
    for family in Family::ALL {
        assert_eq!(summary.eval_families[family.name()], 75);
    }
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("world.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["config"]["sft_examples"], 3000);
}

/// Everything a task could be memorised by: its prompt, its entities and its operands.
#[derive(Default)]
struct Keys {
    prompts: HashSet<String>,
    entities: BTreeSet<String>,
    operands: HashSet<String>,
}

impl Keys {
    fn add(&mut self, task: &Task) {
        self.prompts.insert(task.prompt());
        match task {
            Task::Arithmetic(p) => {
                let (name, object) = p.entities();
                self.entities.insert(format!("name:{name}"));
                self.entities.insert(format!("object:{object}"));
                let ops: Vec<String> = p.steps().iter().map(|s| format!("{:?}", s.op)).collect();
                self.operands
                    .insert(format!("{}{}", p.start_value(), ops.join("")));
            }
            Task::Lists(t) => {
                let mut items = t.items().to_vec();
                items.sort_unstable();
                self.operands.insert(format!("{items:?}"));
            }
            Task::WordCount(t) => {
                self.entities.insert(format!("entity:{}", t.entity().noun));
            }
            Task::Repeat(t) => {
                self.entities.insert(format!("word:{}", t.word()));
            }
        }
    }
}

#[test]
fn eval_is_disjoint_from_training_at_entity_and_operand_level() {
    let world = build_world(&WorldConfig::default()).expect("world");
    let mut train = Keys::default();
    let mut train_tasks = 0;
    let train_prompts = world
        .sft
        .iter()
        .map(|d| d.prompt.clone())
        .chain(world.prompts.iter().map(|p| p.prompt.clone()));
    // Solved tasks inside the corpus are one prompt per line.
    let corpus_lines = world
        .corpus
        .iter()
        .flat_map(|d| d.lines().map(str::to_string));
    for prompt in train_prompts.chain(corpus_lines) {
        if let Ok(task) = Task::parse(&prompt) {
            assert_eq!(task.split(), Some(Split::Train), "training task {prompt:?}");
            train.add(&task);
            train_tasks += 1;
        }
    }
    assert!(
        train_tasks > 5000,
        "only {train_tasks} training tasks found"
    );
    let mut eval = Keys::default();
    for e in &world.eval {
        let task = Task::parse(&e.prompt).expect("eval prompts parse");
        assert_eq!(task.split(), Some(Split::Eval), "eval task {:?}", e.prompt);
        assert_eq!(task.answer(), e.answer);
        eval.add(&task);
    }
    assert!(eval.prompts.is_disjoint(&train.prompts));
    let shared: Vec<_> = eval.entities.intersection(&train.entities).collect();
    assert!(shared.is_empty(), "entities in both splits: {shared:?}");
    assert!(eval.operands.is_disjoint(&train.operands));
    // The eval split is not degenerate: it has several names, objects, entities and words.
    for kind in ["name:", "object:", "entity:", "word:"] {
        let n = eval.entities.iter().filter(|e| e.starts_with(kind)).count();
        assert!(n >= 3, "only {n} eval {kind} keys");
    }
    let corpus = world.corpus.join("\n");
    for e in &world.eval {
        assert!(
            !corpus.contains(&e.prompt),
            "eval prompt in corpus: {}",
            e.prompt
        );
    }
}

#[test]
fn both_splits_have_names_of_both_genders() {
    let mut rng = world_rng(3, 0);
    for split in [Split::Train, Split::Eval] {
        let mut pronouns = HashSet::new();
        for _ in 0..200 {
            if let Task::Arithmetic(p) = Task::generate(&mut rng, Family::Arithmetic, split, 4) {
                let prompt = p.prompt();
                pronouns.insert(prompt.contains("She ") || prompt.contains(" she "));
            }
        }
        assert_eq!(pronouns.len(), 2, "{split:?} split lacks a gender");
    }
}

#[test]
fn generated_prompts_parse_back_to_the_same_task() {
    let mut rng = world_rng(11, 0);
    for family in Family::ALL {
        for split in [Split::Train, Split::Eval] {
            for _ in 0..300 {
                let task = Task::generate(&mut rng, family, split, 4);
                let parsed = Task::parse(&task.prompt()).expect("parses");
                assert_eq!(parsed, task, "{}", task.prompt());
                assert_eq!(parsed.family(), family);
                let g = grade(&task, &task.solution());
                assert!(
                    g.correct && g.formatted && g.chars_over == 0,
                    "{}",
                    task.prompt()
                );
            }
        }
    }
}

#[test]
fn word_problems_have_one_to_four_steps_and_small_numbers() {
    let mut rng = world_rng(5, 0);
    let mut seen_steps = BTreeSet::new();
    for _ in 0..2000 {
        let Task::Arithmetic(p) = Task::generate(&mut rng, Family::Arithmetic, Split::Train, 4)
        else {
            unreachable!("asked for arithmetic")
        };
        let steps = p.steps();
        seen_steps.insert(steps.len());
        for s in &steps {
            assert!((1..100).contains(&s.after), "{}: {s:?}", p.prompt());
        }
        // One CoT sentence per step, then the answer line.
        let solution = p.solution();
        assert_eq!(solution.matches(" = ").count(), steps.len(), "{solution}");
        assert!(solution.ends_with(&format!("The answer is {}.", p.answer())));
    }
    assert_eq!(seen_steps, BTreeSet::from([1, 2, 3, 4]));
}

#[test]
fn the_seed_example_parses() {
    let prompt = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers \
                  does she have left?";
    let task = Task::parse(prompt).expect("the seed's own example");
    assert_eq!(task.answer(), "7");
    assert_eq!(
        task.solution(),
        "Jane gives 2 to her mom, so 12 - 2 = 10. She gives 3 to her dad, so 10 - 3 = 7. \
         The answer is 7."
    );
    // Whitespace differences do not matter; other text does.
    assert!(Task::parse(&prompt.replace(' ', "  ")).is_ok());
    let e = Task::parse("User: Jane has 12 flowers. How many?").expect_err("chat-wrapped");
    assert!(e.to_string().contains("does not recognise"), "{e}");
}

#[test]
fn sft_demonstrations_are_imperfect_at_the_configured_rate() {
    let cfg = WorldConfig::default();
    let world = build_world(&cfg).expect("world");
    let mut flawed = 0;
    let mut wrong = 0;
    for d in &world.sft {
        let task = Task::parse(&d.prompt).expect("sft prompt parses");
        let g = grade(&task, &d.completion);
        assert_eq!(g.correct, d.quality.is_correct(), "{d:?}");
        assert_eq!(g.formatted, d.quality.is_formatted(), "{d:?}");
        flawed += usize::from(!d.flaw.is_empty());
        wrong += usize::from(!g.correct);
    }
    let rate = flawed as f64 / world.sft.len() as f64;
    assert!((0.22..0.28).contains(&rate), "flawed share {rate}");
    let wrong_rate = wrong as f64 / world.sft.len() as f64;
    assert!(
        (0.10..0.15).contains(&wrong_rate),
        "wrong share {wrong_rate}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let bad = WorldConfig {
        sft_error_rate: 1.5,
        ..Default::default()
    };
    let e = build_world(&bad).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "config field 'sft_error_rate': expected a share in [0, 1], found 1.5"
    );
    let none = WorldConfig {
        families: vec![],
        ..Default::default()
    };
    assert!(build_world(&none).is_err());
    let strict: Result<WorldConfig, _> = serde_json::from_str(r#"{"sede": 1}"#);
    assert!(strict.is_err(), "unknown keys are rejected");
}

#[test]
fn asking_for_more_distinct_eval_items_than_exist_is_an_error() {
    let cfg = WorldConfig {
        families: vec![Family::Repeat],
        eval_examples: 5000,
        corpus_docs: 0,
        sft_examples: 0,
        prompts: 0,
        ..Default::default()
    };
    let e = build_world(&cfg).expect_err("the repeat eval space is small");
    assert!(
        e.to_string()
            .starts_with("eval.jsonl: cannot draw 5000 distinct repeat prompts")
    );
}
