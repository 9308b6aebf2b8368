//! Row "verifiable": GRPO against its PPO counterpart on a verifiable reward. Per seed, one task
//! world and one pretrained and SFT model (the demo's stages, trained longer); the reward is the
//! answer check (1 when the response's final number is the word problem's answer, else 0:
//! `rlhf_train::grpo::AnswerMatch`; or the oracle's score with `reward = "oracle"`) on the
//! world's training word problems of at most `max_steps` steps (2 by default: there the SFT model
//! is right often enough to learn from). GRPO (8 prompts × G = 8, KL as a k3 loss term, token-level
//! loss by default) and PPO (64 prompts × 1, KL as a k1 penalty on the reward, the value model
//! started from the policy) draw the same samples, take the same optimizer steps on minibatches
//! of the same size, at the same learning rate and (unless `grpo_beta` is set) β. Both are judged
//! on the held-out word problems of the same step counts against the SFT model: greedy accuracy,
//! and sampled accuracy (`samples` answers per problem at temperature 1) with a 95% bootstrap
//! interval over problems for each model and for its difference from SFT.
//!
//! A seed folder whose `stages.json` matches the recipe's world, pretraining and SFT settings
//! reuses its world and models.
//!
//! Not here: the methods (`rlhf_train::{ppo, grpo}`), the shared stages (`demo`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use rlhf_data::{EvalRecord, Task, read_jsonl};
use rlhf_eval::Observer;
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_report::{Interval, bootstrap_mean_ci, fmt_interval, md_table};
use rlhf_train::grpo::{Aggregation, Algo, GrpoInputs, KlMode, reward_from_spec};
use rlhf_train::{PpoInputs, PpoReward, Preset, Resume};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{
    OnlineBudget, RESAMPLES, paired_diff, pct, run_seeds, seeds_ci, verdict, write_json,
};
use crate::demo;
use crate::error::{ExperimentError, Result};

/// The experiment's recipe (`--set key=value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifiableConfig {
    pub preset: Preset,
    pub pretrain_steps: u64,
    pub sft_steps: u64,
    /// Training and held-out word problems: those with at most this many steps (4, the most a
    /// world draws, takes them all).
    pub max_steps: usize,
    /// Prompts the task world draws (`prompts.jsonl`, a quarter of them word problems). More
    /// prompts mean fewer repeats of a training problem within the budget.
    pub prompts: usize,
    /// The reward both methods optimise: "answer" (1 for the right final number, else 0) or
    /// "oracle" (the task world's rubric: correctness, then partial credit, format, length).
    pub reward: String,
    /// Iterations of both methods, 64 samples each.
    pub iterations: u64,
    /// Passes over each iteration's samples, and minibatches per pass (both methods).
    pub epochs: u64,
    pub minibatches: usize,
    pub lr: f64,
    /// β of the KL to SFT: GRPO's k3 loss term, PPO's k1 penalty on the reward.
    pub beta: f64,
    /// GRPO's own β, when it should differ from PPO's (a k3 loss term and a k1 reward penalty
    /// pull with different strength at the same β). `None`: `beta`.
    pub grpo_beta: Option<f64>,
    /// GRPO divides each advantage by its group's reward std (the paper); false is Dr. GRPO.
    pub grpo_scale_rewards: bool,
    /// GRPO's loss aggregation: `sequence` (the paper) or `token` (DAPO).
    pub grpo_aggregation: Aggregation,
    /// Sampled answers per held-out problem (temperature 1) for the sampled accuracy.
    pub samples: usize,
    /// Held-out word problems to judge on (with at most `max_steps` steps): drawn from the
    /// eval split of the seed's world (disjoint from every world's training files at the entity
    /// and operand level), in an arithmetic-only draw so that there are enough of them, and
    /// written to `seedN/heldout.jsonl`. 0: the word problems of the world's `eval.jsonl` (32–44
    /// per seed, too few to tell a 4-point gain from none). Ignored with `dev`.
    pub heldout: usize,
    /// Judge on the word problems of `dev.jsonl` (for choosing a recipe) instead of the held-out
    /// problems.
    pub dev: bool,
}

impl Default for VerifiableConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Micro,
            // Chosen on dev seed 100 (`dev.jsonl`): with the demo's 600 + 300 steps the SFT
            // model answers ~6% of sampled word problems right (it cannot yet multiply), too
            // sparse a signal for either method; 1500 + 1500 steps on 1–2-step problems gives
            // SFT ~25% and both methods something to sharpen. 3000 prompts hold ~390 such
            // problems, so few repeat within the budget.
            pretrain_steps: 1500,
            sft_steps: 1500,
            max_steps: 2,
            prompts: 3000,
            reward: "answer".into(),
            // GRPO's defaults (`rlhf grpo`): 100 iterations of 8 × 8 samples, one pass in two
            // minibatches, lr 5e-5, β 0.04; PPO gets the same.
            iterations: 100,
            epochs: 1,
            minibatches: 2,
            lr: 5e-5,
            beta: 0.04,
            // Chosen on dev seeds 100–102 (`docs/experiments/verifiable.md`): token-level
            // aggregation gained most on average (+8.7 points sampled accuracy against +8.1 for
            // the paper's sequence level, +6.6 with β = 0.2, +4.5 without the std division).
            grpo_beta: None,
            grpo_scale_rewards: true,
            grpo_aggregation: Aggregation::Token,
            // 64 answers per problem: 16 left each problem's share ±0.12 (1 sd) of sampling
            // noise on top of the spread between problems.
            samples: 64,
            // 300 problems: the first reported run judged on eval.jsonl's 32–44 per seed, and its
            // intervals (±5 points pooled) could not tell a 4-point gain from none.
            heldout: 300,
            dev: false,
        }
    }
}

impl VerifiableConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ExperimentError::Invalid(format!("verifiable: {m}")));
        if self.pretrain_steps == 0 || self.sft_steps == 0 || self.iterations == 0 {
            return bad("pretrain_steps, sft_steps and iterations must be at least 1");
        }
        if self.epochs == 0 || self.minibatches == 0 || 64 % self.minibatches != 0 {
            return bad("epochs must be at least 1 and minibatches divide 64");
        }
        if !matches!(self.reward.as_str(), "answer" | "oracle") {
            return bad("reward must be answer or oracle");
        }
        if self.max_steps == 0 || self.samples == 0 {
            return bad("max_steps and samples must be at least 1");
        }
        if self.heldout > MAX_HELDOUT {
            return bad(&format!("heldout must be at most {MAX_HELDOUT}"));
        }
        let beta_ok = |b: f64| b >= 0.0 && b.is_finite();
        if !(self.lr > 0.0 && self.lr.is_finite() && beta_ok(self.beta))
            || self.grpo_beta.is_some_and(|b| !beta_ok(b))
        {
            return bad("lr must be > 0, and beta and grpo_beta >= 0");
        }
        Ok(())
    }

    /// GRPO's β: `grpo_beta`, else `beta`.
    pub fn grpo_beta(&self) -> f64 {
        self.grpo_beta.unwrap_or(self.beta)
    }
}

/// What a seed's world, pretrained and SFT models depend on (`seedN/stages.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stages {
    seed: u64,
    preset: Preset,
    prompts: usize,
    pretrain_steps: u64,
    sft_steps: u64,
}

/// The most held-out problems `heldout` may ask for (the eval split of 1-step problems alone
/// holds a few thousand distinct ones).
const MAX_HELDOUT: usize = 1000;

/// `cfg.heldout` distinct held-out word problems of `seed`'s world with at most `max_steps` steps:
/// the eval split of an arithmetic-only world (same seed, every other size at its default), so
/// disjoint from the training files of every world. Written to `file` (the world's eval
/// records) for auditing.
fn heldout_problems(seed: u64, cfg: &VerifiableConfig, file: &Path) -> Result<Vec<String>> {
    let world = rlhf_data::build_world(&rlhf_data::WorldConfig {
        seed,
        families: vec![rlhf_data::Family::Arithmetic],
        max_steps: cfg.max_steps.min(4),
        eval_examples: cfg.heldout,
        dev_examples: 0,
        ..Default::default()
    })?;
    rlhf_data::write_jsonl(file, &world.eval)?;
    let problems: Vec<String> = world.eval.into_iter().map(|r| r.prompt).collect();
    if let Some(p) = problems.iter().find(|p| match Task::parse(p) {
        Ok(Task::Arithmetic(a)) => a.steps().len() > cfg.max_steps,
        _ => true,
    }) {
        return Err(ExperimentError::Invalid(format!(
            "verifiable: a held-out problem is not a word problem of at most {} steps: {p}",
            cfg.max_steps
        )));
    }
    Ok(problems)
}

/// One model's accuracy on the held-out word problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub name: String,
    /// Greedy: the share of problems answered right.
    pub greedy: f64,
    /// Per problem: the share of its sampled answers that are right.
    pub sampled: Vec<f64>,
    /// Mean training reward over the first and over the last (up to) 10 iterations (`None` for
    /// SFT).
    pub train_reward: Option<(f64, f64)>,
    /// Mean KL to SFT over the last (up to) 10 iterations (nats per response).
    pub kl: Option<f64>,
    /// Training wall time.
    pub seconds: f64,
}

/// One seed's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub train_problems: usize,
    pub eval_problems: usize,
    /// SFT, GRPO, PPO.
    pub models: Vec<Accuracy>,
    pub seconds: f64,
}

/// Runs every seed (run folders `out/seedN`) and writes `out/verifiable.md` and
/// `out/results.json`.
pub fn run(
    cfg: &VerifiableConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedResult>> {
    cfg.validate()?;
    let (results, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        obs.note(&format!("\n=== verifiable {label} ==="));
        one_seed(cfg, seed, &out.join(format!("seed{seed}")), device, obs)
    })?;
    write_json(&out.join("config.json"), cfg)?;
    crate::common::write_text(&out.join("verifiable.md"), &report(cfg, &results, seconds))?;
    Ok(results)
}

/// Re-renders `out/verifiable.md` from the `results.json` of an earlier run with the same config
/// (no training).
pub fn report_only(cfg: &VerifiableConfig, out: &Path) -> Result<Vec<SeedResult>> {
    let (_, results): (_, Vec<SeedResult>) = crate::common::read_results(out)?;
    let seconds = results.iter().map(|r| r.seconds).sum();
    crate::common::write_text(&out.join("verifiable.md"), &report(cfg, &results, seconds))?;
    Ok(results)
}

/// `{"prompt","answer"}` lines for the world's word problems among `prompts` with at most
/// `max_steps` steps; returns how many.
pub fn answer_file(prompts: &[String], max_steps: usize, path: &Path) -> Result<usize> {
    let mut text = String::new();
    let mut n = 0;
    for p in prompts {
        let task = Task::parse(p)?;
        if let Task::Arithmetic(a) = &task {
            if a.steps().len() <= max_steps {
                let line = serde_json::json!({"prompt": p, "answer": task.answer()});
                let _ = writeln!(text, "{line}");
                n += 1;
            }
        }
    }
    crate::common::write_text(path, &text)?;
    Ok(n)
}

fn one_seed(
    cfg: &VerifiableConfig,
    seed: u64,
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedResult> {
    let t0 = Instant::now();
    let step = |obs: &mut dyn Observer, what: &str| {
        obs.note(&format!("  [{:>5.0} s] {what}", t0.elapsed().as_secs_f64()));
        Instant::now()
    };
    crate::common::create_dir(out)?;
    let data = out.join("data");
    let sft = out.join("sft");
    // The world, pretraining and SFT take ~70% of a seed's time and depend on these settings
    // only: a folder whose `stages.json` (written once SFT is done) matches reuses them, so a
    // rerun that changes only the RL settings starts at GRPO.
    let stages = Stages {
        seed,
        preset: cfg.preset,
        prompts: cfg.prompts,
        pretrain_steps: cfg.pretrain_steps,
        sft_steps: cfg.sft_steps,
    };
    let marker = out.join("stages.json");
    if marker.exists() {
        let text = std::fs::read_to_string(&marker)
            .map_err(|e| ExperimentError::io("read", &marker, e))?;
        let old: Stages = serde_json::from_str(&text).map_err(|e| {
            ExperimentError::Invalid(format!(
                "verifiable: {}: {e} (expected seed, preset, prompts, pretrain_steps and \
                 sft_steps; delete the seed folder to start it afresh)",
                marker.display()
            ))
        })?;
        if old != stages {
            return Err(ExperimentError::Invalid(format!(
                "verifiable: {} holds the stages of another recipe ({old:?}, this one is \
                 {stages:?}); use another --out",
                out.display()
            )));
        }
        step(
            obs,
            "reusing the world, pretrained and SFT models (stages.json matches)",
        );
    } else {
        demo::world_pretrain_sft(
            out,
            seed,
            cfg.prompts,
            cfg.preset,
            cfg.pretrain_steps,
            cfg.sft_steps,
            device,
            |what| {
                step(obs, what);
            },
        )?;
        write_json(&marker, &stages)?;
    }

    let prompts = demo::prompts_of(&data.join("prompts.jsonl"))?;
    let answers = out.join("answers.jsonl");
    let train_problems = answer_file(&prompts, cfg.max_steps, &answers)?;
    if train_problems < 64 {
        return Err(ExperimentError::Invalid(format!(
            "verifiable: only {train_problems} training word problems with at most {} steps; \
             64 are needed for one iteration",
            cfg.max_steps
        )));
    }
    let problems = if cfg.heldout > 0 && !cfg.dev {
        heldout_problems(seed, cfg, &out.join("heldout.jsonl"))?
    } else {
        let eval_file = data.join(if cfg.dev { "dev.jsonl" } else { "eval.jsonl" });
        read_jsonl::<EvalRecord>(&eval_file)?
            .into_iter()
            .map(|r| r.prompt)
            .filter(|p| match Task::parse(p) {
                Ok(Task::Arithmetic(a)) => a.steps().len() <= cfg.max_steps,
                _ => false,
            })
            .collect()
    };

    let t = step(obs, "SFT's accuracy");
    let mut models = vec![accuracy("SFT", &sft, &problems, cfg, seed, device)?];
    models[0].seconds = t.elapsed().as_secs_f64();

    let t = step(obs, "GRPO");
    let dir = out.join("grpo");
    let budget = OnlineBudget {
        iterations: cfg.iterations,
        epochs: cfg.epochs,
        minibatches: cfg.minibatches,
        lr: cfg.lr,
        seed,
    };
    let mut gcfg = budget.grpo(Algo::Grpo, cfg.grpo_beta(), KlMode::Loss);
    gcfg.scale_rewards = cfg.grpo_scale_rewards;
    gcfg.aggregation = cfg.grpo_aggregation;
    let inputs = GrpoInputs {
        rollout_engine: None,
        policy: sft.clone(),
        prompts: answers.clone(),
        reward: reward_from_spec(&cfg.reward, &answers, device)?,
        eval_prompts: None,
        out: dir.clone(),
        progress: true,
    };
    rlhf_train::grpo::grpo(&inputs, &gcfg, Resume::No, device)?;
    let seconds = t.elapsed().as_secs_f64();
    models.push(trained(
        "GRPO", &dir, &problems, cfg, seed, seconds, device,
    )?);

    let t = step(obs, "PPO");
    let dir = out.join("ppo");
    let pcfg = budget.ppo(cfg.beta);
    let inputs = PpoInputs {
        policy: sft.clone(),
        reward: PpoReward::from_spec(&cfg.reward, &answers)?,
        prompts: answers.clone(),
        eval_prompts: None,
        ptx_data: None,
        out: dir.clone(),
        gold: None,
        rollout_engine: None,
    };
    rlhf_train::ppo(&inputs, &pcfg, Resume::No, device, true)?;
    let seconds = t.elapsed().as_secs_f64();
    models.push(trained("PPO", &dir, &problems, cfg, seed, seconds, device)?);

    for m in &models {
        obs.note(&format!(
            "      {}: greedy {:.1}%, sampled {}",
            m.name,
            100.0 * m.greedy,
            pct(&bootstrap_mean_ci(&m.sampled, RESAMPLES, 0.95, seed))
        ));
    }
    Ok(SeedResult {
        seed,
        train_problems,
        eval_problems: problems.len(),
        models,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Iterations averaged at each end of a run for its training reward and KL.
const TRAIN_WINDOW: usize = 10;

/// A trained model's accuracy, with its run's training reward over the first and the last
/// iterations and its KL over the last ones.
fn trained(
    name: &str,
    dir: &Path,
    problems: &[String],
    cfg: &VerifiableConfig,
    seed: u64,
    seconds: f64,
    device: Device,
) -> Result<Accuracy> {
    let mut a = accuracy(name, dir, problems, cfg, seed, device)?;
    let log = crate::align::read_metrics(&dir.join("metrics.jsonl"))?;
    // One iteration's 64 samples are a noisy estimate (±0.06 at a reward of 0.5): average a
    // window of iterations at each end.
    let k = (log.len() / 2).clamp(1, TRAIN_WINDOW).min(log.len());
    let mean = |rows: &[rlhf_train::Metrics], key: &str| -> Option<f64> {
        let v: Vec<f64> = rows.iter().filter_map(|m| m.get(key).copied()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (first, last) = (&log[..k], &log[log.len() - k..]);
    if let (Some(f), Some(l)) = (mean(first, "reward"), mean(last, "reward")) {
        a.train_reward = Some((f, l));
    }
    a.kl = mean(last, "kl");
    a.seconds = seconds;
    Ok(a)
}

/// Greedy and sampled accuracy of the model in `dir` on the word problems (chat format).
fn accuracy(
    name: &str,
    dir: &Path,
    problems: &[String],
    cfg: &VerifiableConfig,
    seed: u64,
    device: Device,
) -> Result<Accuracy> {
    let pre = Pretrained::load(dir, Head::Lm, device)?;
    let greedy = rlhf_eval::greedy_task_score(&pre, problems, PromptFormat::Chat, 32)?.accuracy;
    let sampling = TextGenerateConfig {
        max_new_tokens: 64,
        sampling: Sampling::new(1.0, None, None)?,
        seed: Some(seed ^ 0x0a75),
        stop: vec![],
    };
    let mut sampled = Vec::with_capacity(problems.len());
    for p in problems {
        let task = Task::parse(p)?;
        let ids = pre.encode_prompt(p, PromptFormat::Chat)?;
        let outs = pre.generate_ids(&vec![ids; cfg.samples], &sampling)?;
        let right = outs
            .iter()
            .filter(|o| rlhf_data::grade(&task, o.text.trim()).correct)
            .count();
        sampled.push(right as f64 / cfg.samples as f64);
    }
    Ok(Accuracy {
        name: name.into(),
        greedy,
        sampled,
        train_reward: None,
        kl: None,
        seconds: 0.0,
    })
}

/// The report: per seed and pooled, each model's greedy and sampled accuracy, the trained
/// models' gain over SFT with its interval, and a verdict per method.
pub fn report(cfg: &VerifiableConfig, results: &[SeedResult], seconds: f64) -> String {
    let mut s = String::from("# GRPO vs PPO on a verifiable reward (word-problem answers)\n\n");
    let _ = writeln!(
        s,
        "Per seed: one task world, one pretrained ({} steps) and SFT ({} steps) {:?} model. The \
         reward is {}, on the word problems among the world's {} training prompts with at most \
         {} steps. GRPO (8 prompts × G = 8 per \
         iteration, KL as a k3 loss term with β = {}, advantages {} the group's std, \
         {}-level loss) and PPO (64 prompts × 1, KL as a k1 penalty on the reward with β = {}, \
         value model started from the policy) each draw {} × 64 samples and take {} optimizer \
         steps ({} epoch(s) × {} minibatches per iteration) at lr {}. \
         Judged on {} with at most as many steps: greedy \
         accuracy, and sampled accuracy ({} answers per problem at temperature 1) with 95% \
         bootstrap intervals over problems (pooled: over seeds, then problems). The gain is the \
         paired per-problem difference from SFT's sampled accuracy. Per seed, \"train reward\" is \
         the mean reward of the samples of the first and of the last {w} iterations ({} each), \
         and KL the mean over the last {w} (nats per response).\n",
        cfg.pretrain_steps,
        cfg.sft_steps,
        cfg.preset,
        if cfg.reward == "oracle" {
            "the task world's oracle score (correctness, then partial credit for the steps, \
             format and length)"
        } else {
            "1 when a response's final number is the word problem's answer, else 0"
        },
        cfg.prompts,
        cfg.max_steps,
        cfg.grpo_beta(),
        if cfg.grpo_scale_rewards {
            "divided by"
        } else {
            "not divided by"
        },
        match cfg.grpo_aggregation {
            Aggregation::Sequence => "sequence",
            Aggregation::Token => "token",
        },
        cfg.beta,
        cfg.iterations,
        cfg.iterations * cfg.epochs * cfg.minibatches as u64,
        cfg.epochs,
        cfg.minibatches,
        cfg.lr,
        match (cfg.dev, cfg.heldout) {
            (true, _) => "the held-out word problems of `dev.jsonl`".to_string(),
            (false, 0) => "the held-out word problems of `eval.jsonl`".to_string(),
            (false, n) => format!(
                "{n} held-out word problems (`seedN/heldout.jsonl`: the eval split of an \
                 arithmetic-only draw of the seed's world, disjoint from training at the entity \
                 and operand level)"
            ),
        },
        cfg.samples,
        TRAIN_WINDOW * 64,
        w = TRAIN_WINDOW,
    );
    let names: Vec<String> = results
        .first()
        .map(|r| r.models.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    let per_seed = |i: usize| -> Vec<Vec<f64>> {
        results
            .iter()
            .map(|r| r.models[i].sampled.clone())
            .collect()
    };
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let greedy: Vec<f64> = results.iter().map(|r| r.models[i].greedy).collect();
        let acc = seeds_ci(&per_seed(i));
        let (gain, v) = if i == 0 {
            ("–".to_string(), None)
        } else {
            let d = seeds_ci(&paired_diff(&per_seed(i), &per_seed(0)));
            (pct(&d), Some(d))
        };
        let secs: f64 =
            results.iter().map(|r| r.models[i].seconds).sum::<f64>() / results.len() as f64;
        rows.push(vec![
            name.clone(),
            format!("{:.1}%", 100.0 * rlhf_report::mean(&greedy)),
            pct(&acc),
            gain,
            if i == 0 {
                "–".into()
            } else {
                format!("{secs:.0}")
            },
        ]);
        if let Some(d) = v {
            verdicts.push(format!(
                "- **{name}** vs SFT, sampled accuracy: {} points, {}.",
                fmt_interval(&scale(&d, 100.0), 1),
                verdict(&d)
            ));
        }
    }
    if names.len() == 3 {
        let d = seeds_ci(&paired_diff(&per_seed(1), &per_seed(2)));
        verdicts.push(format!(
            "- **GRPO − PPO**, sampled accuracy: {} points, {}.",
            fmt_interval(&scale(&d, 100.0), 1),
            verdict(&d)
        ));
    }
    let _ = writeln!(s, "\n## Pooled over {} seed(s)\n", results.len());
    s.push_str(&md_table(
        &[
            "model",
            "greedy accuracy (mean over seeds)",
            "sampled accuracy [95% CI]",
            "gain over SFT, points [95% CI]",
            "train time (s, mean)",
        ],
        &rows,
    ));
    let _ = writeln!(s, "\nVerdicts:\n\n{}\n", verdicts.join("\n"));

    let _ = writeln!(s, "## Per seed\n");
    let mut rows = Vec::new();
    for r in results {
        let mut row = vec![
            r.seed.to_string(),
            format!("{} / {}", r.train_problems, r.eval_problems),
        ];
        for m in &r.models {
            let ci = bootstrap_mean_ci(&m.sampled, RESAMPLES, 0.95, r.seed);
            let extra = match (m.train_reward, m.kl) {
                (Some((a, b)), Some(kl)) => {
                    format!("; train reward {a:.3} → {b:.3}, KL {kl:.2}")
                }
                _ => String::new(),
            };
            row.push(format!("{:.1}% / {}{extra}", 100.0 * m.greedy, pct(&ci)));
        }
        row.push(format!("{:.0}", r.seconds));
        rows.push(row);
    }
    let mut head = vec!["seed".to_string(), "train / held-out problems".to_string()];
    head.extend(
        names
            .iter()
            .map(|n| format!("{n}: greedy / sampled accuracy")),
    );
    head.push("seconds".into());
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    s.push_str(&md_table(&head, &rows));
    let _ = writeln!(s, "\nTotal wall time: {seconds:.0} s.");
    s
}

fn scale(ci: &Interval, k: f64) -> Interval {
    Interval {
        mean: k * ci.mean,
        lo: k * ci.lo,
        hi: k * ci.hi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlhf_data::Family;

    fn tasks(family: Family, n: usize, seed: u64) -> Vec<String> {
        let mut rng = rlhf_data::world_rng(seed, 77);
        (0..n)
            .map(|_| Task::generate(&mut rng, family, rlhf_data::Split::Train, 4).prompt())
            .collect()
    }

    #[test]
    fn the_answer_file_holds_the_short_word_problems_with_their_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut prompts = tasks(Family::Arithmetic, 40, 1);
        prompts.extend(tasks(Family::Lists, 10, 2));
        let path = dir.path().join("answers.jsonl");
        let n = answer_file(&prompts, 2, &path).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), n);
        let short: Vec<&String> = prompts
            .iter()
            .filter(|p| match Task::parse(p).unwrap() {
                Task::Arithmetic(w) => w.steps().len() <= 2,
                _ => false,
            })
            .collect();
        assert!(
            n > 0 && n < 40,
            "{n} of 40 word problems have at most 2 steps"
        );
        assert_eq!(n, short.len());
        for (line, p) in lines.iter().zip(short) {
            assert_eq!(line["prompt"], **p);
            // The answer is the one the oracle marks correct.
            let task = Task::parse(p).unwrap();
            let answer = line["answer"].as_str().unwrap();
            assert!(rlhf_data::grade(&task, &format!("The answer is {answer}.")).correct);
            assert!(!rlhf_data::grade(&task, "The answer is 100000.").correct);
        }
    }

    #[test]
    fn heldout_problems_are_distinct_eval_split_word_problems_of_the_asked_steps() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VerifiableConfig {
            heldout: 200,
            ..Default::default()
        };
        let file = dir.path().join("heldout.jsonl");
        let problems = heldout_problems(7, &cfg, &file).unwrap();
        assert_eq!(problems.len(), 200);
        let distinct: std::collections::HashSet<&String> = problems.iter().collect();
        assert_eq!(distinct.len(), 200);
        let mut steps = [0usize; 5];
        for p in &problems {
            match Task::parse(p).unwrap() {
                Task::Arithmetic(a) => steps[a.steps().len()] += 1,
                other => panic!("not a word problem: {other:?}"),
            }
        }
        // Both step counts are drawn (the filter of a 4-step world gave ~half each).
        assert!(
            steps[1] > 60 && steps[2] > 60 && steps[3] + steps[4] == 0,
            "{steps:?}"
        );
        // On the eval side of the split, so none is a training prompt of the same seed's world.
        let records: Vec<EvalRecord> = read_jsonl(&file).unwrap();
        assert_eq!(records.len(), 200);
        assert!(records.iter().all(|r| r.fields["split"] == "eval"));
        let world = rlhf_data::build_world(&rlhf_data::WorldConfig {
            seed: 7,
            ..Default::default()
        })
        .unwrap();
        let train: std::collections::HashSet<&String> =
            world.prompts.iter().map(|p| &p.prompt).collect();
        assert!(problems.iter().all(|p| !train.contains(p)));
        // Deterministic from the seed; another seed draws other problems.
        assert_eq!(heldout_problems(7, &cfg, &file).unwrap(), problems);
        assert_ne!(heldout_problems(8, &cfg, &file).unwrap(), problems);
        let too_many = VerifiableConfig {
            heldout: MAX_HELDOUT + 1,
            ..Default::default()
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .to_string()
                .contains("heldout")
        );
    }

    #[test]
    fn grpo_takes_its_own_beta_only_when_one_is_set() {
        let cfg = VerifiableConfig::default();
        assert_eq!(cfg.grpo_beta(), cfg.beta);
        let own = VerifiableConfig {
            grpo_beta: Some(0.2),
            ..cfg.clone()
        };
        assert_eq!(own.grpo_beta(), 0.2);
        assert!(own.validate().is_ok());
        for bad in [-0.1, f64::NAN] {
            let cfg = VerifiableConfig {
                grpo_beta: Some(bad),
                ..cfg.clone()
            };
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("grpo_beta"), "{err}");
        }
    }

    #[test]
    fn the_report_gives_each_method_a_verdict_from_its_paired_gain() {
        let acc = |name: &str, sampled: Vec<f64>| Accuracy {
            name: name.into(),
            greedy: 0.1,
            sampled,
            train_reward: Some((0.05, 0.1)),
            kl: Some(0.5),
            seconds: 10.0,
        };
        let sft: Vec<f64> = (0..40)
            .map(|i| if i % 4 == 0 { 0.25 } else { 0.0 })
            .collect();
        let better: Vec<f64> = sft.iter().map(|x| x + 0.5).collect();
        let r = SeedResult {
            seed: 0,
            train_problems: 300,
            eval_problems: 40,
            models: vec![
                acc("SFT", sft.clone()),
                acc("GRPO", better),
                acc("PPO", sft.clone()),
            ],
            seconds: 100.0,
        };
        let text = report(&VerifiableConfig::default(), &[r], 100.0);
        assert!(
            text.contains("**GRPO** vs SFT, sampled accuracy: 50.0 [50.0, 50.0] points, better"),
            "{text}"
        );
        assert!(
            text.contains(
                "**PPO** vs SFT, sampled accuracy: 0.0 [0.0, 0.0] points, no clear difference"
            ),
            "{text}"
        );
        assert!(
            text.contains("**GRPO − PPO**, sampled accuracy: 50.0 [50.0, 50.0] points, better"),
            "{text}"
        );
    }
}
