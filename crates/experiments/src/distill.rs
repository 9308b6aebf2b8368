//! E6, super-teacher distillation (Wang et al. 2021; Hsieh et al. 2023): a bigger teacher
//! pretrained on a corpus that holds the task's knowledge is adapted with 100 gold labels, labels
//! an unlabelled pool of questions, and a small student trained from scratch on those labels is
//! compared with the same student trained on the 100 gold labels alone and on the whole pool
//! with gold labels (the upper bound, and what the teacher's labels replace).
//!
//! The world of one seed: a lexicon of invented adjectives, each secretly positive or negative.
//! The teacher's pretraining corpus uses every word in sentences followed by a reaction that
//! gives its polarity away ("... I would happily go again."); the task is to classify a short
//! review. Test reviews (word, thing, sentence frame) occur in neither the pool nor the gold
//! set; with 100 gold reviews most of the lexicon is never labelled, so a student trained on the
//! gold set alone must guess for most words, while the pool (unlabelled) covers them all.
//!
//! Not here: labelling and filtering (`rlhf_train::distill`), the loop (`tiny.rs`).

use std::collections::HashSet;
use std::path::Path;

use rand::RngCore;
use rlhf_model::PromptFormat;
use rlhf_report::md_table;
use rlhf_train::TrainerConfig;
use rlhf_train::distill::{self, DistillConfig};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{
    Observer, flops, paired_diff, pct, run_seeds, seeds_ci, uniform, verdict, write_text,
};
use crate::error::{ExperimentError, Result};
use crate::tiny::{TinyLm, TinySpec, TrainStats, train_tokenizer};

/// `rlhf experiment distill`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillExperimentConfig {
    /// Invented adjectives in the lexicon.
    pub words: usize,
    pub gold: usize,
    pub pool: usize,
    pub test: usize,
    /// Reviews per pretraining document.
    pub reviews_per_doc: usize,
    /// Pretraining documents.
    pub corpus_docs: usize,
    pub vocab: usize,
    pub teacher: TinySpec,
    pub student: TinySpec,
    pub pretrain: TrainerConfig,
    /// Fine-tuning the teacher on the gold labels.
    pub adapt: TrainerConfig,
    /// Every student run: the same steps whatever its data.
    pub student_trainer: TrainerConfig,
    pub rows: usize,
}

impl Default for DistillExperimentConfig {
    fn default() -> Self {
        Self {
            words: 200,
            gold: 100,
            pool: 7000,
            test: 400,
            reviews_per_doc: 3,
            corpus_docs: 12000,
            vocab: 800,
            teacher: TinySpec {
                hidden: 96,
                layers: 3,
                heads: 4,
                kv_heads: 2,
                max_positions: 96,
            },
            student: TinySpec {
                hidden: 48,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                max_positions: 64,
            },
            pretrain: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                max_steps: 1000,
                batch_size: 32,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            adapt: TrainerConfig {
                lr: 5e-4,
                warmup_steps: 10,
                max_steps: 100,
                batch_size: 16,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            student_trainer: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                max_steps: 600,
                batch_size: 64,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            rows: 512,
        }
    }
}

const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pa", "se", "do", "ri", "fu", "ba", "te", "gi",
    "mo", "ha", "ju", "we",
];
const THINGS: [&str; 8] = [
    "film", "meal", "book", "hotel", "song", "game", "trip", "show",
];
/// The frames of task reviews.
const FRAMES: [&str; 5] = [
    "The {t} was {w}.",
    "What a {w} {t}.",
    "I found the {t} {w}.",
    "Such a {w} {t}, honestly.",
    "Our {t} felt {w}.",
];
/// The corpus's own frames and reactions (never a task prompt).
const CORPUS_FRAMES: [&str; 3] = [
    "Everyone said the {t} was {w}.",
    "It was a {w} {t}.",
    "People call that {t} {w}.",
];
const POSITIVE: [&str; 4] = [
    "I would happily go again.",
    "We loved every minute.",
    "Highly recommended.",
    "A positive experience.",
];
const NEGATIVE: [&str; 4] = [
    "I would never go again.",
    "We regretted it.",
    "Avoid it.",
    "A negative experience.",
];
const QUESTION: &str = "Review: {r}\nIs this review positive or negative?";

/// One seed's lexicon: invented words with a hidden polarity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lexicon {
    pub words: Vec<String>,
    pub positive: Vec<bool>,
}

impl Lexicon {
    pub fn new(seed: u64, cfg: &DistillExperimentConfig) -> Result<Self> {
        if cfg.words < 2 || cfg.words > 4000 {
            return Err(ExperimentError::Invalid(format!(
                "words must be between 2 and 4000, found {}",
                cfg.words
            )));
        }
        let mut rng = rlhf_data::world_rng(seed, 0xE6);
        let mut seen = HashSet::new();
        let mut words = Vec::with_capacity(cfg.words);
        while words.len() < cfg.words {
            let w: String = (0..3)
                .map(|_| SYLLABLES[uniform(&mut rng, 0, SYLLABLES.len() as i64 - 1) as usize])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        // Exactly half positive, in a seeded order.
        let mut positive: Vec<bool> = (0..cfg.words).map(|i| i % 2 == 0).collect();
        for i in (1..positive.len()).rev() {
            positive.swap(i, uniform(&mut rng, 0, i as i64) as usize);
        }
        Ok(Self { words, positive })
    }

    /// A corpus sentence using word `w`, then a reaction that shows its polarity.
    fn sentence(&self, w: usize, rng: &mut dyn RngCore) -> String {
        let pick = |rng: &mut dyn RngCore, xs: &[&'static str]| -> &'static str {
            xs[uniform(rng, 0, xs.len() as i64 - 1) as usize]
        };
        let frame = pick(rng, &CORPUS_FRAMES);
        let thing = pick(rng, &THINGS);
        let reaction = pick(
            rng,
            if self.positive[w] {
                &POSITIVE
            } else {
                &NEGATIVE
            },
        );
        format!(
            "{} {reaction}",
            frame.replace("{t}", thing).replace("{w}", &self.words[w])
        )
    }

    /// A task question: (prompt, gold answer).
    pub fn question(&self, q: Question) -> (String, String) {
        let review = FRAMES[q.frame]
            .replace("{t}", THINGS[q.thing])
            .replace("{w}", &self.words[q.word]);
        let answer = if self.positive[q.word] {
            "positive"
        } else {
            "negative"
        };
        (QUESTION.replace("{r}", &review), answer.to_string())
    }
}

/// (word, thing, frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Question {
    pub word: usize,
    pub thing: usize,
    pub frame: usize,
}

/// The gold, pool and test questions of a seed, disjoint.
pub fn split(
    seed: u64,
    cfg: &DistillExperimentConfig,
) -> Result<(Vec<Question>, Vec<Question>, Vec<Question>)> {
    let mut all: Vec<Question> = (0..cfg.words)
        .flat_map(|word| {
            (0..THINGS.len()).flat_map(move |thing| {
                (0..FRAMES.len()).map(move |frame| Question { word, thing, frame })
            })
        })
        .collect();
    if cfg.gold + cfg.pool + cfg.test > all.len() {
        return Err(ExperimentError::Invalid(format!(
            "gold + pool + test = {} questions, but {} words × {} things × {} frames make only {}",
            cfg.gold + cfg.pool + cfg.test,
            cfg.words,
            THINGS.len(),
            FRAMES.len(),
            all.len()
        )));
    }
    let mut rng = rlhf_data::world_rng(seed, 0xE61);
    for i in (1..all.len()).rev() {
        all.swap(i, uniform(&mut rng, 0, i as i64) as usize);
    }
    let gold = all[..cfg.gold].to_vec();
    let test = all[cfg.gold..cfg.gold + cfg.test].to_vec();
    let pool = all[cfg.gold + cfg.test..cfg.gold + cfg.test + cfg.pool].to_vec();
    Ok((gold, pool, test))
}

/// One student (or the teacher) on the test questions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub name: String,
    pub correct: Vec<f64>,
    pub train: TrainStats,
    pub examples: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    pub teacher_params: i64,
    pub student_params: i64,
    pub pretrain: TrainStats,
    /// The teacher's labels on the pool that equal the gold label.
    pub label_accuracy: f64,
    pub labels_kept: usize,
    pub labelling_seconds: f64,
    /// Teacher FLOPs spent labelling (2 × parameters × tokens).
    pub labelling_flops: f64,
    pub teacher: Scored,
    pub students: Vec<Scored>,
}

/// Runs E6 and writes `out/e6.md` and `out/results.json`.
pub fn run(
    cfg: &DistillExperimentConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedRun>> {
    let (all, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        run_seed(cfg, seed, label, device, obs)
    })?;
    let text = report(cfg, &all, seconds)?;
    write_text(&out.join("e6.md"), &text)?;
    Ok(all)
}

fn test_accuracy(
    model: &TinyLm,
    prompts: &[String],
    answers: &[String],
    rows: usize,
) -> Result<Vec<f64>> {
    let outputs = distill::label_local(
        &model.pre,
        PromptFormat::Raw,
        prompts,
        &DistillConfig {
            max_new_tokens: 8,
            rows,
            ..Default::default()
        },
        |_, _| {},
    )?;
    Ok(outputs
        .iter()
        .zip(answers)
        .map(|(o, a)| f64::from(u8::from(rlhf_data::answer_matches(o, a))))
        .collect())
}

fn run_seed(
    cfg: &DistillExperimentConfig,
    seed: u64,
    label: &str,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedRun> {
    let lexicon = Lexicon::new(seed, cfg)?;
    let (gold, pool, test) = split(seed, cfg)?;
    let qa = |qs: &[Question]| -> Vec<(String, String)> {
        qs.iter()
            .map(|q| {
                let (p, a) = lexicon.question(*q);
                (PromptFormat::Raw.prompt_text(&p), a)
            })
            .collect()
    };
    let (gold_qa, pool_qa, test_qa) = (qa(&gold), qa(&pool), qa(&test));
    let test_prompts: Vec<String> = test.iter().map(|q| lexicon.question(*q).0).collect();
    let test_answers: Vec<String> = test_qa.iter().map(|(_, a)| a.clone()).collect();
    // The corpus: every word in context, the reaction giving its polarity away.
    let mut rng = rlhf_data::world_rng(seed, 0xE62);
    let docs: Vec<String> = (0..cfg.corpus_docs)
        .map(|_| {
            (0..cfg.reviews_per_doc.max(1))
                .map(|_| {
                    let w = uniform(&mut rng, 0, cfg.words as i64 - 1) as usize;
                    lexicon.sentence(w, &mut rng)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let texts: Vec<String> = docs
        .iter()
        .cloned()
        .chain(pool_qa.iter().map(|(p, a)| format!("{p}{a}")))
        .collect();
    let tokenizer = train_tokenizer(&texts, cfg.vocab)?;
    let mut teacher = TinyLm::new(
        tokenizer.clone(),
        &cfg.teacher,
        PromptFormat::Raw,
        seed,
        device,
    )?;
    let teacher_params = teacher.params();
    let mut pretrain = cfg.pretrain.clone();
    pretrain.seed = seed;
    obs.phase(
        &format!(
            "{label}: pretraining the teacher ({teacher_params} parameters) on {} documents",
            docs.len()
        ),
        pretrain.max_steps,
    );
    let doc_pairs: Vec<(String, String)> =
        docs.iter().map(|d| (String::new(), d.clone())).collect();
    let pretrain_stats = teacher.train(&doc_pairs, &pretrain, |s| obs.advance(s))?;
    let mut adapt = cfg.adapt.clone();
    adapt.seed = seed;
    obs.phase(
        &format!(
            "{label}: adapting the teacher on {} gold labels",
            gold.len()
        ),
        adapt.max_steps,
    );
    let adapt_stats = teacher.train(&gold_qa, &adapt, |s| obs.advance(s))?;
    let teacher_correct = test_accuracy(&teacher, &test_prompts, &test_answers, cfg.rows)?;
    obs.note(&format!(
        "{label}: teacher {:.1}% on the test questions",
        100.0 * mean(&teacher_correct)
    ));
    // Label the pool.
    let pool_prompts: Vec<String> = pool.iter().map(|q| lexicon.question(*q).0).collect();
    obs.phase(
        &format!("{label}: the teacher labels {} questions", pool.len()),
        pool.len() as u64,
    );
    let t = std::time::Instant::now();
    let dcfg = DistillConfig {
        max_new_tokens: 8,
        rows: cfg.rows,
        ..Default::default()
    };
    let outputs = distill::label_local(
        &teacher.pre,
        PromptFormat::Raw,
        &pool_prompts,
        &dcfg,
        |d, _| obs.advance(d as u64),
    )?;
    let labelling_seconds = t.elapsed().as_secs_f64();
    let label_tokens: usize = pool_qa
        .iter()
        .zip(&outputs)
        .map(|((p, _), o)| {
            teacher.count_tokens(p).unwrap_or(0) + teacher.count_tokens(o).unwrap_or(0) + 1
        })
        .sum();
    let labelling_flops = 2.0 * teacher_params as f64 * label_tokens as f64;
    let labels = distill::filter(&pool_prompts, outputs, &dcfg)?;
    let label_accuracy = labels
        .iter()
        .zip(&pool_qa)
        .filter(|(l, (_, a))| rlhf_data::answer_matches(&l.completion, a))
        .count() as f64
        / labels.len().max(1) as f64;
    let teacher_labelled: Vec<(String, String)> = labels
        .iter()
        .filter(|l| l.dropped.is_none())
        .map(|l| {
            (
                PromptFormat::Raw.prompt_text(&l.prompt),
                l.completion.clone(),
            )
        })
        .collect();
    obs.note(&format!(
        "{label}: {:.1}% of the teacher's {} labels are right ({} kept)",
        100.0 * label_accuracy,
        labels.len(),
        teacher_labelled.len()
    ));
    let mut students = Vec::new();
    let mut student_params = 0;
    let mut trainer = cfg.student_trainer.clone();
    trainer.seed = seed;
    for (name, data) in [
        ("student on the 100 gold labels", &gold_qa),
        ("student on the teacher's labels", &teacher_labelled),
        ("student on gold labels of the whole pool", &pool_qa),
    ] {
        let name = name.replace("100", &gold.len().to_string());
        let mut student = TinyLm::new(
            tokenizer.clone(),
            &cfg.student,
            PromptFormat::Raw,
            seed,
            device,
        )?;
        student_params = student.params();
        obs.phase(&format!("{label}: {name}"), trainer.max_steps);
        // A teacher whose every label was filtered out leaves its student untrained.
        let train = if data.is_empty() {
            obs.note(&format!(
                "{label}: {name}: no labels; the student stays untrained"
            ));
            TrainStats::default()
        } else {
            student.train(data, &trainer, |s| obs.advance(s))?
        };
        let correct = test_accuracy(&student, &test_prompts, &test_answers, cfg.rows)?;
        obs.note(&format!("{label}: {name}: {:.1}%", 100.0 * mean(&correct)));
        students.push(Scored {
            name,
            correct,
            train,
            examples: data.len(),
        });
    }
    Ok(SeedRun {
        seed,
        teacher_params,
        student_params,
        pretrain: pretrain_stats,
        label_accuracy,
        labels_kept: teacher_labelled.len(),
        labelling_seconds,
        labelling_flops,
        teacher: Scored {
            name: "teacher (pretrained, adapted on the gold labels)".into(),
            correct: teacher_correct,
            train: adapt_stats,
            examples: gold.len(),
        },
        students,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The teacher and the two main students per seed: a mean can hide a teacher that failed.
fn per_seed_line(all: &[SeedRun]) -> String {
    let cells: Vec<String> = all
        .iter()
        .map(|s| {
            format!(
                "seed {}: teacher {:.1}% (labels {:.1}% right), student on its labels {:.1}%, on \
                 the gold labels {:.1}%",
                s.seed,
                100.0 * mean(&s.teacher.correct),
                100.0 * s.label_accuracy,
                100.0 * mean(&s.students[1].correct),
                100.0 * mean(&s.students[0].correct)
            )
        })
        .collect();
    format!("Per seed: {}.", cells.join("; "))
}

fn report(cfg: &DistillExperimentConfig, all: &[SeedRun], seconds: f64) -> Result<String> {
    let k = all.len() as f64;
    let avg = |f: &dyn Fn(&SeedRun) -> f64| all.iter().map(f).sum::<f64>() / k;
    let per_seed = |f: &dyn Fn(&SeedRun) -> &Scored| -> Vec<Vec<f64>> {
        all.iter().map(|s| f(s).correct.clone()).collect()
    };
    let mut rows = vec![vec![
        format!(
            "teacher ({} parameters, pretrained, adapted on {} gold labels)",
            all[0].teacher_params, cfg.gold
        ),
        pct(&seeds_ci(&per_seed(&|s| &s.teacher))),
        format!("{} gold", cfg.gold),
        format!(
            "{} (pretraining) + {}",
            flops(avg(&|s| s.pretrain.flops)),
            flops(avg(&|s| s.teacher.train.flops))
        ),
    ]];
    let n_students = all[0].students.len();
    for i in 0..n_students {
        let s0 = &all[0].students[i];
        let labels = match i {
            0 => format!("{} gold", cfg.gold),
            1 => format!(
                "{} teacher labels ({:.1}% right) + {} gold for the teacher",
                all[0].labels_kept,
                100.0 * avg(&|s| s.label_accuracy),
                cfg.gold
            ),
            _ => format!("{} gold", s0.examples),
        };
        rows.push(vec![
            format!("{} ({} parameters)", s0.name, all[0].student_params),
            pct(&seeds_ci(&per_seed(&|s| &s.students[i]))),
            labels,
            flops(avg(&|s| s.students[i].train.flops)),
        ]);
    }
    let table = md_table(
        &["model", "test accuracy % [95% CI]", "labels", "train FLOPs"],
        &rows,
    );
    let distilled = per_seed(&|s| &s.students[1]);
    let few = per_seed(&|s| &s.students[0]);
    let full = per_seed(&|s| &s.students[2]);
    let teacher = per_seed(&|s| &s.teacher);
    let gain = seeds_ci(&paired_diff(&distilled, &few));
    let gap = seeds_ci(&paired_diff(&distilled, &full));
    let vs_teacher = seeds_ci(&paired_diff(&distilled, &teacher));
    let comparisons = md_table(
        &["comparison", "difference, points [95% CI]", "reading"],
        &[
            vec![
                "teacher-labelled student − gold-100 student".replace("100", &cfg.gold.to_string()),
                pct(&gain),
                verdict(&gain).into(),
            ],
            vec![
                "teacher-labelled student − full-gold student".into(),
                pct(&gap),
                verdict(&gap).into(),
            ],
            vec![
                "teacher-labelled student − teacher".into(),
                pct(&vs_teacher),
                verdict(&vs_teacher).into(),
            ],
        ],
    );
    let reproduced = gain.lo > 0.0;
    let seeds: Vec<String> = all.iter().map(|s| s.seed.to_string()).collect();
    let text = format!(
        "# E6: super-teacher distillation (`rlhf experiment distill`)\n\n\
         Claim (Wang et al. 2021: labels from GPT-3 cost 50–96% less than human labels for the \
         same quality; Hsieh et al. 2023: a 770M T5 distilled step by step beats few-shot PaLM \
         540B): a big model adapted with a few labels can label data to train a small model \
         cheaply.\n\n\
         Setup: seeds {}. Per seed a lexicon of {} invented adjectives, half of them \
         positive; the teacher's pretraining corpus ({} documents) uses each in sentences \
         followed by a reaction that gives its polarity away. The task: is a one-sentence review \
         (one word, one of 8 things, one of 5 frames) positive or negative? The teacher (d={}, \
         {} layers) is pretrained on the corpus for {} steps, then fine-tuned on {} gold reviews \
         for {} steps; it labels a pool of {} reviews (greedy, through \
         `rlhf_train::distill`). Each student (d={}, {} layers) is trained from scratch for {} \
         steps of {} on its labels. {} test reviews, none of them in the pool or the gold set. \
         Chance is 50%. Intervals: \
         95% two-level bootstrap (seeds, then questions).\n\n{table}\n{comparisons}\n\
         **Verdict: {} (Counts as not reproduced: the teacher-labelled student no better than \
         the gold-{} student.)\n\n{}\n\n\
         Labelling cost: {:.1} s and {} FLOPs of teacher compute per seed for {} labels, in place \
         of {} human labels.\n\nWall time: {seconds:.0} s in all.\n",
        seeds.join(", "),
        cfg.words,
        cfg.corpus_docs,
        cfg.teacher.hidden,
        cfg.teacher.layers,
        cfg.pretrain.max_steps,
        cfg.gold,
        cfg.adapt.max_steps,
        cfg.pool,
        cfg.student.hidden,
        cfg.student.layers,
        cfg.student_trainer.max_steps,
        cfg.student_trainer.batch_size,
        cfg.test,
        if reproduced {
            format!(
                "reproduced.** The student trained on the teacher's labels beats the one trained \
                 on the {} gold labels by {} points{}.",
                cfg.gold,
                pct(&gain),
                if gap.hi < 0.0 {
                    format!(
                        ", and stays {} points below the full-gold upper bound",
                        pct(&gap)
                    )
                } else {
                    ", and matches the full-gold upper bound".to_string()
                }
            )
        } else {
            "not reproduced at this scale.** The teacher's labels do not beat the gold labels \
             they came from."
                .to_string()
        },
        cfg.gold,
        per_seed_line(all),
        avg(&|s| s.labelling_seconds),
        flops(avg(&|s| s.labelling_flops)),
        cfg.pool,
        cfg.pool,
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reviews_are_new_and_the_corpus_gives_polarity_away() {
        let cfg = DistillExperimentConfig {
            words: 20,
            gold: 20,
            pool: 300,
            test: 40,
            ..Default::default()
        };
        let (gold, pool, test) = split(1, &cfg).unwrap();
        assert_eq!((gold.len(), pool.len(), test.len()), (20, 300, 40));
        let seen: HashSet<Question> = gold.iter().chain(&pool).copied().collect();
        assert!(test.iter().all(|q| !seen.contains(q)));
        let lex = Lexicon::new(1, &cfg).unwrap();
        assert_eq!(lex.positive.iter().filter(|p| **p).count(), 10);
        let (q, a) = lex.question(test[0]);
        assert!(q.contains(&lex.words[test[0].word]) && q.starts_with("Review: "));
        assert_eq!(a == "positive", lex.positive[test[0].word]);
        let mut rng = rlhf_data::world_rng(0, 0);
        for w in 0..20 {
            let s = lex.sentence(w, &mut rng);
            let cue = if lex.positive[w] {
                &POSITIVE
            } else {
                &NEGATIVE
            };
            assert!(cue.iter().any(|c| s.ends_with(c)), "{s}");
            assert!(!s.contains('?') && !s.contains("Review"));
        }
        let too_many = DistillExperimentConfig { words: 2, ..cfg };
        assert!(split(1, &too_many).is_err());
    }
}
