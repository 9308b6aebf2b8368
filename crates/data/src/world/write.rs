//! Builds the task world's files from a `WorldConfig`: `corpus.txt` (+ `corpus.jsonl`),
//! `sft.jsonl`, `prompts.jsonl`, `eval.jsonl`, `dev.jsonl` and `world.json` (the resolved
//! config and a summary), each from its own seeded stream.
//!
//! Training files (corpus, SFT, prompts) use only the train split; `eval.jsonl` and `dev.jsonl`
//! only the eval split, with no prompt in both (dev is for choosing recipes). It does not train or score anything.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use rand::RngCore;
use serde::Serialize;
use serde_json::{Value, json};

use super::config::{Family, Split, WorldConfig};
use super::corpus::document;
use super::flaws::{Quality, respond};
use super::task::Task;
use crate::error::{DataError, Result};
use crate::formats::{EvalRecord, PromptRecord, TextRecord};
use crate::jsonl::{write_jsonl, write_text};
use crate::rng::{chance, world_rng};

/// One line of `sft.jsonl`: TRL's prompt/completion plus what kind of demonstration it is, so
/// experiments can measure what the flawed share costs. Reads back as `SftRecord`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SftDemo {
    pub prompt: String,
    pub completion: String,
    pub family: Family,
    pub quality: Quality,
    /// The flaw(s) applied; empty for clean demonstrations.
    pub flaw: String,
}

/// The world in memory, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// Pretraining documents.
    pub corpus: Vec<String>,
    pub sft: Vec<SftDemo>,
    pub prompts: Vec<PromptRecord>,
    pub eval: Vec<EvalRecord>,
    /// Held-out dev items: the eval split's distribution, disjoint from `eval`.
    pub dev: Vec<EvalRecord>,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub name: String,
    pub records: usize,
    pub bytes: u64,
}

/// What `write_world` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorldSummary {
    pub seed: u64,
    pub files: Vec<FileSummary>,
    /// SFT demonstrations by quality.
    pub sft_quality: BTreeMap<String, usize>,
    /// Eval items by family.
    pub eval_families: BTreeMap<String, usize>,
}

/// Random streams, one per file, so that resizing one file leaves the others byte-identical.
const CORPUS_STREAM: u64 = 1;
const SFT_STREAM: u64 = 2;
const PROMPTS_STREAM: u64 = 3;
const EVAL_STREAM: u64 = 4;
const DEV_STREAM: u64 = 5;

/// Generates the world in memory.
pub fn build_world(cfg: &WorldConfig) -> Result<World> {
    cfg.validate()?;
    let mut rng = world_rng(cfg.seed, CORPUS_STREAM);
    let corpus = (0..cfg.corpus_docs)
        .map(|_| document(&mut rng, &cfg.families, cfg.max_steps))
        .collect();
    let mut rng = world_rng(cfg.seed, SFT_STREAM);
    let sft = (0..cfg.sft_examples)
        .map(|i| {
            let family = cfg.families[i % cfg.families.len()];
            let task = Task::generate(&mut rng, family, Split::Train, cfg.max_steps);
            demonstration(&task, cfg, &mut rng)
        })
        .collect();
    let mut rng = world_rng(cfg.seed, PROMPTS_STREAM);
    let prompts = distinct(
        &mut rng,
        cfg,
        Split::Train,
        cfg.prompts,
        "prompts.jsonl",
        HashSet::new(),
        false,
    )?
    .iter()
    .map(|t| PromptRecord {
        prompt: t.prompt(),
        fields: with_split(t, Split::Train, None),
    })
    .collect();
    let mut rng = world_rng(cfg.seed, EVAL_STREAM);
    let eval_record = |t: &Task| EvalRecord {
        prompt: t.prompt(),
        answer: t.answer(),
        fields: with_split(t, Split::Eval, Some(t.solution())),
    };
    let eval: Vec<EvalRecord> = distinct(
        &mut rng,
        cfg,
        Split::Eval,
        cfg.eval_examples,
        "eval.jsonl",
        HashSet::new(),
        false,
    )?
    .iter()
    .map(eval_record)
    .collect();
    let mut rng = world_rng(cfg.seed, DEV_STREAM);
    let taken = eval.iter().map(|r| r.prompt.clone()).collect();
    let dev = distinct(
        &mut rng,
        cfg,
        Split::Eval,
        cfg.dev_examples,
        "dev.jsonl",
        taken,
        true,
    )?
    .iter()
    .map(eval_record)
    .collect();
    Ok(World {
        corpus,
        sft,
        prompts,
        eval,
        dev,
    })
}

/// A demonstration that is flawed with probability `sft_error_rate`: wrong with probability
/// `sft_wrong_share`, else sloppy.
fn demonstration<R: RngCore + ?Sized>(task: &Task, cfg: &WorldConfig, rng: &mut R) -> SftDemo {
    let quality = if !chance(rng, cfg.sft_error_rate) {
        Quality::Clean
    } else if chance(rng, cfg.sft_wrong_share) {
        Quality::Wrong
    } else {
        Quality::Sloppy
    };
    let r = respond(task, quality, rng);
    SftDemo {
        prompt: task.prompt(),
        completion: r.text,
        family: task.family(),
        quality: r.quality,
        flaw: r.flaw,
    }
}

fn with_split(
    task: &Task,
    split: Split,
    solution: Option<String>,
) -> serde_json::Map<String, Value> {
    let mut fields = task.fields();
    fields.insert("split".into(), json!(split.name()));
    if let Some(s) = solution {
        fields.insert("solution".into(), json!(s));
    }
    fields
}

/// `n` tasks with distinct prompts, none of them in `seen`, cycling through the families. When
/// a family's space runs out this fails, unless `partial`: then that family is skipped from then
/// on and the result may be shorter than `n` (for `dev.jsonl`, drawn from what `eval.jsonl`
/// leaves of the held-out split).
fn distinct<R: RngCore + ?Sized>(
    rng: &mut R,
    cfg: &WorldConfig,
    split: Split,
    n: usize,
    file: &'static str,
    mut seen: HashSet<String>,
    partial: bool,
) -> Result<Vec<Task>> {
    // Generous: a family's space is exhausted long before 1000 consecutive duplicates.
    const MAX_TRIES: usize = 1000;
    let mut out = Vec::with_capacity(n);
    let mut exhausted = HashSet::new();
    for i in 0..n {
        let family = cfg.families[i % cfg.families.len()];
        if exhausted.contains(&family) {
            continue;
        }
        let mut tries = 0;
        loop {
            let task = Task::generate(rng, family, split, cfg.max_steps);
            if seen.insert(task.prompt()) {
                out.push(task);
                break;
            }
            tries += 1;
            if tries >= MAX_TRIES {
                if partial {
                    exhausted.insert(family);
                    break;
                }
                return Err(DataError::Exhausted {
                    file,
                    family: family.name(),
                    split: split.name(),
                    wanted: n.div_ceil(cfg.families.len()),
                    got: out.iter().filter(|t| t.family() == family).count(),
                    tries,
                });
            }
        }
    }
    Ok(out)
}

/// Generates the world and writes its files into `out` (created if missing).
pub fn write_world(out: &Path, cfg: &WorldConfig) -> Result<WorldSummary> {
    let world = build_world(cfg)?;
    fs::create_dir_all(out).map_err(|source| DataError::Io {
        path: out.to_path_buf(),
        op: "create the directory",
        source,
    })?;
    // Documents are separated by a blank line; none contains one.
    write_text(out.join("corpus.txt"), &(world.corpus.join("\n\n") + "\n"))?;
    let texts = world.corpus.iter().map(|t| TextRecord { text: t.clone() });
    write_jsonl(out.join("corpus.jsonl"), texts)?;
    write_jsonl(out.join("sft.jsonl"), &world.sft)?;
    write_jsonl(out.join("prompts.jsonl"), &world.prompts)?;
    write_jsonl(out.join("eval.jsonl"), &world.eval)?;
    write_jsonl(out.join("dev.jsonl"), &world.dev)?;
    let summary = summarize(out, cfg, &world)?;
    let meta =
        json!({"format": "rlhf-task-world", "version": 1, "config": cfg, "summary": summary});
    let text = serde_json::to_string_pretty(&meta).map_err(|source| DataError::Serialize {
        path: out.join("world.json"),
        source,
    })?;
    write_text(out.join("world.json"), &(text + "\n"))?;
    Ok(summary)
}

fn summarize(out: &Path, cfg: &WorldConfig, world: &World) -> Result<WorldSummary> {
    let counts = [
        ("corpus.txt", world.corpus.len()),
        ("corpus.jsonl", world.corpus.len()),
        ("sft.jsonl", world.sft.len()),
        ("prompts.jsonl", world.prompts.len()),
        ("eval.jsonl", world.eval.len()),
        ("dev.jsonl", world.dev.len()),
    ];
    let mut files = Vec::new();
    for (name, records) in counts {
        let path = out.join(name);
        let meta = fs::metadata(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            op: "stat",
            source,
        })?;
        files.push(FileSummary {
            name: name.to_string(),
            records,
            bytes: meta.len(),
        });
    }
    let mut sft_quality = BTreeMap::new();
    for d in &world.sft {
        *sft_quality.entry(d.quality.name().to_string()).or_insert(0) += 1;
    }
    let mut eval_families = BTreeMap::new();
    for e in &world.eval {
        let family = e
            .fields
            .get("family")
            .and_then(Value::as_str)
            .unwrap_or("?");
        *eval_families.entry(family.to_string()).or_insert(0) += 1;
    }
    Ok(WorldSummary {
        seed: cfg.seed,
        files,
        sft_quality,
        eval_families,
    })
}
