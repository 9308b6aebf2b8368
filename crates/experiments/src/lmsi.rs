//! E8, self-improvement without labels (Huang et al. 2022, "Large Language Models Can
//! Self-Improve"): a chain-of-thought model samples many paths per unlabelled question, keeps the
//! paths that reach the majority answer, and is fine-tuned on them in four mixed formats.
//!
//! Per seed: a tiny model trained from scratch on a few gold CoT demonstrations (a budget that
//! puts it in the paper's 30–60% regime), unlabelled questions from the training split, a test
//! set from the eval split. The same sampled paths feed three fine-tunes that differ only in which
//! paths they keep:
//! - `lmsi`: the paths that reach the majority answer (the method);
//! - `no-vote`: every path with an answer (does the vote matter?);
//! - `gold`: the paths whose answer is right (a perfect filter: the ceiling; uses labels).
//!
//! Sampling, filtering, the four formats and the accuracy with calibration are the library's
//! (`rlhf_train::lmsi`, the code behind `rlhf self-improve`); this module adds the data, the
//! models and the statistics.

use std::path::Path;

use rlhf_data::{EvalRecord, Split, WordProblem, answer_line, world_rng};
use rlhf_model::PromptFormat;
use rlhf_report::{LineChart, Series, md_table};
use rlhf_train::TrainerConfig;
use rlhf_train::lmsi::{self, Accuracy, Filter, Formats, LmsiConfig, Paths};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{Observer, flops, paired_diff, pct, run_seeds, seeds_ci, verdict, write_text};
use crate::error::Result;
use crate::tiny::{TinyLm, TinySpec, TrainStats, train_tokenizer};

/// `rlhf experiment lmsi`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmsiExperimentConfig {
    /// Gold CoT demonstrations the base model is trained on.
    pub base_problems: usize,
    /// Unlabelled questions the model improves on.
    pub questions: usize,
    /// Test problems per number of steps.
    pub test_per_steps: usize,
    pub max_problem_steps: usize,
    pub vocab: usize,
    pub model: TinySpec,
    /// Training of the base model (`seed` is replaced by the run's seed).
    pub base_trainer: TrainerConfig,
    /// Paths (32), temperature (0.7), filter threshold, exemplars, eval paths.
    pub lmsi: LmsiConfig,
    /// The fine-tune on the kept paths, from the base model.
    pub finetune: TrainerConfig,
}

impl Default for LmsiExperimentConfig {
    fn default() -> Self {
        Self {
            // The base is E3's CoT-trained model (3000 demonstrations) trained 600 steps instead
            // of 500: E3's results (27.6% at 500 steps, 41% at 600 in a one-seed probe) serve as
            // this experiment's validation set, since E8 draws its test problems from other
            // streams than E3's; the aim is the paper's 30–60% regime (a first try at 800 steps
            // gave 74% on seed 0: above it).
            base_problems: 3000,
            // 300 questions and 120 fine-tune steps keep the row within ~15 minutes on 2 cores
            // (400 and 200 took 19; set before the fresh-clone run, not from its results).
            questions: 300,
            test_per_steps: 75,
            max_problem_steps: 4,
            vocab: 512,
            model: TinySpec {
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                max_positions: 384,
            },
            base_trainer: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                max_steps: 600,
                batch_size: 32,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            // CoT formats only for the method and its controls: in a first 3-seed attempt the
            // paper's four formats (half of them direct answers) dropped seed 0 from 52% to 21%
            // even on gold-filtered paths. The four-format variant still runs as its own row.
            lmsi: LmsiConfig {
                eval_paths: 8,
                batch: 256,
                formats: Formats::Cot,
                ..Default::default()
            },
            // From the base model's last LR (3e-3 decayed to a tenth): a continuation, not a
            // fresh start.
            finetune: TrainerConfig {
                lr: 3e-4,
                warmup_steps: 20,
                max_steps: 120,
                batch_size: 16,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
        }
    }
}

/// A fine-tune of the base model: which paths it keeps and in which prompt formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The method: majority-vote paths, in the configured formats (`lmsi.formats`).
    Lmsi,
    /// Control: every answered path, no vote.
    NoVote,
    /// Ceiling: the right paths only (uses the labels).
    Gold,
    /// The method in the paper's four mixed formats, whatever `lmsi.formats` says.
    LmsiMixed,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Lmsi,
        Variant::NoVote,
        Variant::Gold,
        Variant::LmsiMixed,
    ];

    pub fn filter(self) -> Filter {
        match self {
            Variant::Lmsi | Variant::LmsiMixed => Filter::Majority,
            Variant::NoVote => Filter::NoVote,
            Variant::Gold => Filter::Gold,
        }
    }

    pub fn formats(self, configured: Formats) -> Formats {
        match self {
            Variant::LmsiMixed => Formats::Mixed,
            _ => configured,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Lmsi => "lmsi (majority vote)",
            Variant::NoVote => "no-vote control",
            Variant::Gold => "gold-filtered ceiling",
            Variant::LmsiMixed => "lmsi, the paper's four mixed formats",
        }
    }
}

/// One fine-tune of the base model on its own filtered paths.
#[derive(Debug, Clone, Serialize)]
pub struct FilterRun {
    pub variant: Variant,
    pub filter: Filter,
    pub formats: Formats,
    pub kept_paths: usize,
    pub kept_questions: usize,
    /// Share of the kept paths whose answer is right (a diagnostic that uses the labels).
    pub kept_correct: f64,
    pub records: usize,
    pub train: TrainStats,
    pub accuracy: Accuracy,
    #[serde(skip)]
    greedy: Vec<f64>,
    #[serde(skip)]
    vote: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub params: i64,
    pub base_train: TrainStats,
    pub base: Accuracy,
    /// Paths sampled in all, and the share with any answer.
    pub paths: usize,
    pub answered: f64,
    pub sampling_seconds: f64,
    pub runs: Vec<FilterRun>,
    #[serde(skip)]
    base_greedy: Vec<f64>,
    #[serde(skip)]
    base_vote: Vec<f64>,
}

fn outcomes(a: &Accuracy) -> (Vec<f64>, Vec<f64>) {
    a.items
        .iter()
        .map(|i| (f64::from(u8::from(i.greedy)), f64::from(u8::from(i.vote))))
        .unzip()
}

fn problems(
    seed: u64,
    stream: u64,
    split: Split,
    n: usize,
    steps: Option<usize>,
    max: usize,
) -> Vec<WordProblem> {
    let mut rng = world_rng(seed, stream);
    (0..n)
        .map(|i| WordProblem::generate(&mut rng, split, steps.unwrap_or(1 + i % max.max(1))))
        .collect()
}

fn cot(p: &WordProblem) -> String {
    format!(
        "{} {}",
        p.cot_sentences().join(" "),
        answer_line(p.answer())
    )
}

/// Runs E8 and writes `out/e8.md`, `out/results.json` and the plots.
pub fn run(
    cfg: &LmsiExperimentConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedRun>> {
    let (all, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        run_seed(cfg, seed, label, device, obs)
    })?;
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e8.md"), &text)?;
    Ok(all)
}

fn run_seed(
    cfg: &LmsiExperimentConfig,
    seed: u64,
    label: &str,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedRun> {
    let max = cfg.max_problem_steps.max(1);
    let base_data = problems(seed, 1, Split::Train, cfg.base_problems, None, max);
    let questions: Vec<String> = problems(seed, 2, Split::Train, cfg.questions, None, max)
        .iter()
        .map(WordProblem::prompt)
        .collect();
    let mut test = Vec::new();
    for k in 1..=max {
        test.extend(problems(
            seed,
            // Streams 20+, not E3's test problems (10+), whose results chose nothing here.
            20 + k as u64,
            Split::Eval,
            cfg.test_per_steps,
            Some(k),
            max,
        ));
    }
    let eval: Vec<EvalRecord> = test
        .iter()
        .map(|p| EvalRecord {
            prompt: p.prompt(),
            answer: p.answer().to_string(),
            fields: Default::default(),
        })
        .collect();
    // The tokenizer sees the base demonstrations and the phrases of LMSI's prompt formats.
    let mut texts: Vec<String> = base_data
        .iter()
        .flat_map(|p| [p.prompt(), cot(p)])
        .collect();
    texts.push("Q: A: Answer directly.".into());
    let tokenizer = train_tokenizer(&texts, cfg.vocab)?;
    let mut base = TinyLm::new(tokenizer, &cfg.model, PromptFormat::Chat, seed, device)?;
    let params = base.params();
    let mut trainer = cfg.base_trainer.clone();
    trainer.seed = seed;
    let pairs: Vec<(String, String)> = base_data.iter().map(|p| (p.prompt(), cot(p))).collect();
    obs.phase(
        &format!("{label}: training the base model"),
        trainer.max_steps,
    );
    let base_train = base.train(&pairs, &trainer, |s| obs.advance(s))?;
    let mut lcfg = cfg.lmsi.clone();
    lcfg.seed = seed;
    obs.phase(&format!("{label}: testing the base model"), 1);
    let base_acc = lmsi::accuracy(&base.pre, &eval, &lcfg)?;
    obs.note(&format!(
        "{label}: base greedy {:.1}%, self-consistency {:.1}%",
        100.0 * base_acc.greedy,
        100.0 * base_acc.self_consistency
    ));
    let t = std::time::Instant::now();
    let total = (questions.len() * lcfg.paths) as u64;
    obs.phase(&format!("{label}: sampling {} paths", total), total);
    let paths = lmsi::sample_paths(&base.pre, &questions, lcfg.paths, &lcfg, |d, _| {
        obs.advance(d as u64)
    })?;
    let sampling_seconds = t.elapsed().as_secs_f64();
    let answered = paths
        .iter()
        .flat_map(|p| &p.answers)
        .filter(|a| a.is_some())
        .count() as f64
        / total.max(1) as f64;
    let mut runs = Vec::new();
    for variant in Variant::ALL {
        runs.push(finetune(
            cfg, &base, &paths, variant, &eval, &base_acc, &lcfg, seed, label, obs,
        )?);
    }
    let (base_greedy, base_vote) = outcomes(&base_acc);
    Ok(SeedRun {
        seed,
        params,
        base_train,
        base: base_acc,
        paths: total as usize,
        answered,
        sampling_seconds,
        runs,
        base_greedy,
        base_vote,
    })
}

#[allow(clippy::too_many_arguments)]
fn finetune(
    cfg: &LmsiExperimentConfig,
    base: &TinyLm,
    paths: &[Paths],
    variant: Variant,
    eval: &[EvalRecord],
    base_acc: &Accuracy,
    lcfg: &LmsiConfig,
    seed: u64,
    label: &str,
    obs: &mut dyn Observer,
) -> Result<FilterRun> {
    let (filter, formats) = (variant.filter(), variant.formats(lcfg.formats));
    // The pipeline `rlhf self-improve` runs: keep, then write in the formats.
    let set = lmsi::training_set(&base.pre, paths, filter, formats, lcfg)?;
    let (kept, kept_questions, records) = (set.kept, set.kept_questions, set.records);
    let kept_correct = kept
        .iter()
        .filter(|(q, _, a)| lmsi::gold_answer(q) == Some(*a))
        .count() as f64
        / kept.len().max(1) as f64;
    let name = variant.name();
    if kept.is_empty() {
        // Nothing to train on: the model stays the base model.
        obs.note(&format!(
            "{label}: {name}: no path kept; the base model stands"
        ));
        let (greedy, vote) = outcomes(base_acc);
        return Ok(FilterRun {
            variant,
            filter,
            formats,
            kept_paths: 0,
            kept_questions: 0,
            kept_correct: 0.0,
            records: 0,
            train: TrainStats::default(),
            accuracy: base_acc.clone(),
            greedy,
            vote,
        });
    }
    let mut model = base.try_clone()?;
    let pairs: Vec<(String, String)> = records
        .iter()
        .map(|r| match r {
            rlhf_data::SftRecord::Completion { prompt, completion } => {
                (prompt.clone(), completion.clone())
            }
            rlhf_data::SftRecord::Chat { .. } => unreachable!("mixed_formats writes completions"),
        })
        .collect();
    let mut trainer = cfg.finetune.clone();
    trainer.seed = seed;
    obs.phase(
        &format!("{label}: fine-tuning {name} on {} paths", kept.len()),
        trainer.max_steps,
    );
    let train = model.train(&pairs, &trainer, |s| obs.advance(s))?;
    obs.phase(&format!("{label}: testing {name}"), 1);
    let accuracy = lmsi::accuracy(&model.pre, eval, lcfg)?;
    obs.note(&format!(
        "{label}: {name}: greedy {:.1}%, self-consistency {:.1}% ({} paths kept, {:.0}% right)",
        100.0 * accuracy.greedy,
        100.0 * accuracy.self_consistency,
        kept.len(),
        100.0 * kept_correct
    ));
    let (greedy, vote) = outcomes(&accuracy);
    Ok(FilterRun {
        variant,
        filter,
        formats,
        kept_paths: kept.len(),
        kept_questions,
        kept_correct,
        records: records.len(),
        train,
        accuracy,
        greedy,
        vote,
    })
}

fn report(cfg: &LmsiExperimentConfig, all: &[SeedRun], seconds: f64, out: &Path) -> Result<String> {
    let base_g: Vec<Vec<f64>> = all.iter().map(|s| s.base_greedy.clone()).collect();
    let base_v: Vec<Vec<f64>> = all.iter().map(|s| s.base_vote.clone()).collect();
    let of = |f: Variant, vote: bool| -> Vec<Vec<f64>> {
        all.iter()
            .map(|s| {
                s.runs
                    .iter()
                    .find(|r| r.variant == f)
                    .map(|r| {
                        if vote {
                            r.vote.clone()
                        } else {
                            r.greedy.clone()
                        }
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    let n = all.len().max(1) as f64;
    let mut rows = vec![vec![
        "base (CoT SFT on gold demos)".to_string(),
        pct(&seeds_ci(&base_g)),
        pct(&seeds_ci(&base_v)),
        "—".into(),
        "—".into(),
        flops(all.iter().map(|s| s.base_train.flops).sum::<f64>() / n),
    ]];
    for f in Variant::ALL {
        let runs: Vec<&FilterRun> = all
            .iter()
            .filter_map(|s| s.runs.iter().find(|r| r.variant == f))
            .collect();
        let k = runs.len().max(1) as f64;
        rows.push(vec![
            f.name().to_string(),
            pct(&seeds_ci(&of(f, false))),
            pct(&seeds_ci(&of(f, true))),
            format!(
                "{:.0}",
                runs.iter().map(|r| r.kept_paths as f64).sum::<f64>() / k
            ),
            format!(
                "{:.1}",
                100.0 * runs.iter().map(|r| r.kept_correct).sum::<f64>() / k
            ),
            flops(runs.iter().map(|r| r.train.flops).sum::<f64>() / k),
        ]);
    }
    let table = md_table(
        &[
            "model",
            "greedy accuracy % [95% CI]",
            &format!("self-consistency ({} paths) %", cfg.lmsi.eval_paths),
            "training paths kept",
            "kept paths right %",
            "fine-tune FLOPs",
        ],
        &rows,
    );
    let comparisons = [
        (
            "lmsi − base, greedy",
            paired_diff(&of(Variant::Lmsi, false), &base_g),
        ),
        (
            "lmsi − base, self-consistency",
            paired_diff(&of(Variant::Lmsi, true), &base_v),
        ),
        (
            "lmsi − no-vote, greedy",
            paired_diff(&of(Variant::Lmsi, false), &of(Variant::NoVote, false)),
        ),
        (
            "lmsi − no-vote, self-consistency",
            paired_diff(&of(Variant::Lmsi, true), &of(Variant::NoVote, true)),
        ),
        (
            "gold − lmsi, greedy",
            paired_diff(&of(Variant::Gold, false), &of(Variant::Lmsi, false)),
        ),
        (
            "four mixed formats − lmsi, greedy",
            paired_diff(&of(Variant::LmsiMixed, false), &of(Variant::Lmsi, false)),
        ),
    ];
    let mut diff_rows = Vec::new();
    let mut improved = false;
    for (i, (name, d)) in comparisons.iter().enumerate() {
        let ci = seeds_ci(d);
        if i < 2 {
            improved |= ci.lo > 0.0;
        }
        diff_rows.push(vec![name.to_string(), pct(&ci), verdict(&ci).to_string()]);
    }
    // Calibration, pooled over seeds: the vote's accuracy per vote-share bin, before and after.
    let calib = |items: &dyn Fn(&SeedRun) -> Vec<lmsi::ItemOutcome>| -> Vec<(f64, usize, f64)> {
        let mut bins = vec![(0usize, 0usize); 5];
        for s in all {
            for it in items(s) {
                let b = ((it.share * 5.0) as usize).min(4);
                bins[b].0 += 1;
                bins[b].1 += usize::from(it.vote);
            }
        }
        bins.into_iter()
            .enumerate()
            .filter(|(_, (c, _))| *c > 0)
            .map(|(i, (c, r))| (0.2 * i as f64 + 0.1, c, r as f64 / c as f64))
            .collect()
    };
    let before = calib(&|s: &SeedRun| s.base.items.clone());
    let after = calib(&|s: &SeedRun| {
        s.runs
            .iter()
            .find(|r| r.variant == Variant::Lmsi)
            .map(|r| r.accuracy.items.clone())
            .unwrap_or_default()
    });
    let mut calib_rows = Vec::new();
    for (mid, c, acc) in &before {
        let a = after.iter().find(|x| (x.0 - mid).abs() < 1e-9);
        calib_rows.push(vec![
            format!("{:.1}–{:.1}", mid - 0.1, mid + 0.1),
            c.to_string(),
            format!("{:.1}", 100.0 * acc),
            a.map_or("—".into(), |a| a.1.to_string()),
            a.map_or("—".into(), |a| format!("{:.1}", 100.0 * a.2)),
        ]);
    }
    let chart = LineChart {
        title: "E8: calibration of the vote (pooled over seeds)".into(),
        x_label: "majority's share of the paths".into(),
        y_label: "accuracy of the majority answer".into(),
        series: vec![
            Series {
                name: "base".into(),
                points: before.iter().map(|b| (b.0, b.2)).collect(),
                band: None,
            },
            Series {
                name: "after lmsi".into(),
                points: after.iter().map(|b| (b.0, b.2)).collect(),
                band: None,
            },
            Series {
                name: "perfect calibration".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                band: None,
            },
        ],
        ..Default::default()
    };
    chart.save(&out.join("e8_calibration"))?;
    let seeds: Vec<String> = all.iter().map(|s| s.seed.to_string()).collect();
    let mut text = format!(
        "# E8: self-improvement without labels (`rlhf experiment lmsi`)\n\n\
         Claim (Huang et al. 2022): fine-tuning on its own majority-vote reasoning paths improves \
         a model without labels (PaLM 540B, GSM8K self-consistency 74.4 → 82.1), using m = 32 \
         paths at T = 0.7, keeping every path that reaches the majority, and training on four \
         mixed formats.\n\n\
         Setup: seeds {}; per seed a {}-parameter Llama (d={}, {} layers) trained from scratch on \
         {} gold CoT demonstrations for {} steps (the base), {} unlabelled training-split \
         questions × {} paths at T = {}, then three fine-tunes of the base ({} steps, lr {}) on \
         the paths each filter keeps, in the four formats (few-shot CoT, few-shot direct, \
         zero-shot CoT: the plain question, zero-shot direct: \"… Answer directly.\"). Test: {} eval-split problems ({} per step count, \
         entities and operands never seen in training), greedy and self-consistency over {} \
         paths. Intervals: 95% two-level bootstrap (seeds, then problems). Settings fixed before \
         the run.\n\n{table}\n",
        seeds.join(", "),
        all.first().map_or(0, |s| s.params),
        cfg.model.hidden,
        cfg.model.layers,
        cfg.base_problems,
        cfg.base_trainer.max_steps,
        cfg.questions,
        cfg.lmsi.paths,
        cfg.lmsi.temperature,
        cfg.finetune.max_steps,
        cfg.finetune.lr,
        cfg.test_per_steps * cfg.max_problem_steps.max(1),
        cfg.test_per_steps,
        cfg.lmsi.eval_paths,
    );
    let in_regime = all
        .iter()
        .filter(|s| (0.3..=0.6).contains(&s.base.greedy))
        .count();
    text += &format!(
        "Base greedy accuracy per seed: {} ({} of {} seeds in the paper's 30–60% regime).\n\n",
        all.iter()
            .map(|s| format!("{:.1}%", 100.0 * s.base.greedy))
            .collect::<Vec<_>>()
            .join(", "),
        in_regime,
        all.len()
    );
    text += "Paired differences on the same test problems, in points:\n\n";
    text += &md_table(
        &["comparison", "difference [95% CI]", "reading"],
        &diff_rows,
    );
    text += &format!(
        "\n**Verdict: {}.** (Counts as not reproduced: no gain.)\n\n",
        if improved {
            "reproduced: LMSI beats the base model, with the interval above 0"
        } else {
            "not reproduced at this scale"
        }
    );
    text += "Calibration of the vote (test problems pooled over seeds): when more paths agree, \
             is the majority more often right?\n\n";
    text += &md_table(
        &[
            "vote share",
            "questions (base)",
            "accuracy % (base)",
            "questions (lmsi)",
            "accuracy % (lmsi)",
        ],
        &calib_rows,
    );
    text += "\n![calibration](e8_calibration.svg)\n\n";
    text += &format!(
        "Sampling {} paths took {:.0} s per seed on average; {:.1}% of the paths stated an \
         answer. Wall time: {seconds:.0} s in all.\n",
        all.first().map_or(0, |s| s.paths),
        all.iter().map(|s| s.sampling_seconds).sum::<f64>() / n,
        100.0 * all.iter().map(|s| s.answered).sum::<f64>() / n,
    );
    Ok(text)
}
