//! Hostile JSONL: whatever the bytes, every reader of every record type answers within bounded
//! time and memory with records or an error naming the file and the line, never a panic or an
//! abort; with a model's text budget too (capped lines, text measured before tokenizing).
//!
//! Seeds: a small valid file of each record type (SFT in both shapes, samples, rankings with
//! ties, pairwise and TRL preference shapes, prompts, eval items, text) and the checked-in
//! samples fixture. Mutations (`rlhf_fuzz`): truncation, bit flips, numbers (ranking indices,
//! answers) set to huge or odd values, deep nesting, invalid UTF-8, repeated slices (long lines,
//! many lines), deleted slices.
//!
//! Cases: PROPTEST_CASES (default 512); `scripts/fuzz.sh --cases N` runs the long campaign.

use std::path::Path;

use rlhf_data::{
    DataError, EvalRecord, JsonlRecord, PairwiseRecord, PreferenceRecord, PromptRecord,
    RankingRecord, SampleRecord, SftRecord, TextBudget, TextRecord, read_jsonl_within,
};
use rlhf_fuzz::{Bounds, Outcome, Seed, mutations};

#[global_allocator]
static ALLOC: rlhf_fuzz::CountingAlloc = rlhf_fuzz::CountingAlloc;

/// Which record type a seed holds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Sft,
    Sample,
    Ranking,
    Pairwise,
    Preference,
    Prompt,
    Eval,
    Text,
}

fn seeds() -> &'static [(Kind, Seed)] {
    static SEEDS: std::sync::OnceLock<Vec<(Kind, Seed)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sft_samples.jsonl");
        let samples = std::fs::read(fixture).unwrap();
        let first_lines: Vec<u8> = samples
            .split(|&b| b == b'\n')
            .take(4)
            .collect::<Vec<_>>()
            .join(&b'\n');
        let text = |kind, name: &str, lines: &[&str]| (kind, Seed::text(name, lines.join("\n") + "\n"));
        vec![
            text(Kind::Sft, "sft", &[
                r#"{"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5. The answer is 5."}"#,
                r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#,
                "",
                r#"{"prompt": "", "completion": "x"}"#,
            ]),
            text(Kind::Ranking, "ranking", &[
                r#"{"prompt": "Sort 3, 1, 2.", "responses": ["1, 2, 3", "3, 2, 1", "1, 3, 2"], "ranking": [0, [1, 2]]}"#,
                r#"{"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0], "labeler": 7}"#,
            ]),
            text(Kind::Pairwise, "pairwise", &[
                r#"{"prompt": "Say hi", "chosen": "hi", "rejected": "bye"}"#,
            ]),
            text(Kind::Preference, "preference", &[
                r#"{"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}], "system": "S"}"#,
                r#"{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]}"#,
                r#"{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [[0, 1], 2]}"#,
            ]),
            text(Kind::Prompt, "prompts", &[
                r#"{"prompt": "Write the word milk 5 times.", "family": "repeat", "count": 5}"#,
                "   ",
            ]),
            text(Kind::Eval, "eval", &[
                r#"{"prompt": "Ian has 18 bells. He gives away 2. How many are left?", "answer": 16}"#,
                r#"{"prompt": "Sort 2, 1.", "answer": "1, 2", "task": {"op": "sort", "items": [2, 1]}}"#,
            ]),
            text(Kind::Text, "text", &["\u{feff}{\"text\": \"Once upon a time.\\nThe end.\"}\r"]),
            (Kind::Sample, Seed::text("samples", first_lines)),
        ]
    })
}

/// Reads `path` as `kind`'s records; the number read.
fn read(kind: Kind, path: &Path, budget: Option<&TextBudget>) -> Result<usize, DataError> {
    fn n<T: JsonlRecord>(p: &Path, b: Option<&TextBudget>) -> Result<usize, DataError> {
        read_jsonl_within::<T>(p, b).map(|r| r.len())
    }
    match kind {
        Kind::Sft => n::<SftRecord>(path, budget),
        Kind::Sample => n::<SampleRecord>(path, budget),
        Kind::Ranking => n::<RankingRecord>(path, budget),
        Kind::Pairwise => n::<PairwiseRecord>(path, budget),
        Kind::Preference => n::<PreferenceRecord>(path, budget),
        Kind::Prompt => n::<PromptRecord>(path, budget),
        Kind::Eval => n::<EvalRecord>(path, budget),
        Kind::Text => n::<TextRecord>(path, budget),
    }
}

/// No budget, a tiny model's (64 tokens of at most 8 bytes: lines capped at ~4 MB), and one
/// whose tokenizer drops some bytes (lines capped at the default 64 MiB).
fn budget(i: u8) -> Option<TextBudget> {
    match i % 3 {
        0 => None,
        1 => Some(TextBudget::new(64, 8, &[])),
        _ => Some(TextBudget::new(64, 8, &[0x04, 0xf1])),
    }
}

/// `Ok` when an error names `file:line` (or the file, for I/O).
fn check(result: Result<usize, DataError>) -> Result<Outcome, String> {
    match result {
        Ok(_) => Ok(Outcome::Accepted),
        Err(e) => {
            let msg = e.to_string();
            let at_line = matches!(e, DataError::Json { .. } | DataError::Record { .. });
            let named = match at_line {
                true => msg.starts_with(&format!("{}:", FILE.display())) && msg.contains(".jsonl:"),
                false => msg.contains("fuzz.jsonl"),
            };
            match named {
                true => Ok(Outcome::Refused),
                false => Err(format!("error does not name the file and line: {msg}")),
            }
        }
    }
}

static FILE: std::sync::LazyLock<std::path::PathBuf> = std::sync::LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("rlhf-data-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("fuzz.jsonl")
});

#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, seed) in seeds() {
        let path = dir.path().join("seed.jsonl");
        std::fs::write(&path, &seed.bytes).unwrap();
        let result = read(*kind, &path, None);
        // The SFT seed's last record has an empty prompt, which is allowed.
        assert!(
            result.as_ref().is_ok_and(|&n| n > 0),
            "{}: {result:?}",
            seed.name
        );
    }
}

#[test]
fn mutated_jsonl_reads_or_names_the_file_and_line() {
    let strategy = (0..seeds().len(), mutations(4), 0u8..3);
    rlhf_fuzz::run(
        "jsonl",
        512,
        Bounds::default(),
        strategy,
        |(seed, list, b)| {
            let (kind, seed) = &seeds()[*seed];
            std::fs::write(&*FILE, seed.mutated(list)).unwrap();
            check(read(*kind, &FILE, budget(*b).as_ref()))
        },
    );
    let _ = std::fs::remove_dir_all(FILE.parent().unwrap_or(&FILE));
}
