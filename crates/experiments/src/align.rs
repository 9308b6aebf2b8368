//! Row "align": the alignment methods side by side at equal compute. Per seed, one task world,
//! one pretrained and SFT model, one set of K-way rankings from the simulated labelers and one
//! reward model trained on them; then best-of-n (by that reward model), PPO, DPO (pairwise and
//! listwise), GRPO and RLOO start from the same SFT model and are judged the same way: the
//! oracle's win rate against SFT on held-out prompts, KL to SFT, response length, wall time and
//! estimated FLOPs.
//!
//! Equal budget: the three online methods (PPO, GRPO, RLOO) draw the same number of samples
//! (`iterations` × 64: PPO 64 prompts × 1, GRPO/RLOO 8 prompts × G = 8) and take the same
//! optimizer steps on minibatches of the same size (`epochs` × `minibatches` per iteration) at
//! the same learning rate, all against the same reward model (its score divided by its std on
//! the SFT samples, as PPO does). The two DPO forms draw nothing beyond the labels every method
//! shares and take one pass over them; best-of-n trains nothing and pays at inference instead.
//! Training FLOPs are estimated as 2 × parameters per token for a forward pass and 6 × for a
//! forward and backward pass, from the token counts each run saw.
//!
//! Not here: the methods themselves (`rlhf_train::{ppo, dpo, grpo}`) or the shared stages
//! (`demo`'s pretraining, SFT, labels and reward model).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use rlhf_data::{Agreement, EvalRecord, SampleRecord, read_jsonl};
use rlhf_eval::{
    CompareConfig, EvalInputs, Judge, JudgeSpec, Observer, Oracle, RewardModel, Scorer,
};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling, TextGenerateConfig};
use rlhf_report::{Interval, ScatterChart, ScatterSeries, fmt_interval, md_table};
use rlhf_train::grpo::{Algo, GrpoInputs, KlMode};
use rlhf_train::{DpoConfig, DpoLoss, PpoInputs, Preset, Resume};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::common::{OnlineBudget, RESAMPLES, flops, run_seeds, seeds_ci, write_json, write_text};
use crate::demo;
use crate::error::{ExperimentError, Result};

/// The experiment's recipe (`--set key=value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignConfig {
    pub preset: Preset,
    pub pretrain_steps: u64,
    pub sft_steps: u64,
    /// Training prompts: ranked K ways for the reward model and DPO, and the online methods'.
    pub prompts: usize,
    /// Responses per prompt in the labels (InstructGPT: 4 to 9).
    pub k: usize,
    /// Iterations of the online methods, 64 samples each.
    pub iterations: u64,
    /// Passes over each iteration's samples (PPO, GRPO, RLOO).
    pub epochs: u64,
    /// Minibatches per pass (PPO, GRPO, RLOO).
    pub minibatches: usize,
    /// Learning rate of the online methods.
    pub lr: f64,
    /// PPO's and RLOO's KL penalty β on the reward (k1).
    pub kl_coef: f64,
    /// GRPO's β on its k3 KL loss term.
    pub grpo_beta: f64,
    /// DPO's learning rate and β (the dev seed's choice for the demo's world, README).
    pub dpo_lr: f64,
    pub dpo_beta: f64,
    /// n of best-of-n (SFT samples per held-out prompt, the reward model picks one).
    pub best_of: usize,
    /// Held-out prompts in the evaluation (`None`: all of `eval.jsonl`).
    pub eval_prompts: Option<usize>,
    /// Samples of each model per held-out prompt.
    pub eval_samples: usize,
    /// Evaluate on `dev.jsonl` (for choosing a recipe) instead of `eval.jsonl`.
    pub dev: bool,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Micro,
            pretrain_steps: 600,
            sft_steps: 300,
            // 800 prompts and 12 iterations keep 3 seeds under 30 minutes on 2 cores (28.7 min
            // measured); 1000 and 20 took 38 (both runs in docs/experiments/).
            prompts: 800,
            k: 8,
            iterations: 12,
            epochs: 4,
            minibatches: 4,
            lr: 3e-5,
            kl_coef: 0.1,
            grpo_beta: 0.04,
            dpo_lr: 1e-5,
            dpo_beta: 0.1,
            best_of: 8,
            eval_prompts: Some(200),
            eval_samples: 2,
            dev: false,
        }
    }
}

impl AlignConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ExperimentError::Invalid(format!("align: {m}")));
        if self.k < 2 || self.prompts < 64 {
            return bad("k must be at least 2 and prompts at least 64 (one PPO batch)");
        }
        if self.pretrain_steps == 0 || self.sft_steps == 0 || self.iterations == 0 {
            return bad("pretrain_steps, sft_steps and iterations must be at least 1");
        }
        if self.epochs == 0 || self.minibatches == 0 || 64 % self.minibatches != 0 {
            return bad("epochs must be at least 1 and minibatches divide 64");
        }
        if self.best_of < 2 || self.eval_samples == 0 || self.eval_prompts == Some(0) {
            return bad("best_of must be at least 2, eval_samples and eval_prompts at least 1");
        }
        let pos = |x: f64| x > 0.0 && x.is_finite();
        if !(pos(self.lr) && pos(self.dpo_lr) && pos(self.dpo_beta)) {
            return bad("lr, dpo_lr and dpo_beta must be > 0");
        }
        let non_negative = |x: f64| x >= 0.0 && x.is_finite();
        if !(non_negative(self.kl_coef) && non_negative(self.grpo_beta)) {
            return bad("kl_coef and grpo_beta must be >= 0");
        }
        Ok(())
    }
}

/// One method's verdict on one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub name: String,
    pub win_rate: Interval,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Per held-out item: 1 win, 0.5 tie, 0 loss.
    pub outcomes: Vec<f64>,
    /// Mean KL to SFT, nats per response (best-of-n: the bound log n − (n − 1)/n).
    pub kl: f64,
    /// Mean response length in tokens, the method's and SFT's on the same prompts.
    pub length: Option<f64>,
    pub sft_length: Option<f64>,
    /// Training wall time (best-of-n: its sampling and scoring at evaluation).
    pub seconds: f64,
    /// Estimated training FLOPs (0 for best-of-n).
    pub train_flops: f64,
    /// Extra inference FLOPs per held-out prompt over one SFT sample (best-of-n only).
    pub inference_flops_per_prompt: f64,
    /// Policy samples drawn in training, optimizer steps taken.
    pub samples: u64,
    pub steps: u64,
}

/// One seed's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub agreement: Agreement,
    pub rm_accuracy_labels: f64,
    pub rm_accuracy_oracle: Option<f64>,
    pub params: u64,
    /// Pretraining, SFT, labels and reward model.
    pub shared_seconds: f64,
    pub methods: Vec<MethodResult>,
    pub seconds: f64,
}

/// The order of the table.
pub const METHODS: [&str; 6] = ["best-of-n", "ppo", "dpo", "dpo-listwise", "grpo", "rloo"];

/// A scorer divided by a constant (the reward model's std on the SFT samples): GRPO's and
/// RLOO's rewards on PPO's scale.
#[derive(Debug)]
struct Scaled {
    inner: RewardModel,
    scale: f64,
}

impl Scorer for Scaled {
    fn key(&self) -> &str {
        self.inner.key()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn source(&self) -> Option<&std::path::Path> {
        self.inner.source()
    }
    fn score(&self, prompts: &[String], responses: &[String]) -> rlhf_eval::Result<Vec<f64>> {
        Ok(self
            .inner
            .score(prompts, responses)?
            .into_iter()
            .map(|r| r / self.scale)
            .collect())
    }
}

/// Token counts behind the FLOPs estimates.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    /// Mean prompt tokens (chat template) of the training prompts.
    prompt: f64,
    /// Mean tokens of the SFT samples in the labels.
    response: f64,
}

/// Runs every seed (run folders `out/seedN`) and writes `out/align.md`, `out/results.json` and
/// the plots.
pub fn run(
    cfg: &AlignConfig,
    seeds: &[u64],
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<Vec<SeedResult>> {
    cfg.validate()?;
    let (results, seconds) = run_seeds(seeds, out, obs, |seed, label, obs| {
        obs.note(&format!("\n=== align {label} ==="));
        one_seed(cfg, seed, &out.join(format!("seed{seed}")), device, obs)
    })?;
    write_json(&out.join("config.json"), cfg)?;
    let text = report(cfg, &results, seconds);
    write_text(&out.join("align.md"), &text)?;
    charts(&results, out)?;
    Ok(results)
}

fn step(obs: &mut dyn Observer, t0: Instant, what: &str) -> Instant {
    obs.note(&format!("  [{:>5.0} s] {what}", t0.elapsed().as_secs_f64()));
    Instant::now()
}

fn one_seed(
    cfg: &AlignConfig,
    seed: u64,
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<SeedResult> {
    let t0 = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| ExperimentError::io("create", out, e))?;
    let data = out.join("data");
    let sft = out.join("sft");
    let ps = demo::world_pretrain_sft(
        out,
        seed,
        cfg.prompts,
        cfg.preset,
        cfg.pretrain_steps,
        cfg.sft_steps,
        device,
        |what| {
            step(obs, t0, what);
        },
    )?;
    step(obs, t0, "samples and rankings");
    let sft_pre = Pretrained::load(&sft, Head::Lm, device)?;
    let prompts_file = data.join("prompts.jsonl");
    let prompts = demo::prompts_of(&prompts_file)?;
    let (rankings, labeled, _) = demo::label_stage(&sft_pre, &prompts, cfg.k, seed, out, obs)?;
    let tokens = token_counts(&sft_pre, &prompts, &out.join("samples.jsonl"))?;
    step(obs, t0, "reward model");
    let rm = out.join("rm");
    let rs = demo::reward_stage(&sft, &rankings, &rm, seed, device)?;
    let shared_seconds = t0.elapsed().as_secs_f64();
    let p = ps.params as f64;
    let eval_file = data.join(if cfg.dev { "dev.jsonl" } else { "eval.jsonl" });
    let compare = CompareConfig {
        seed,
        samples: cfg.eval_samples,
        ..Default::default()
    };

    let mut methods = Vec::new();
    // Best-of-n: SFT samples, the reward model picks.
    step(obs, t0, &format!("best-of-{}", cfg.best_of));
    methods.push(best_of_n(
        cfg, seed, &sft_pre, &rm, &eval_file, &compare, p, tokens, device,
    )?);
    drop(sft_pre);

    let budget = OnlineBudget {
        iterations: cfg.iterations,
        epochs: cfg.epochs,
        minibatches: cfg.minibatches,
        lr: cfg.lr,
        seed,
    };
    let online_steps = cfg.iterations * cfg.epochs * cfg.minibatches as u64;
    let online_samples = cfg.iterations * 64;
    for name in &METHODS[1..] {
        let t = step(obs, t0, name);
        let dir = out.join(name);
        let (seconds, train_flops, samples, steps) = match *name {
            "ppo" => {
                let pcfg = budget.ppo(cfg.kl_coef);
                let inputs = PpoInputs {
                    policy: sft.clone(),
                    reward: rlhf_train::PpoReward::Model(rm.clone()),
                    prompts: prompts_file.clone(),
                    eval_prompts: None,
                    ptx_data: None,
                    out: dir.clone(),
                    gold: Some(Box::new(Oracle)),
                    rollout_engine: None,
                };
                let s = rlhf_train::ppo(&inputs, &pcfg, Resume::No, device, true)?;
                // Sampling, old log-probs, reference, reward and value passes; then policy and
                // value forward and backward every epoch.
                let per_token = (10.0 + 12.0 * cfg.epochs as f64) * p;
                let f = online_flops(&s.log, 64.0, tokens.prompt, per_token);
                (s.elapsed_s, f, online_samples, online_steps)
            }
            "dpo" | "dpo-listwise" => {
                let mut dcfg = DpoConfig {
                    loss: if *name == "dpo" {
                        DpoLoss::Sigmoid
                    } else {
                        DpoLoss::Listwise
                    },
                    beta: cfg.dpo_beta,
                    ..Default::default()
                };
                dcfg.trainer.lr = cfg.dpo_lr;
                dcfg.trainer.seed = seed;
                let s = rlhf_train::dpo(&sft, &rankings, &dir, &dcfg, Resume::No, device)?;
                // The reference's pass over every sequence once, the policy's forward and
                // backward over the training prompts' sequences each epoch (plus the held-out
                // accuracy's passes, left out).
                let seqs = (s.train_prompts * cfg.k) as f64;
                let per_seq = tokens.prompt + tokens.response;
                let f = (2.0 + 6.0 * dcfg.epochs as f64) * p * seqs * per_seq;
                (s.elapsed_s, f, 0, s.steps)
            }
            _ => {
                let algo = if *name == "grpo" {
                    Algo::Grpo
                } else {
                    Algo::Rloo
                };
                let (beta, kl_mode) = match algo {
                    Algo::Grpo => (cfg.grpo_beta, KlMode::Loss),
                    Algo::Rloo => (cfg.kl_coef, KlMode::Reward),
                };
                let gcfg = budget.grpo(algo, beta, kl_mode);
                let reward = Scaled {
                    inner: RewardModel::load(&rm, device)?,
                    scale: rs.reward_std.max(1e-6),
                };
                let inputs = GrpoInputs {
                    rollout_engine: None,
                    policy: sft.clone(),
                    prompts: prompts_file.clone(),
                    reward: Box::new(reward),
                    eval_prompts: None,
                    out: dir.clone(),
                    progress: true,
                };
                let s = rlhf_train::grpo::grpo(&inputs, &gcfg, Resume::No, device)?;
                let log = read_metrics(&dir.join("metrics.jsonl"))?;
                // Sampling, old log-probs, reference and reward passes; then the policy's
                // forward and backward every epoch.
                let per_token = (8.0 + 6.0 * cfg.epochs as f64) * p;
                let f = online_flops(&log, 64.0, tokens.prompt, per_token);
                (s.elapsed_s, f, online_samples, online_steps)
            }
        };
        obs.note(&format!(
            "      trained in {:.0} s",
            t.elapsed().as_secs_f64()
        ));
        let e = rlhf_eval::evaluate(
            &EvalInputs {
                model: dir.clone(),
                baseline: sft.clone(),
                prompts: eval_file.clone(),
                judge: JudgeSpec::Oracle,
                limit: cfg.eval_prompts,
            },
            &compare,
            device,
            obs,
        )?;
        rlhf_eval::write_evaluation(&out.join(format!("eval-{name}")), &e)?;
        let c = &e.comparison;
        obs.note(&format!(
            "      {name} vs SFT: win rate {}, KL {:.2}",
            fmt_interval(&c.win_rate, 3),
            c.kl.map_or(f64::NAN, |k| k.mean)
        ));
        methods.push(MethodResult {
            name: name.to_string(),
            win_rate: c.win_rate,
            wins: c.wins,
            ties: c.ties,
            losses: c.losses,
            outcomes: c.items.iter().map(|i| i.outcome).collect(),
            kl: c.kl.map_or(f64::NAN, |k| k.mean),
            length: c.length_a,
            sft_length: c.length_b,
            seconds,
            train_flops,
            inference_flops_per_prompt: 0.0,
            samples,
            steps,
        });
    }
    Ok(SeedResult {
        seed,
        agreement: labeled.agreement,
        rm_accuracy_labels: rs.eval_accuracy_end.labels,
        rm_accuracy_oracle: rs.eval_accuracy_end.oracle,
        params: ps.params as u64,
        shared_seconds,
        methods,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Σ over iterations of `samples` × (prompt + that iteration's mean response tokens) ×
/// `per_token` FLOPs.
fn online_flops(log: &[rlhf_train::Metrics], samples: f64, prompt: f64, per_token: f64) -> f64 {
    log.iter()
        .map(|m| samples * (prompt + m.get("response_len").copied().unwrap_or(0.0)) * per_token)
        .sum()
}

pub(crate) fn read_metrics(path: &Path) -> Result<Vec<rlhf_train::Metrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io("read", path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v.as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default())
        })
        .collect()
}

fn token_counts(pre: &Pretrained, prompts: &[String], samples: &Path) -> Result<Tokens> {
    let mut n = 0usize;
    for p in prompts {
        n += pre.encode_prompt(p, PromptFormat::Chat)?.len();
    }
    let records: Vec<SampleRecord> = read_jsonl(samples)?;
    let (mut r, mut count) = (0usize, 0usize);
    for rec in &records {
        for resp in &rec.responses {
            r += pre.tokenizer.encode(resp, false)?.len() + 1;
            count += 1;
        }
    }
    Ok(Tokens {
        prompt: n as f64 / prompts.len().max(1) as f64,
        response: r as f64 / count.max(1) as f64,
    })
}

/// Best-of-n on the held-out prompts: for each of `eval_samples` rounds, n SFT samples (seeded
/// apart from the baseline's), the reward model's favourite against one fresh SFT sample.
#[allow(clippy::too_many_arguments)]
fn best_of_n(
    cfg: &AlignConfig,
    seed: u64,
    sft: &Pretrained,
    rm_dir: &Path,
    eval_file: &Path,
    compare: &CompareConfig,
    params: f64,
    tokens: Tokens,
    device: Device,
) -> Result<MethodResult> {
    let t = Instant::now();
    let prompts: Vec<String> = read_jsonl::<EvalRecord>(eval_file)?
        .into_iter()
        .map(|r| r.prompt)
        .take(cfg.eval_prompts.unwrap_or(usize::MAX))
        .collect();
    let mut rm = RewardModel::load(rm_dir, device)?;
    rm.rows = cfg.best_of;
    let draw = |k: usize, s: u64| -> Result<Vec<Vec<(String, usize)>>> {
        let c = TextGenerateConfig {
            max_new_tokens: compare.max_new_tokens,
            sampling: Sampling::new(compare.temperature, None, None)?,
            seed: Some(s),
            stop: vec![],
        };
        Ok(sft
            .sample_k(&prompts, k, PromptFormat::Chat, &c, 256, |_, _| {})?
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|x| (x.text.trim().to_string(), x.generation.token_ids.len()))
                    .collect()
            })
            .collect())
    };
    // Items in prompt-major order (each prompt's rounds consecutive), as `evaluate` has them.
    let rounds = cfg.eval_samples;
    let picks_all = draw(cfg.best_of * rounds, seed.wrapping_add(7_777))?;
    let base_all = draw(rounds, seed.wrapping_add(9_999))?;
    let (mut ps, mut a, mut b, mut ta, mut tb) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, prompt) in prompts.iter().enumerate() {
        for r in 0..rounds {
            let group = &picks_all[i][r * cfg.best_of..(r + 1) * cfg.best_of];
            let texts: Vec<String> = group.iter().map(|(t, _)| t.clone()).collect();
            let scores = rm.score(&vec![prompt.clone(); texts.len()], &texts)?;
            let best = rlhf_eval::best_indices(&scores, cfg.best_of)[0];
            ps.push(prompt.clone());
            a.push(group[best].0.clone());
            ta.push(group[best].1);
            b.push(base_all[i][r].0.clone());
            tb.push(base_all[i][r].1);
        }
    }
    let judge = Judge::Oracle(Oracle);
    let v = judge.verdicts(&ps, &a, &b, |_| {})?;
    let n = cfg.best_of as f64;
    let kl = vec![n.ln() - (n - 1.0) / n; ps.len()];
    let c = rlhf_eval::summarize_grouped(
        judge.name(),
        rlhf_eval::Paired {
            prompts: &ps,
            a: &a,
            b: &b,
            kl: Some(&kl),
            tokens: Some((&ta, &tb)),
        },
        &v,
        RESAMPLES,
        seed,
        rounds,
    );
    // n − 1 extra samples and n reward-model passes per pick (the reward model is the SFT
    // model's size).
    let per_seq = tokens.prompt + tokens.response;
    let inference = ((n - 1.0) * 2.0 + n * 2.0) * params * per_seq;
    Ok(MethodResult {
        name: "best-of-n".into(),
        win_rate: c.win_rate,
        wins: c.wins,
        ties: c.ties,
        losses: c.losses,
        outcomes: v.outcomes.clone(),
        kl: kl[0],
        length: c.length_a,
        sft_length: c.length_b,
        seconds: t.elapsed().as_secs_f64(),
        train_flops: 0.0,
        inference_flops_per_prompt: inference,
        samples: 0,
        steps: 0,
    })
}

fn method<'a>(r: &'a SeedResult, name: &str) -> Option<&'a MethodResult> {
    r.methods.iter().find(|m| m.name == name)
}

fn label(name: &str, best_of: Option<usize>) -> String {
    match (name, best_of) {
        ("best-of-n", Some(n)) => format!("best-of-{n} (RM)"),
        ("best-of-n", None) => "best-of-n (RM)".into(),
        _ => match name {
            "ppo" => "PPO".into(),
            "dpo" => "DPO (sigmoid)".into(),
            "dpo-listwise" => "DPO (listwise)".into(),
            "grpo" => "GRPO".into(),
            "rloo" => "RLOO".into(),
            s => s.into(),
        },
    }
}

/// The plain-words verdict of a pooled win-rate interval against SFT.
pub fn verdict(ci: &Interval) -> &'static str {
    if ci.lo > 0.5 {
        "beats SFT (interval above 0.5)"
    } else if ci.hi < 0.5 {
        "worse than SFT (interval below 0.5)"
    } else {
        "no clear difference from SFT (interval contains 0.5)"
    }
}

/// Re-renders `out/align.md` and the plots from `out/results.json` of an earlier run (no
/// training); `cfg` must be the recipe that run used (`out/config.json` has it).
pub fn report_only(cfg: &AlignConfig, out: &Path) -> Result<Vec<SeedResult>> {
    let (path, all): (_, Vec<SeedResult>) = crate::common::read_results(out)?;
    if all.is_empty() || all.iter().any(|s| s.methods.len() != METHODS.len()) {
        return Err(ExperimentError::Invalid(format!(
            "{} does not hold the {} methods of every seed: run the experiment first",
            path.display(),
            METHODS.len()
        )));
    }
    let seconds = all.iter().map(|s| s.seconds).sum();
    write_text(&out.join("align.md"), &report(cfg, &all, seconds))?;
    charts(&all, out)?;
    Ok(all)
}

/// The markdown report.
pub fn report(cfg: &AlignConfig, results: &[SeedResult], seconds: f64) -> String {
    let mut s = String::from(
        "# Alignment methods side by side: best-of-n, PPO, DPO, GRPO and RLOO at equal budget\n\n\
         Per seed: one task world, one SFT model, one set of K-way rankings by the simulated \
         labelers and one reward model trained on them; every method starts from that SFT model. \
         The judge is the noise-free oracle (`crates/data/src/oracle.rs`); the win rate against \
         SFT counts ties as half, pooled over seeds with a two-level 95% bootstrap (seeds, then \
         held-out items).\n\n",
    );
    let _ = writeln!(
        s,
        "Budget: PPO, GRPO and RLOO each draw {} × 64 = {} samples and take {} optimizer steps \
         ({} epochs × {} minibatches per iteration) at lr {:e}, all against the same reward model \
         (scores divided by its std on the SFT samples); PPO's and RLOO's KL penalty β = {} on \
         the reward, GRPO's β = {} on a k3 loss term. DPO (β = {}, lr {:e}) takes one pass over the \
         shared rankings and samples nothing; best-of-{} trains nothing and pays {} − 1 extra \
         samples and {} reward-model passes per prompt at inference. Not tuned per method beyond \
         that: PPO's optimiser settings are the demo's, DPO's the dev seed's (README). Labels: \
         {} prompts × K = {}; evaluation: {} held-out prompts × {} samples per model. FLOPs are \
         estimated as 2 × parameters per token for a forward pass and 6 × for forward and \
         backward, from the tokens each run saw (shared stages not counted).\n",
        cfg.iterations,
        cfg.iterations * 64,
        cfg.iterations * cfg.epochs * cfg.minibatches as u64,
        cfg.epochs,
        cfg.minibatches,
        cfg.lr,
        cfg.kl_coef,
        cfg.grpo_beta,
        cfg.dpo_beta,
        cfg.dpo_lr,
        cfg.best_of,
        cfg.best_of,
        cfg.best_of,
        cfg.prompts,
        cfg.k,
        cfg.eval_prompts.map_or("all".into(), |n| n.to_string()),
        cfg.eval_samples,
    );
    let avg = |name: &str, f: &dyn Fn(&MethodResult) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter_map(|r| method(r, name).map(f))
            .filter(|x| x.is_finite())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut rows = Vec::new();
    let mut verdicts = String::new();
    for name in METHODS {
        let per_seed: Vec<Vec<f64>> = results
            .iter()
            .filter_map(|r| method(r, name).map(|m| m.outcomes.clone()))
            .filter(|o| !o.is_empty())
            .collect();
        if per_seed.is_empty() {
            continue;
        }
        let ci = seeds_ci(&per_seed);
        let num = |x: Option<f64>, d: usize| x.map_or("–".into(), |v| format!("{v:.d$}"));
        let flops_cell = if name == "best-of-n" {
            format!(
                "0 (+{} per prompt)",
                flops(avg(name, &|m| m.inference_flops_per_prompt).unwrap_or(0.0))
            )
        } else {
            flops(avg(name, &|m| m.train_flops).unwrap_or(f64::NAN))
        };
        rows.push(vec![
            label(name, Some(cfg.best_of)),
            fmt_interval(&ci, 3),
            num(avg(name, &|m| m.kl), 2),
            format!(
                "{} / {}",
                num(avg(name, &|m| m.length.unwrap_or(f64::NAN)), 1),
                num(avg(name, &|m| m.sft_length.unwrap_or(f64::NAN)), 1)
            ),
            num(avg(name, &|m| m.samples as f64), 0),
            num(avg(name, &|m| m.steps as f64), 0),
            num(avg(name, &|m| m.seconds), 0),
            flops_cell,
        ]);
        let _ = writeln!(
            verdicts,
            "- **{}**: {}, {}.",
            label(name, Some(cfg.best_of)),
            fmt_interval(&ci, 3),
            verdict(&ci)
        );
    }
    s.push_str(&format!("\n## Pooled over {} seed(s)\n\n", results.len()));
    s.push_str(&md_table(
        &[
            "method",
            "oracle win rate vs SFT [95% CI]",
            "KL to SFT (nats/resp.)",
            "length (tokens) / SFT's",
            "samples drawn",
            "optimizer steps",
            "train time (s)",
            "train FLOPs (est.)",
        ],
        &rows,
    ));
    s.push_str("\nVerdicts:\n\n");
    s.push_str(&verdicts);
    s.push_str("\n## Per seed\n\n");
    let mut headers = vec![
        "seed".to_string(),
        "labeler agreement".into(),
        "RM accuracy (labels / oracle)".into(),
    ];
    headers.extend(METHODS.iter().map(|m| label(m, Some(cfg.best_of))));
    headers.push("shared stages / total (s)".into());
    let seed_rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.seed.to_string(),
                r.agreement
                    .rate()
                    .map_or("–".into(), |a| format!("{:.1}%", 100.0 * a)),
                format!(
                    "{:.1}% / {}",
                    100.0 * r.rm_accuracy_labels,
                    r.rm_accuracy_oracle
                        .map_or("–".into(), |o| format!("{:.1}%", 100.0 * o))
                ),
            ];
            for name in METHODS {
                row.push(method(r, name).map_or("–".into(), |m| fmt_interval(&m.win_rate, 3)));
            }
            row.push(format!("{:.0} / {:.0}", r.shared_seconds, r.seconds));
            row
        })
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    s.push_str(&md_table(&headers, &seed_rows));
    let _ = writeln!(
        s,
        "\n![win rate vs KL](align_win_rate_vs_kl.svg)\n\n![win rate vs train time]\
         (align_win_rate_vs_time.svg)\n\nTotal wall time: {seconds:.0} s."
    );
    s
}

fn charts(results: &[SeedResult], out: &Path) -> Result<()> {
    for (stem, title, x_label, x) in [
        (
            "align_win_rate_vs_kl",
            "Oracle win rate vs SFT against KL to SFT (one point per seed)",
            "KL to SFT (nats per response)",
            (|m: &MethodResult| m.kl) as fn(&MethodResult) -> f64,
        ),
        (
            "align_win_rate_vs_time",
            "Oracle win rate vs SFT against training time (one point per seed)",
            "train time (s)",
            |m: &MethodResult| m.seconds,
        ),
    ] {
        let series = METHODS
            .iter()
            .map(|name| ScatterSeries {
                name: label(name, None),
                points: results
                    .iter()
                    .filter_map(|r| method(r, name))
                    .filter(|m| x(m).is_finite())
                    .map(|m| (x(m), m.win_rate.mean))
                    .collect(),
            })
            .collect();
        ScatterChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: "oracle win rate vs SFT".into(),
            series,
            ..Default::default()
        }
        .save(&out.join(stem))?;
    }
    Ok(())
}
