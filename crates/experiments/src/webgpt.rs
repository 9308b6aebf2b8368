//! E7, WebGPT (Nakano et al. 2021): a model that browses a document collection with text
//! commands, quotes what it reads and answers citing the quotes, trained by behaviour cloning on
//! demonstrations, then improved by best-of-n sampling against a reward model trained on ranked
//! comparisons of its answers (WebGPT's best model used best-of-64).
//!
//! The world is `rlhf_browse::EntityWorld`: invented towns whose facts are drawn anew each
//! seed, so a closed-book model (trained on the same questions about other towns) can only guess.
//! Per seed: the scripted, noisy demonstrator browses every training question through the real
//! browser; a tiny Llama is trained on its (observation → action) and (quotes → answer) steps;
//! the same model class is trained closed-book on (question → answer); the BC policy browses the
//! held-out questions greedily; it also samples K episodes for training questions, which the
//! simulated labelers rank by the oracle (right answer ≫ supported by its quotes); a reward model
//! (the BC model with a scalar head) learns from those rankings; and for each held-out question
//! 64 episodes are sampled and the reward model picks the best of the first n.
//!
//! Every answer is graded by the oracle for accuracy and for citation support: the cited quotes
//! must exist, occur on their pages in the index, and contain the answer.
//!
//! Not here: the browser, the index and the world (`rlhf-browse`), the ranking loss
//! (`rlhf_train::reward`).

use std::path::Path;

use rand::RngCore;
use rlhf_browse::{
    AgentConfig, BrowseConfig, Browser, DemoNoise, EntityWorld, Episode, Grade, ModelPolicy,
    Question, SearchIndex, browse_batch, grade,
};
use rlhf_data::{LabelerConfig, SimulatedLabeler};
use rlhf_eval::best_indices;
use rlhf_model::{Head, PromptFormat, last_token_scalars};
use rlhf_report::{LineChart, md_table};
use rlhf_train::TrainerConfig;
use rlhf_train::reward::{self, EncodedComparison};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{
    Observer, ci_series, flops, paired_diff, pct, read_results, run_seeds, seeds_ci, verdict,
    write_text,
};
use crate::error::{ExperimentError, Result};
use crate::tiny::{TinyLm, TinySpec, TrainStats, train_tokenizer};

/// Noise temperature of E7's simulated labelers, in the browsing grader's score units. It is
/// the τ the task world's labelers had when E7 was measured (0.39); the browsing world's scores
/// have their own scale, so the task world's recalibration (issue K) does not carry over.
const LABELER_TAU: f64 = 0.39;

/// `rlhf experiment webgpt`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebGptConfig {
    /// Towns in the world; the last `test_towns` are held out (4 questions each).
    pub towns: usize,
    pub test_towns: usize,
    /// Training questions (at most; the default takes them all) whose sampled episodes are ranked
    /// for the reward model.
    pub rm_questions: usize,
    /// Episodes per ranked question (K).
    pub rm_k: usize,
    /// The n of best-of-n; the largest is how many episodes each held-out question gets.
    pub best_of: Vec<usize>,
    /// Sampling temperature of the episodes for ranking and best-of-n.
    pub temperature: f64,
    pub vocab: usize,
    pub spec: TinySpec,
    /// Behaviour cloning.
    pub bc: TrainerConfig,
    /// The closed-book baseline.
    pub closed_book: TrainerConfig,
    /// The reward model (`batch_size` counts questions of K episodes); 1 epoch.
    pub reward: TrainerConfig,
    pub noise: DemoNoise,
    pub browse: BrowseConfig,
    /// Tokens one command or answer may take.
    pub max_action_tokens: usize,
    /// Sequences per generation batch.
    pub rows: usize,
    /// Writes seed `first`'s BC model and index under `out/seedN/` for `rlhf browse`.
    pub save_models: bool,
}

impl Default for WebGptConfig {
    fn default() -> Self {
        Self {
            towns: 500,
            test_towns: 40,
            rm_questions: 2000,
            rm_k: 4,
            best_of: vec![1, 4, 16, 64],
            temperature: 0.7,
            vocab: 700,
            spec: TinySpec {
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 4,
                max_positions: 320,
            },
            bc: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 50,
                max_steps: 2500,
                batch_size: 32,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            closed_book: TrainerConfig {
                lr: 3e-3,
                warmup_steps: 20,
                max_steps: 300,
                batch_size: 32,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
            reward: TrainerConfig {
                lr: 3e-4,
                warmup_steps: 10,
                batch_size: 8,
                weight_decay: 0.0,
                checkpoint_every: 0,
                eval_every: 0,
                loss_weighting: rlhf_train::LossWeighting::MicroBatch,
                ..Default::default()
            },
            noise: DemoNoise::default(),
            browse: BrowseConfig::default(),
            max_action_tokens: 48,
            rows: 256,
            save_models: true,
        }
    }
}

/// What the reward model reads: the question, the quotes and the answer (as WebGPT's did).
pub fn rm_text(e: &Episode) -> String {
    format!("{} {}", e.answer_prompt, e.answer)
}

/// Held-out outcomes of one condition, one value per held-out question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcomes {
    pub name: String,
    pub correct: Vec<f64>,
    pub supported: Vec<f64>,
    /// Share of answers with at least one citation of an existing quote.
    pub cites: f64,
    /// Mean commands per episode (0 for closed book).
    pub actions: f64,
    /// Mean rejected commands per episode.
    pub rejected: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    pub params: i64,
    pub chance: f64,
    pub demonstrations: usize,
    /// Demonstrations whose answer is right, and supported.
    pub demo_correct: f64,
    pub demo_supported: f64,
    pub bc_train: TrainStats,
    pub closed_book_train: TrainStats,
    /// Training questions whose episodes were ranked, and those with an untied pair.
    pub rm_questions: usize,
    pub rm_ranked: usize,
    pub rm_steps: u64,
    pub rm_seconds: f64,
    /// Share of untied held-out pairs (episodes of one test question) the reward model orders
    /// like the noise-free oracle.
    pub rm_accuracy: f64,
    pub rm_pairs: usize,
    /// Any of the largest-n episodes right (what a perfect reward model could reach).
    pub oracle_best: Vec<f64>,
    pub closed_book: Outcomes,
    pub bc: Outcomes,
    pub best_of: Vec<(usize, Outcomes)>,
    pub sampling_seconds: f64,
    pub seconds: f64,
}

/// Runs E7 and writes `out/e7.md`, `out/results.json` and the plot.
pub fn run(
    cfg: &WebGptConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedRun>> {
    validate(cfg)?;
    let first = seeds.first().copied();
    let (all, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        let save =
            (cfg.save_models && Some(seed) == first).then(|| out.join(format!("seed{seed}")));
        run_seed(cfg, seed, label, device, obs, save.as_deref())
    })?;
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e7.md"), &text)?;
    Ok(all)
}

/// Re-renders `out/e7.md` and the plot from `out/results.json` of an earlier run with the same
/// config (after a change to the report only, without training again).
pub fn report_only(cfg: &WebGptConfig, out: &Path) -> Result<Vec<SeedRun>> {
    let (path, all): (_, Vec<SeedRun>) = read_results(out)?;
    if all.is_empty() || all.iter().any(|r| r.best_of.len() != cfg.best_of.len()) {
        return Err(ExperimentError::Invalid(format!(
            "{} does not hold best-of-{:?} for every seed: run the experiment with the same \
             config first",
            path.display(),
            cfg.best_of
        )));
    }
    let seconds = all.iter().map(|r| r.seconds).sum();
    let text = report(cfg, &all, seconds, out)?;
    write_text(&out.join("e7.md"), &text)?;
    Ok(all)
}

fn validate(cfg: &WebGptConfig) -> Result<()> {
    let bad = |m: String| Err(ExperimentError::Invalid(m));
    if cfg.test_towns == 0 || cfg.test_towns + 10 > cfg.towns {
        return bad(format!(
            "test_towns must be at least 1 and leave 10 training towns of {}, found {}",
            cfg.towns, cfg.test_towns
        ));
    }
    let max = cfg.best_of.iter().copied().max().unwrap_or(0);
    if max == 0 || cfg.best_of.iter().any(|&n| n == 0 || max % n != 0) {
        return bad(format!(
            "best_of must be positive and each divide the largest, found {:?}",
            cfg.best_of
        ));
    }
    if cfg.rm_k < 2 {
        return bad(format!("rm_k must be at least 2, found {}", cfg.rm_k));
    }
    Ok(())
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Grades episodes with the oracle.
fn grades(qs: &[Question], eps: &[Vec<Episode>], index: &SearchIndex) -> Result<Vec<Vec<Grade>>> {
    qs.iter()
        .zip(eps)
        .map(|(q, es)| {
            es.iter()
                .map(|e| Ok(grade(q, &e.answer, &e.quotes, index)?))
                .collect()
        })
        .collect()
}

fn outcomes(name: &str, picked: &[Vec<(&Episode, &Grade)>]) -> Outcomes {
    // Each question's value is the mean over its groups (one group unless best-of-n splits).
    let per_q = |f: &dyn Fn(&Episode, &Grade) -> f64| -> Vec<f64> {
        picked
            .iter()
            .map(|g| mean(&g.iter().map(|(e, gr)| f(e, gr)).collect::<Vec<_>>()))
            .collect()
    };
    let flat = |f: &dyn Fn(&Episode, &Grade) -> f64| mean(&per_q(f));
    Outcomes {
        name: name.into(),
        correct: per_q(&|_, g| f64::from(u8::from(g.correct))),
        supported: per_q(&|_, g| f64::from(u8::from(g.support.supported))),
        cites: flat(&|_, g| f64::from(u8::from(g.support.cites_quotes))),
        actions: flat(&|e, _| e.actions.len() as f64),
        rejected: flat(&|e, _| e.rejected as f64),
    }
}

fn run_seed(
    cfg: &WebGptConfig,
    seed: u64,
    label: &str,
    device: Device,
    obs: &mut dyn Observer,
    save: Option<&Path>,
) -> Result<SeedRun> {
    let t0 = std::time::Instant::now();
    let world = EntityWorld::new(seed, cfg.towns)?;
    let docs = world.documents();
    let index = SearchIndex::in_ram(&docs)?;
    let split = cfg.towns - cfg.test_towns;
    let train_q = world.questions(0..split);
    let test_q = world.questions(split..cfg.towns);
    // Demonstrations, through the real browser.
    let mut rng = rlhf_data::world_rng(seed, 0xE7);
    let mut pairs = Vec::new();
    let (mut demos, mut demo_right, mut demo_sup) = (0usize, 0usize, 0usize);
    for q in &train_q {
        let d = match world.demonstration(q, &index, cfg.browse, &cfg.noise, &mut rng) {
            Ok(d) => d,
            // A town whose page BM25 did not list: no demonstration (counted below).
            Err(_) => continue,
        };
        let mut b = Browser::new(&index, &q.text, cfg.browse);
        for s in &d.steps {
            b.act(&s.action)?;
            pairs.push((s.observation.clone(), format!(" {}", s.action)));
        }
        let g = grade(q, &d.answer, b.quotes(), &index)?;
        demo_right += usize::from(g.correct);
        demo_sup += usize::from(g.support.supported);
        pairs.push((d.answer_prompt.clone(), format!(" {}", d.answer)));
        demos += 1;
    }
    obs.note(&format!(
        "{label}: {demos} demonstrations of {} questions, {} steps; {:.1}% right, {:.1}% supported",
        train_q.len(),
        pairs.len(),
        100.0 * demo_right as f64 / demos.max(1) as f64,
        100.0 * demo_sup as f64 / demos.max(1) as f64
    ));
    let closed = |q: &Question| format!("Question: {}\nAnswer:", q.text);
    let cb_pairs: Vec<(String, String)> = train_q
        .iter()
        .map(|q| (closed(q), format!(" {}.", q.answer)))
        .collect();
    let texts: Vec<String> = docs
        .iter()
        .map(|d| d.text.clone())
        .chain(pairs.iter().step_by(3).map(|(p, c)| format!("{p}{c}")))
        .chain(cb_pairs.iter().map(|(p, c)| format!("{p}{c}")))
        .collect();
    let tokenizer = train_tokenizer(&texts, cfg.vocab)?;

    // Behaviour cloning.
    let mut bc = TinyLm::new(
        tokenizer.clone(),
        &cfg.spec,
        PromptFormat::Raw,
        seed,
        device,
    )?;
    let params = bc.params();
    let mut bc_cfg = cfg.bc.clone();
    bc_cfg.seed = seed;
    obs.phase(
        &format!(
            "{label}: behaviour cloning ({params} parameters) on {} steps",
            pairs.len()
        ),
        bc_cfg.max_steps,
    );
    let bc_train = bc.train(&pairs, &bc_cfg, |s| obs.advance(s))?;

    // Closed book: the same model class, the same questions about other towns.
    let mut cb = TinyLm::new(tokenizer, &cfg.spec, PromptFormat::Raw, seed, device)?;
    let mut cb_cfg = cfg.closed_book.clone();
    cb_cfg.seed = seed;
    obs.phase(&format!("{label}: closed-book baseline"), cb_cfg.max_steps);
    let closed_book_train = cb.train(&cb_pairs, &cb_cfg, |s| obs.advance(s))?;
    let cb_prompts: Vec<String> = test_q.iter().map(closed).collect();
    let cb_answers = cb.complete(&cb_prompts, cfg.max_action_tokens, cfg.rows)?;
    let cb_eps: Vec<Vec<Episode>> = test_q
        .iter()
        .zip(cb_answers)
        .zip(&cb_prompts)
        .map(|((q, a), p)| vec![Episode::closed_book(&q.text, p, a)])
        .collect();
    let cb_grades = grades(&test_q, &cb_eps, &index)?;
    let closed_book = outcomes("closed book", &pick_all(&cb_eps, &cb_grades));
    obs.note(&format!(
        "{label}: closed book {:.1}% (chance {:.1}%)",
        100.0 * mean(&closed_book.correct),
        100.0 * world.chance()
    ));

    let agent = AgentConfig {
        browse: cfg.browse,
        max_action_tokens: cfg.max_action_tokens,
        trace: false,
    };
    let policy = |temperature: f64, seed: u64| ModelPolicy {
        pre: &bc.pre,
        format: PromptFormat::Raw,
        max_tokens: cfg.max_action_tokens,
        temperature,
        seed,
        rows: cfg.rows,
    };
    let test_text: Vec<String> = test_q.iter().map(|q| q.text.clone()).collect();
    obs.phase(
        &format!("{label}: BC browses the held-out questions"),
        test_q.len() as u64,
    );
    let bc_eps = browse_batch(&policy(0.0, seed), &index, &test_text, 1, &agent, |d, _| {
        obs.advance(d as u64)
    })?;
    let bc_grades = grades(&test_q, &bc_eps, &index)?;
    let bc_out = outcomes("browsing BC (greedy)", &pick_all(&bc_eps, &bc_grades));
    obs.note(&format!(
        "{label}: BC {:.1}% right, {:.1}% supported, {:.1} actions",
        100.0 * mean(&bc_out.correct),
        100.0 * mean(&bc_out.supported),
        bc_out.actions
    ));

    // Comparisons for the reward model: K episodes of training questions, ranked by labelers.
    let t_sample = std::time::Instant::now();
    let mut rm_qs: Vec<&Question> = train_q.iter().collect();
    shuffle(&mut rng, &mut rm_qs);
    rm_qs.truncate(cfg.rm_questions);
    let rm_qs: Vec<Question> = rm_qs.into_iter().cloned().collect();
    let rm_text_q: Vec<String> = rm_qs.iter().map(|q| q.text.clone()).collect();
    obs.phase(
        &format!(
            "{label}: sampling {} × {} episodes to rank",
            rm_qs.len(),
            cfg.rm_k
        ),
        (rm_qs.len() * cfg.rm_k) as u64,
    );
    let rm_eps = browse_batch(
        &policy(cfg.temperature, seed + 1),
        &index,
        &rm_text_q,
        cfg.rm_k,
        &agent,
        |d, _| obs.advance(d as u64),
    )?;
    let rm_grades = grades(&rm_qs, &rm_eps, &index)?;
    let labeler = SimulatedLabeler::new(seed, &LabelerConfig { tau: LABELER_TAU })?;
    let mut comparisons = Vec::new();
    for ((q, es), gs) in rm_qs.iter().zip(&rm_eps).zip(&rm_grades) {
        let texts: Vec<String> = es.iter().map(rm_text).collect();
        let scores: Vec<f64> = gs.iter().map(|g| g.score).collect();
        let pairs = labeler.rank_scores(&q.text, &texts, &scores)?.pairs();
        if !pairs.is_empty() {
            comparisons.push((texts, pairs));
        }
    }
    // Best-of-n episodes for the held-out questions.
    let n_max = cfg.best_of.iter().copied().max().unwrap_or(1);
    obs.phase(
        &format!(
            "{label}: sampling {} × {n_max} held-out episodes",
            test_q.len()
        ),
        (test_q.len() * n_max) as u64,
    );
    let test_eps = browse_batch(
        &policy(cfg.temperature, seed + 2),
        &index,
        &test_text,
        n_max,
        &agent,
        |d, _| obs.advance(d as u64),
    )?;
    let sampling_seconds = t_sample.elapsed().as_secs_f64();
    let test_grades = grades(&test_q, &test_eps, &index)?;

    if let Some(d) = save {
        // The BC policy, for `rlhf browse` (with the index written below).
        bc.save(&d.join("bc"))?;
    }
    // The reward model: the BC model with a fresh scalar head, trained by the library's core.
    tch::manual_seed(seed as i64);
    let rm = bc.pre.model.copy_with_head(Head::Scalar)?;
    let pad = bc.pre.pad_id();
    let bos = bc.pre.encode_prompt("", PromptFormat::Raw)?;
    let encode = |t: &str| -> Result<Vec<i64>> { Ok(bc.pre.encode_response(&bos, t)?) };
    let items = comparisons
        .iter()
        .map(|(texts, pairs)| {
            Ok(EncodedComparison {
                seqs: texts.iter().map(|t| encode(t)).collect::<Result<_>>()?,
                pairs: pairs.clone(),
                oracle_pairs: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rm_ranked = items.len();
    let mut rm_cfg = cfg.reward.clone();
    rm_cfg.seed = seed;
    rm_cfg.max_steps = (items.len() / rm_cfg.batch_size.max(1)) as u64;
    if rm_cfg.max_steps == 0 {
        return Err(ExperimentError::Invalid(format!(
            "{} ranked questions with untied pairs are fewer than one batch of {}",
            items.len(),
            rm_cfg.batch_size
        )));
    }
    obs.phase(
        &format!("{label}: reward model on {} ranked questions", items.len()),
        rm_cfg.max_steps,
    );
    let t_rm = std::time::Instant::now();
    let records = reward::fit(&rm, items, pad, &rm_cfg, |r| obs.advance(r.step))?.records;
    let rm_seconds = t_rm.elapsed().as_secs_f64();

    // Score every held-out episode; best-of-n.
    let mut scores: Vec<Vec<f64>> = Vec::with_capacity(test_eps.len());
    {
        let _g = tch::no_grad_guard();
        for es in &test_eps {
            let seqs = es
                .iter()
                .map(|e| encode(&rm_text(e)))
                .collect::<Result<Vec<_>>>()?;
            let mut s = Vec::with_capacity(seqs.len());
            for chunk in seqs.chunks(64) {
                let r = last_token_scalars(&rm, chunk, pad)?.to_device(Device::Cpu);
                s.extend(Vec::<f32>::try_from(&r)?.into_iter().map(f64::from));
            }
            scores.push(s);
        }
    }
    let (mut right_pairs, mut pairs_n) = (0usize, 0usize);
    for (gs, s) in test_grades.iter().zip(&scores) {
        for i in 0..gs.len() {
            for j in 0..gs.len() {
                if gs[i].score > gs[j].score {
                    pairs_n += 1;
                    right_pairs += usize::from(s[i] > s[j]);
                }
            }
        }
    }
    let rm_accuracy = right_pairs as f64 / pairs_n.max(1) as f64;
    obs.note(&format!(
        "{label}: reward model {:.1}% on {pairs_n} held-out pairs",
        100.0 * rm_accuracy
    ));
    let mut best_of = Vec::new();
    for &n in &cfg.best_of {
        let picked: Vec<Vec<(&Episode, &Grade)>> = test_eps
            .iter()
            .zip(&test_grades)
            .zip(&scores)
            .map(|((es, gs), s)| {
                best_indices(&s[..n_max], n)
                    .into_iter()
                    .map(|best| (&es[best], &gs[best]))
                    .collect()
            })
            .collect();
        let o = outcomes(&format!("best-of-{n}"), &picked);
        obs.note(&format!(
            "{label}: best-of-{n} {:.1}% right, {:.1}% supported",
            100.0 * mean(&o.correct),
            100.0 * mean(&o.supported)
        ));
        best_of.push((n, o));
    }
    let oracle_best = test_grades
        .iter()
        .map(|gs| f64::from(u8::from(gs.iter().any(|g| g.correct))))
        .collect();
    if let Some(d) = save {
        rlhf_browse::SearchIndex::create(&d.join("index"), &docs, "the E7 entity world")?;
        let qs: Vec<serde_json::Value> = test_q
            .iter()
            .map(|q| serde_json::json!({"question": q.text, "answer": q.answer}))
            .collect();
        crate::common::write_json(&d.join("test-questions.json"), &qs)?;
    }
    Ok(SeedRun {
        seed,
        params,
        chance: world.chance(),
        demonstrations: demos,
        demo_correct: demo_right as f64 / demos.max(1) as f64,
        demo_supported: demo_sup as f64 / demos.max(1) as f64,
        bc_train,
        closed_book_train,
        rm_questions: rm_qs.len(),
        rm_ranked,
        rm_steps: records.len() as u64,
        rm_seconds,
        rm_accuracy,
        rm_pairs: pairs_n,
        oracle_best,
        closed_book,
        bc: bc_out,
        best_of,
        sampling_seconds,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn pick_all<'a>(
    eps: &'a [Vec<Episode>],
    gs: &'a [Vec<Grade>],
) -> Vec<Vec<(&'a Episode, &'a Grade)>> {
    eps.iter()
        .zip(gs)
        .map(|(e, g)| e.iter().zip(g).collect())
        .collect()
}

fn shuffle<T>(rng: &mut dyn RngCore, items: &mut [T]) {
    rlhf_data::rng::shuffle(rng, items)
}

fn report(cfg: &WebGptConfig, all: &[SeedRun], seconds: f64, out: &Path) -> Result<String> {
    let col = |f: &dyn Fn(&SeedRun) -> &Outcomes| -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        (
            all.iter().map(|r| f(r).correct.clone()).collect(),
            all.iter().map(|r| f(r).supported.clone()).collect(),
        )
    };
    let avg = |f: &dyn Fn(&SeedRun) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
    let mut rows = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&SeedRun) -> &Outcomes, cost: String| {
        let (c, s) = col(f);
        rows.push(vec![
            name.to_string(),
            pct(&seeds_ci(&c)),
            pct(&seeds_ci(&s)),
            format!("{:.1}", 100.0 * avg(&|r| f(r).cites)),
            format!("{:.1}", avg(&|r| f(r).actions)),
            format!("{:.2}", avg(&|r| f(r).rejected)),
            cost,
        ]);
    };
    row(
        "closed book",
        &|r| &r.closed_book,
        format!("{} train", flops(avg(&|r| r.closed_book_train.flops))),
    );
    row(
        "browsing BC (greedy)",
        &|r| &r.bc,
        format!("{} train", flops(avg(&|r| r.bc_train.flops))),
    );
    for (k, &n) in cfg.best_of.iter().enumerate() {
        row(
            &format!("BC + RM, best-of-{n} (T = {})", cfg.temperature),
            &|r| &r.best_of[k].1,
            format!("{n} episodes / question"),
        );
    }
    let table = md_table(
        &[
            "condition",
            "accuracy % [95% CI]",
            "answers supported by their quotes % [95% CI]",
            "cite a quote %",
            "actions",
            "rejected actions",
            "cost",
        ],
        &rows,
    );
    let cb = col(&|r| &r.closed_book).0;
    let bc = col(&|r| &r.bc).0;
    let k_max = cfg.best_of.len() - 1;
    let n_max = cfg.best_of[k_max];
    let b1 = col(&|r| &r.best_of[0].1).0;
    let bmax = col(&|r| &r.best_of[k_max].1).0;
    let bmax_sup = col(&|r| &r.best_of[k_max].1).1;
    let d_bc = seeds_ci(&paired_diff(&bc, &cb));
    let d_best = seeds_ci(&paired_diff(&bmax, &cb));
    let d_bon = seeds_ci(&paired_diff(&bmax, &b1));
    let chance = avg(&|r| r.chance);
    let oracle: Vec<Vec<f64>> = all.iter().map(|r| r.oracle_best.clone()).collect();
    let diffs = md_table(
        &["comparison", "difference [95% CI]", "reading"],
        &[
            vec![
                "browsing BC − closed book".to_string(),
                pct(&d_bc),
                verdict(&d_bc).into(),
            ],
            vec![
                format!("best-of-{n_max} − closed book"),
                pct(&d_best),
                verdict(&d_best).into(),
            ],
            vec![
                format!("best-of-{n_max} − best-of-1"),
                pct(&d_bon),
                verdict(&d_bon).into(),
            ],
        ],
    );
    let sup_ci = seeds_ci(&bmax_sup);
    let acc_ci = seeds_ci(&bmax);
    let grounded = d_best.lo > 0.0 && d_bc.lo > 0.0 && sup_ci.mean >= 0.9 * acc_ci.mean;
    let rejection_helps = d_bon.lo > 0.0;
    let per_seed: Vec<String> = all
        .iter()
        .map(|r| {
            format!(
                "seed {}: closed book {:.1}%, BC {:.1}%, best-of-1 {:.1}%, best-of-{n_max} {:.1}% \
                 (supported {:.1}%), RM pairwise {:.1}%",
                r.seed,
                100.0 * mean(&r.closed_book.correct),
                100.0 * mean(&r.bc.correct),
                100.0 * mean(&r.best_of[0].1.correct),
                100.0 * mean(&r.best_of[k_max].1.correct),
                100.0 * mean(&r.best_of[k_max].1.supported),
                100.0 * r.rm_accuracy
            )
        })
        .collect();
    // Accuracy against n, with closed book and greedy BC as flat references.
    let xs: Vec<f64> = cfg.best_of.iter().map(|&n| n as f64).collect();
    let flat = |name: &str, ci: rlhf_report::Interval| {
        ci_series(name, &xs.iter().map(|&x| (x, ci)).collect::<Vec<_>>())
    };
    let curve = |f: &dyn Fn(&Outcomes) -> &Vec<f64>| -> Vec<(f64, rlhf_report::Interval)> {
        (0..cfg.best_of.len())
            .map(|k| {
                let v: Vec<Vec<f64>> = all.iter().map(|r| f(&r.best_of[k].1).clone()).collect();
                (xs[k], seeds_ci(&v))
            })
            .collect()
    };
    let chart = LineChart {
        title: "E7: WebGPT best-of-n against the reward model".into(),
        x_label: "n (episodes sampled per question, log scale)".into(),
        y_label: "share of held-out questions".into(),
        series: vec![
            ci_series("best-of-n: accuracy", &curve(&|o| &o.correct)),
            ci_series("best-of-n: supported answers", &curve(&|o| &o.supported)),
            flat("browsing BC (greedy): accuracy", seeds_ci(&bc)),
            flat("closed book: accuracy", seeds_ci(&cb)),
        ],
        log_x: true,
        ..Default::default()
    };
    chart.save(&out.join("e7_best_of_n"))?;
    let first = &all[0];
    Ok(format!(
        "# E7: WebGPT, browsing with citations (Nakano et al. 2021)\n\n\
         Claim: a model that searches, quotes and answers from its quotes beats closed-book \
         answering, its answers are supported by their references, and rejection sampling against \
         a reward model (best-of-n) improves on the behaviour-cloned policy.\n\n\
         Setup (per seed; seeds {seeds:?}): an entity world of {towns} invented towns whose facts \
         are drawn anew per seed (closed-book chance {chance:.1}%), one page per town in a \
         tantivy BM25 index; {test} held-out questions about {tt} towns never seen in training. \
         A scripted demonstrator (noise: {noise:?}) browses {demos} training questions through \
         the real browser ({dc:.1}% of its answers right, {ds:.1}% supported); a tiny Llama \
         (d={d}, {l} layers, {p} parameters, context {ctx}) is trained by behaviour cloning on \
         its steps for {bcs} steps of {bcb}; the closed-book model (same size) on the same \
         questions' answers for {cbs} steps. The reward model starts from the BC model with a \
         scalar head and learns from {rmq} training questions × K = {k} sampled episodes ranked \
         by simulated labelers (Bradley–Terry noise on the oracle's score: right answer 1, \
         supported 0.5), one epoch of the grouped K-way loss. Best-of-n: {n_max} episodes per \
         held-out question at T = {t}; for each n the {n_max}/n disjoint groups of n are each \
         reduced to the RM's favourite and averaged. Intervals: 95% bootstrap over seeds, then \
         questions.\n\n{table}\n\
         Any of the {n_max} episodes right (a perfect reward model's ceiling): {oracle}. The reward \
         model orders {rm:.1}% of untied held-out pairs like the noise-free oracle. {peak}\n\n\
         {diffs}\n\
         Verdict: {verdict_line}\n\n\
         Per seed:\n\n{per_seed}\n\n\
         ![best-of-n](e7_best_of_n.svg)\n\n\
         Wall time {wall:.0} s ({per:.0} s per seed, of which sampling {samp:.0} s), 2-core CPU.\n",
        seeds = all.iter().map(|r| r.seed).collect::<Vec<_>>(),
        towns = cfg.towns,
        chance = 100.0 * chance,
        test = first.bc.correct.len(),
        tt = cfg.test_towns,
        noise = cfg.noise,
        demos = first.demonstrations,
        dc = 100.0 * avg(&|r| r.demo_correct),
        ds = 100.0 * avg(&|r| r.demo_supported),
        d = cfg.spec.hidden,
        l = cfg.spec.layers,
        p = first.params,
        ctx = cfg.spec.max_positions,
        bcs = cfg.bc.max_steps,
        bcb = cfg.bc.batch_size,
        cbs = cfg.closed_book.max_steps,
        rmq = first.rm_questions,
        k = cfg.rm_k,
        t = cfg.temperature,
        oracle = pct(&seeds_ci(&oracle)),
        rm = 100.0 * avg(&|r| r.rm_accuracy),
        peak = peak_line(cfg, all),
        verdict_line = if grounded && rejection_helps {
            format!(
                "reproduced: browsing beats closed book (BC by {}, best-of-{n_max} by {} points), \
                 best-of-{n_max}'s answers are supported by their quotes ({} supported), and \
                 best-of-{n_max} beats best-of-1 by {} points.",
                pct(&d_bc),
                pct(&d_best),
                pct(&sup_ci),
                pct(&d_bon)
            )
        } else if grounded {
            format!(
                "partly reproduced: browsing beats closed book (BC by {}, best-of-{n_max} by {} \
                 points) and best-of-{n_max}'s answers are supported by their quotes ({} \
                 supported), but rejection sampling against the reward model does not improve \
                 on best-of-1 at n = {n_max} ({} points; see where best-of-n peaks above).",
                pct(&d_bc),
                pct(&d_best),
                pct(&sup_ci),
                pct(&d_bon)
            )
        } else {
            format!(
                "not reproduced (the row fails if browsing is no better than closed book or the \
                 answers are not supported by their quotes): BC − closed book {}, best-of-{n_max} − \
                 closed book {}, best-of-{n_max} supported {}.",
                pct(&d_bc),
                pct(&d_best),
                pct(&sup_ci)
            )
        },
        per_seed = per_seed.join("\n"),
        wall = seconds,
        per = seconds / all.len() as f64,
        samp = avg(&|r| r.sampling_seconds),
    ))
}

/// Where best-of-n accuracy peaks, and what that says when it is not at the largest n.
fn peak_line(cfg: &WebGptConfig, all: &[SeedRun]) -> String {
    let acc: Vec<f64> = (0..cfg.best_of.len())
        .map(|k| {
            all.iter()
                .map(|r| mean(&r.best_of[k].1.correct))
                .sum::<f64>()
                / all.len() as f64
        })
        .collect();
    let k = (0..acc.len())
        .max_by(|&a, &b| acc[a].total_cmp(&acc[b]))
        .unwrap_or(0);
    if k + 1 == acc.len() {
        format!(
            "Best-of-n accuracy rises up to the largest n ({}).",
            cfg.best_of[k]
        )
    } else {
        format!(
            "Best-of-n accuracy peaks at n = {} ({:.1}%) and falls beyond it ({:.1}% at n = {}): \
             with more samples the reward model's favourite is more often an episode it \
             over-rates, the over-optimisation that E1b measures for PPO.",
            cfg.best_of[k],
            100.0 * acc[k],
            100.0 * acc[acc.len() - 1],
            cfg.best_of[acc.len() - 1]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_refused() {
        let mut c = WebGptConfig {
            best_of: vec![1, 3, 4],
            ..Default::default()
        };
        assert!(validate(&c).unwrap_err().to_string().contains("divide"));
        c.best_of = vec![1, 2];
        c.test_towns = c.towns;
        assert!(validate(&c).unwrap_err().to_string().contains("test_towns"));
        c.test_towns = 5;
        c.rm_k = 1;
        assert!(validate(&c).unwrap_err().to_string().contains("rm_k"));
    }
}
