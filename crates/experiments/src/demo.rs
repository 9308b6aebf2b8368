//! `rlhf demo`: the embedded InstructGPT pipeline end to end with no downloads: task world →
//! tokenizer + tiny model pretrained from scratch → SFT → K samples per prompt → simulated
//! labelers → reward model → PPO and PPO-ptx → evaluation against SFT (oracle win rate, KL,
//! pretraining NLL, best-of-n) → a run folder with every artifact and `report.md` with plots.
//!
//! Every stage is a library call with typed inputs and outputs: the same functions the
//! subcommands call (`rlhf_train::{pretrain, sft, reward, ppo}`, `rlhf_train::sample`,
//! `rlhf_data::LabelerPanel`, `rlhf_eval::{evaluate, best_of_n, corpus_nll}`), so what the demo
//! does can be replayed by hand with `rlhf pretrain`, `rlhf sft`, ... on its run folder.
//!
//! Not here: any of those stages' logic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rlhf_data::{
    Agreement, EvalRecord, LabelerConfig, LabelerPanel, PromptRecord, WorldConfig, read_jsonl,
    write_jsonl, write_text, write_world,
};
use rlhf_eval::{
    BestOfNConfig, CompareConfig, EvalInputs, JudgeSpec, Observer, Oracle, RewardModel, TaskScore,
};
use rlhf_model::{Head, Pretrained, PromptFormat, Sampling};
use rlhf_report::{LineChart, Series, fmt_interval, md_table};
use rlhf_train::sample::{SampleConfig, sample_responses};
use rlhf_train::{
    Metrics, PpoConfig, PpoInputs, Preset, PretrainConfig, Resume, RewardConfig, SftConfig,
};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{ExperimentError, Result};

/// What the demo runs (`rlhf demo`'s flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Seed of the task world and of every stage.
    pub seed: u64,
    pub preset: Preset,
    pub pretrain_steps: u64,
    pub sft_steps: u64,
    /// Prompts in the world's `prompts.jsonl`: sampled, ranked and used by PPO.
    pub prompts: usize,
    /// Responses sampled and ranked per prompt (InstructGPT: 4 to 9).
    pub k: usize,
    /// PPO iterations (64 rollouts each), for PPO and for PPO-ptx.
    pub ppo_iterations: u64,
    /// PPO learning rate (policy and value model).
    pub ppo_lr: f64,
    /// PPO epochs over each iteration's rollouts.
    pub ppo_epochs: u64,
    /// KL penalty coefficient β (fixed).
    pub kl_coef: f64,
    /// PPO-ptx coefficient γ.
    pub ptx_coef: f64,
    /// Held-out prompts in the final evaluation (`None`: all).
    pub eval_prompts: Option<usize>,
    /// Responses of each model per held-out prompt in the final evaluation (the interval
    /// resamples prompts).
    pub eval_samples: usize,
    /// Largest n of the best-of-n curve (powers of two up to it).
    pub best_of: usize,
    /// Held-out prompts for the best-of-n curve.
    pub best_of_prompts: usize,
    /// Stop after pretraining (a quick smoke run).
    pub pretrain_only: bool,
    /// Evaluate on `dev.jsonl` instead of `eval.jsonl`: held-out prompts of the same split and
    /// distribution, disjoint from the reported ones, for choosing a recipe.
    pub dev: bool,
    /// Start from this checkpoint (a real model) instead of pretraining one: see [`Self::real`].
    pub base: Option<PathBuf>,
    /// Rollouts per PPO iteration.
    pub ppo_rollouts: usize,
    /// SFT and reward-model learning rates and batch sizes (`None`: the library's, chosen for
    /// the tiny models).
    pub sft_lr: Option<f64>,
    pub rm_lr: Option<f64>,
    pub batch: Option<usize>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            preset: Preset::Micro,
            pretrain_steps: 600,
            sft_steps: 300,
            prompts: 1500,
            k: 8,
            ppo_iterations: 30,
            ppo_lr: 3e-5,
            ppo_epochs: 4,
            kl_coef: 0.1,
            ptx_coef: 1.0,
            eval_prompts: None,
            eval_samples: 4,
            best_of: 16,
            best_of_prompts: 64,
            pretrain_only: false,
            dev: false,
            base: None,
            ppo_rollouts: 64,
            sft_lr: None,
            rm_lr: None,
            batch: None,
        }
    }
}

impl DemoConfig {
    /// The pipeline from a real checkpoint `base` (e.g. SmolLM2-135M-Instruct) on a 2-core CPU:
    /// no pretraining, sizes cut so that the whole run takes minutes rather than hours, and
    /// learning rates for a model that is already trained (2e-5 for SFT, 1e-5 for the reward
    /// model and PPO, TRL's range, rather than the tiny models' 5e-4 and 3e-4), batches of 8.
    pub fn real(base: PathBuf) -> Self {
        Self {
            base: Some(base),
            sft_steps: 30,
            prompts: 64,
            k: 4,
            ppo_iterations: 4,
            ppo_rollouts: 16,
            ppo_lr: 1e-5,
            ppo_epochs: 2,
            eval_prompts: Some(32),
            eval_samples: 2,
            best_of: 4,
            best_of_prompts: 16,
            sft_lr: Some(2e-5),
            rm_lr: Some(1e-5),
            batch: Some(8),
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ExperimentError::Invalid(format!("demo: {m}")));
        if self.k < 2 {
            return bad("k must be at least 2 (rankings compare responses)");
        }
        if self.ppo_rollouts < 8 || self.ppo_rollouts % 4 != 0 {
            return bad("ppo_rollouts must be a multiple of 4 (PPO's minibatches), at least 8");
        }
        if self.base.is_some() && self.pretrain_only {
            return bad("pretrain_only does not apply when starting from a base checkpoint");
        }
        if self.pretrain_steps == 0 || self.sft_steps == 0 || self.ppo_iterations == 0 {
            return bad("pretrain_steps, sft_steps and ppo_iterations must be at least 1");
        }
        if self.best_of == 0
            || self.best_of_prompts == 0
            || self.eval_prompts == Some(0)
            || self.eval_samples == 0
            || self.prompts < 2
            || self.ppo_epochs == 0
        {
            return bad(
                "best_of, best_of_prompts, eval_prompts, eval_samples and ppo_epochs must be at \
                 least 1, prompts at least 2",
            );
        }
        if !(self.ppo_lr > 0.0 && self.ppo_lr.is_finite() && self.ptx_coef >= 0.0) {
            return bad("ppo_lr must be > 0 and ptx_coef >= 0");
        }
        if !(self.kl_coef >= 0.0 && self.kl_coef.is_finite()) {
            return bad("kl_coef must be >= 0");
        }
        Ok(())
    }
}

/// The headline numbers of a finished demo.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub out: PathBuf,
    /// Per PPO run ("ppo", "ppo-ptx"): its evaluation against SFT.
    pub comparisons: Vec<(String, rlhf_eval::Comparison)>,
    /// How often two simulated labelers agreed on the demo's own samples (empty for a
    /// pretraining-only demo).
    pub agreement: Agreement,
    /// The reward model's held-out pairwise accuracy against the noisy labels and against the
    /// noise-free oracle (`None` when no pair was decisive).
    pub rm_accuracy_labels: Option<f64>,
    pub rm_accuracy_oracle: Option<f64>,
    /// Held-out pretraining-corpus NLL (nats per token) per model: pretrained, SFT, PPO, PPO-ptx.
    pub corpus_nll: Vec<(String, f64)>,
    /// Per PPO run: (iteration, held-out oracle win rate vs SFT) of the in-loop evaluations.
    pub win_rate_curves: Vec<(String, Vec<(f64, f64)>)>,
    /// Seconds per stage, in order.
    pub stage_seconds: Vec<(String, f64)>,
    pub seconds: f64,
}

/// Timings and report text, appended stage by stage and written after each stage, so an
/// interrupted demo still leaves a report of what finished.
struct Report {
    path: PathBuf,
    text: String,
    t0: Instant,
    stage: usize,
    stages: usize,
    /// The stage in progress and when it started; the finished ones with their seconds.
    current: Option<(String, Instant)>,
    timings: Vec<(String, f64)>,
}

impl Report {
    fn close_stage(&mut self) {
        if let Some((name, t)) = self.current.take() {
            self.timings.push((name, t.elapsed().as_secs_f64()));
        }
    }

    fn stage(&mut self, obs: &mut dyn Observer, name: &str) -> Instant {
        self.close_stage();
        self.current = Some((name.to_string(), Instant::now()));
        self.stage += 1;
        obs.note(&format!(
            "\n[{}/{}] {name}  ({:.0} s so far)",
            self.stage,
            self.stages,
            self.t0.elapsed().as_secs_f64()
        ));
        Instant::now()
    }

    fn add(&mut self, s: &str) -> Result<()> {
        self.text.push_str(s);
        std::fs::write(&self.path, &self.text)
            .map_err(|e| ExperimentError::io("write", &self.path, e))
    }

    fn finish(&mut self, obs: &mut dyn Observer) -> Result<f64> {
        self.close_stage();
        let total = self.t0.elapsed().as_secs_f64();
        self.add(&format!("\nTotal wall time: {total:.1} s.\n"))?;
        obs.note(&format!(
            "\ndone in {total:.1} s; report: {}",
            self.path.display()
        ));
        Ok(total)
    }
}

/// A table row of a greedy task score.
fn score_row(name: &str, s: &TaskScore) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{:.3}", s.score),
        format!("{:.1}%", 100.0 * s.accuracy),
    ]
}

pub(crate) fn prompts_of(path: &Path) -> Result<Vec<String>> {
    Ok(read_jsonl::<PromptRecord>(path)?
        .into_iter()
        .map(|r| r.prompt)
        .collect())
}

/// Runs the demo into `out` (created) and writes `out/report.md` as it goes.
pub fn run(
    cfg: &DemoConfig,
    out: &Path,
    device: Device,
    obs: &mut dyn Observer,
) -> Result<DemoSummary> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| ExperimentError::io("create", out, e))?;
    let mut rep = Report {
        path: out.join("report.md"),
        text: format!(
            "# rlhf demo\n\nRun folder: `{}`; seed {}; `rlhf demo` with every stage's artifact \
             in its own folder.\n\n",
            out.display(),
            cfg.seed
        ),
        t0: Instant::now(),
        stage: 0,
        stages: if cfg.pretrain_only { 3 } else { 9 },
        current: None,
        timings: Vec::new(),
    };

    // 1. Task world.
    let t = rep.stage(obs, "task world");
    let data = out.join("data");
    let world = write_world(
        &data,
        &WorldConfig {
            seed: cfg.seed,
            prompts: cfg.prompts,
            ..Default::default()
        },
    )?;
    let mut s = format!("## 1. Task world ({:.1} s)\n\n", t.elapsed().as_secs_f64());
    for f in &world.files {
        let _ = writeln!(s, "- `data/{}`: {} records", f.name, f.records);
    }
    rep.add(&s)?;

    // 2. Pretraining, or the base checkpoint.
    let pretrained = match &cfg.base {
        Some(base) => {
            let t = rep.stage(obs, "base checkpoint");
            let pre = Pretrained::load(base, Head::Lm, device)?;
            let params = pre.model.num_params();
            obs.note(&format!("      {}: {params} params", base.display()));
            rep.add(&format!(
                "\n## 2. Base checkpoint ({:.0} s)\n\nNo pretraining: the pipeline starts from \
                 `{}` ({params} parameters, {} layers, hidden size {}, context {}). Learning \
                 rates: SFT {}, reward model {}, PPO {:e}; batches of {}; PPO {} iterations of \
                 {} rollouts.\n",
                t.elapsed().as_secs_f64(),
                base.display(),
                pre.model.cfg.num_layers,
                pre.model.cfg.hidden_size,
                pre.model.cfg.max_positions,
                lr_text(cfg.sft_lr),
                lr_text(cfg.rm_lr),
                cfg.ppo_lr,
                cfg.batch
                    .map_or("the library's".to_string(), |b| b.to_string()),
                cfg.ppo_iterations,
                cfg.ppo_rollouts
            ))?;
            base.clone()
        }
        None => {
            let t = rep.stage(
                obs,
                &format!(
                    "pretraining a {:?} model ({} steps)",
                    cfg.preset, cfg.pretrain_steps
                ),
            );
            let pretrained = out.join("pretrained");
            let ps = pretrain_stage(
                &data,
                &pretrained,
                cfg.preset,
                cfg.pretrain_steps,
                cfg.seed,
                device,
            )?;
            obs.note(&format!(
                "      {} params, held-out loss {:.3} -> {:.3}",
                ps.params, ps.eval_loss_start, ps.eval_loss_end
            ));
            rep.add(&format!(
            "\n## 2. Pretraining ({:.0} s)\n\n{:?} preset, {} parameters, {} steps; held-out LM loss \
             {:.3} -> {:.3}. `pretrained/`\n",
            t.elapsed().as_secs_f64(),
            cfg.preset,
            ps.params,
            ps.steps,
            ps.eval_loss_start,
            ps.eval_loss_end
        ))?;
            pretrained
        }
    };
    let eval_file = data.join(if cfg.dev { "dev.jsonl" } else { "eval.jsonl" });
    let eval_prompts: Vec<String> = read_jsonl::<EvalRecord>(&eval_file)?
        .into_iter()
        .map(|r| r.prompt)
        .take(cfg.eval_prompts.unwrap_or(usize::MAX))
        .collect();
    if cfg.pretrain_only {
        let t = rep.stage(obs, "answering held-out prompts");
        let pre = Pretrained::load(&pretrained, Head::Lm, device)?;
        let answers = rlhf_eval::sample_answers(&pre, &eval_prompts, 8)?;
        let mut s = format!("\n## Samples ({:.0} s)\n\n", t.elapsed().as_secs_f64());
        for (prompt, answer, score) in &answers {
            obs.note(&format!("\n  > {prompt}\n  {answer}   [oracle {score:.2}]"));
            let _ = writeln!(s, "- **{prompt}**\n  {answer} `[{score:.2}]`");
        }
        rep.add(&s)?;
        let seconds = rep.finish(obs)?;
        return Ok(DemoSummary {
            out: out.to_path_buf(),
            comparisons: vec![],
            agreement: Agreement::default(),
            rm_accuracy_labels: None,
            rm_accuracy_oracle: None,
            corpus_nll: vec![],
            win_rate_curves: vec![],
            stage_seconds: std::mem::take(&mut rep.timings),
            seconds,
        });
    }

    // 3. SFT, then greedy answers of both models to every held-out prompt.
    let t = rep.stage(
        obs,
        &format!("supervised fine-tuning ({} steps)", cfg.sft_steps),
    );
    let sft = out.join("sft");
    let recipe = |lr| (lr, cfg.batch);
    let ss = sft_stage_with(
        &pretrained,
        &data,
        &sft,
        cfg.sft_steps,
        cfg.seed,
        recipe(cfg.sft_lr),
        device,
    )?;
    rep.add(&format!(
        "\n## 3. SFT ({:.0} s)\n\n{} demonstrations (25% flawed on purpose), {} steps; held-out \
         loss {:.3} -> {:.3}. `sft/`\n",
        t.elapsed().as_secs_f64(),
        ss.train_examples,
        ss.steps,
        ss.eval_loss_start,
        ss.eval_loss_end
    ))?;
    let base_pre = Pretrained::load(&pretrained, Head::Lm, device)?;
    let sft_pre = Pretrained::load(&sft, Head::Lm, device)?;
    let base = rlhf_eval::greedy_task_score(&base_pre, &eval_prompts, PromptFormat::Raw, 64)?;
    let base_chat = rlhf_eval::greedy_task_score(&base_pre, &eval_prompts, PromptFormat::Chat, 64)?;
    let tuned = rlhf_eval::greedy_task_score(&sft_pre, &eval_prompts, PromptFormat::Chat, 64)?;
    drop(base_pre);
    obs.note(&format!(
        "      held-out oracle score {:.3} / {:.3} -> {:.3}, accuracy {:.1}% / {:.1}% -> {:.1}% \
         (pretrained in chat / corpus format -> SFT)",
        base_chat.score,
        base.score,
        tuned.score,
        100.0 * base_chat.accuracy,
        100.0 * base.accuracy,
        100.0 * tuned.accuracy
    ));
    rep.add(&format!(
        "\nGreedy answers to all {} held-out prompts, scored by the oracle. Asked as an assistant \
         (the chat template), SFT is far ahead; the pretrained model prompted in its own corpus \
         format, whose solutions are all clean, can beat SFT, whose demonstrations are a quarter \
         flawed:\n\n{}",
        tuned.prompts,
        md_table(
            &[
                "model (prompt format)",
                "mean oracle score",
                "accuracy (correct answers)"
            ],
            &[
                score_row("pretrained (chat template)", &base_chat),
                score_row("pretrained (corpus format)", &base),
                score_row("SFT (chat template)", &tuned),
            ],
        )
    ))?;

    // 4. Sample K responses per prompt, 5. rank them with simulated labelers.
    let t = rep.stage(obs, &format!("sampling K = {} responses per prompt", cfg.k));
    let prompts = prompts_of(&data.join("prompts.jsonl"))?;
    let (rankings_path, labeled, panel) =
        label_stage(&sft_pre, &prompts, cfg.k, cfg.seed, out, obs)?;
    rep.add(&format!(
        "\n## 4. Samples and rankings ({:.0} s)\n\nK = {} responses per prompt from the SFT \
         model at temperature 1, ranked by {} simulated labelers (the oracle's rubric + Bradley–Terry \
         noise, τ = {}, calibrated to 73% inter-labeler agreement on another seed's SFT samples). \
         Measured on these samples (every prompt ranked a second time by another labeler): {}; InstructGPT's \
         labelers agreed on 72.6 ± 1.5%. `samples.jsonl`, `rankings.jsonl`, `agreement.json`\n",
        t.elapsed().as_secs_f64(),
        cfg.k,
        panel.len(),
        rlhf_data::CALIBRATED_TAU,
        labeled.agreement.summary()
    ))?;

    // 6. Reward model.
    let t = rep.stage(obs, "reward model");
    let rm = out.join("rm");
    let rs = reward_stage_with(
        &sft,
        &rankings_path,
        &rm,
        cfg.seed,
        recipe(cfg.rm_lr),
        device,
    )?;
    let oracle_acc = rs
        .eval_accuracy_end
        .oracle
        .map_or("n/a".into(), |o| format!("{:.1}%", 100.0 * o));
    obs.note(&format!(
        "      held-out pairwise accuracy {:.1}% (labels), {oracle_acc} (noise-free oracle)",
        100.0 * rs.eval_accuracy_end.labels
    ));
    rep.add(&format!(
        "\n## 5. Reward model ({:.0} s)\n\n{} train / {} held-out prompts, 1 epoch, each \
         prompt's C(K,2) pairs in one batch element. Held-out pairwise accuracy: {:.1}% against \
         the noisy labels ({} pairs), {oracle_acc} against the noise-free oracle ({} pairs). \
         Rewards centred on the SFT samples (std {:.3}). `rm/`\n",
        t.elapsed().as_secs_f64(),
        rs.train_prompts,
        rs.eval_prompts,
        100.0 * rs.eval_accuracy_end.labels,
        rs.eval_accuracy_end.label_pairs,
        rs.eval_accuracy_end.oracle_pairs,
        rs.reward_std
    ))?;

    // 7. PPO and PPO-ptx.
    let mut runs = Vec::new();
    for (name, ptx) in [("ppo", 0.0), ("ppo-ptx", cfg.ptx_coef)] {
        let t = rep.stage(obs, &format!("{name} ({} iterations)", cfg.ppo_iterations));
        let pcfg = PpoConfig {
            iterations: cfg.ppo_iterations,
            ptx_coef: ptx,
            seed: cfg.seed,
            // Chosen on the dev split (README): β = 0.1 rather than the library's 0.02, which
            // let PPO over-optimise this small reward model.
            lr: cfg.ppo_lr,
            ppo_epochs: cfg.ppo_epochs,
            kl_coef: cfg.kl_coef,
            ptx_batch: 4,
            rollout_batch: cfg.ppo_rollouts,
            // Two in-loop evaluations (halfway and at the end) keep the curve and the time.
            eval_every: (cfg.ppo_iterations / 2).max(1),
            eval_prompts: cfg.eval_prompts.unwrap_or(64).min(64),
            checkpoint_every: 0,
            ..Default::default()
        };
        let inputs = PpoInputs {
            policy: sft.clone(),
            reward: rlhf_train::PpoReward::Model(rm.clone()),
            prompts: data.join("prompts.jsonl"),
            eval_prompts: Some(eval_file.clone()),
            ptx_data: (ptx > 0.0).then(|| data.join("corpus.txt")),
            out: out.join(name),
            gold: Some(Box::new(Oracle)),
            rollout_engine: None,
        };
        let summary = rlhf_train::ppo(&inputs, &pcfg, Resume::No, device, true)?;
        runs.push((name, summary.log, t.elapsed().as_secs_f64()));
    }
    let mut s = String::from("\n## 6. PPO and PPO-ptx\n\n");
    s.push_str(&ppo_table(&runs));
    s.push_str(&ppo_plots(out, &runs)?);
    rep.add(&s)?;

    // 8. Evaluation against SFT.
    let t = rep.stage(obs, "evaluation against SFT on held-out prompts");
    let mut s = format!(
        "\n## 7. Evaluation on held-out prompts (oracle judge)\n\n{} sample(s) of each model \
         per prompt at temperature 1; the win rate counts ties as half, its 95% interval \
         resamples prompts.\n\n",
        cfg.eval_samples
    );
    let compare = CompareConfig {
        seed: cfg.seed,
        samples: cfg.eval_samples,
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut comparisons = Vec::new();
    for (name, _, _) in &runs {
        let inputs = EvalInputs {
            model: out.join(name),
            baseline: sft.clone(),
            prompts: eval_file.clone(),
            judge: JudgeSpec::Oracle,
            limit: cfg.eval_prompts,
        };
        let e = rlhf_eval::evaluate(&inputs, &compare, device, obs)?;
        obs.note(&rlhf_eval::summary_text(&e));
        rlhf_eval::write_evaluation(&out.join(format!("eval-{name}")), &e)?;
        let c = &e.comparison;
        let ci = |x: Option<&rlhf_report::Interval>| x.map_or("–".into(), |x| fmt_interval(x, 3));
        rows.push(vec![
            format!("{name} vs SFT"),
            fmt_interval(&c.win_rate, 3),
            ci(c.score_a.as_ref()),
            ci(c.score_b.as_ref()),
            c.kl.map_or("–".into(), |k| format!("{:.2}", k.mean)),
        ]);
        comparisons.push((name.to_string(), e.comparison));
    }
    s.push_str(&md_table(
        &[
            "comparison",
            "oracle win rate [95% CI]",
            "oracle score",
            "SFT oracle score",
            "KL to SFT (nats)",
        ],
        &rows,
    ));
    // The alignment tax: held-out pretraining-corpus NLL.
    let held = held_out_corpus(&data, if cfg.base.is_some() { 64 } else { 300 })?;
    let mut nll_rows = Vec::new();
    let mut corpus_nll = Vec::new();
    for (name, dir) in [
        (
            if cfg.base.is_some() {
                "base"
            } else {
                "pretrained"
            },
            &pretrained,
        ),
        ("SFT", &sft),
        ("PPO", &out.join("ppo")),
        ("PPO-ptx", &out.join("ppo-ptx")),
    ] {
        let pre = Pretrained::load(dir, Head::Lm, device)?;
        let nll = rlhf_eval::corpus_nll(&pre, &held, 16)?;
        nll_rows.push(vec![name.to_string(), format!("{nll:.4}")]);
        corpus_nll.push((name.to_string(), nll));
    }
    s.push_str(&format!(
        "\nPretraining-corpus NLL (nats/token, the last {} corpus documents, held out from \
         pretraining): PPO-ptx should pay less \"alignment tax\" than PPO.\n\n",
        held.len()
    ));
    s.push_str(&md_table(&["model", "held-out corpus NLL"], &nll_rows));
    let _ = writeln!(s, "\n({:.0} s)", t.elapsed().as_secs_f64());
    rep.add(&s)?;

    // 9. Best-of-n against the reward model.
    let t = rep.stage(obs, &format!("best-of-n (n up to {})", cfg.best_of));
    let mut proxy = RewardModel::load(&rm, device)?;
    // One prompt's samples per forward pass.
    proxy.rows = cfg.best_of;
    let bo_prompts: Vec<String> = eval_prompts
        .iter()
        .take(cfg.best_of_prompts)
        .cloned()
        .collect();
    let bo_cfg = BestOfNConfig {
        n_max: cfg.best_of,
        temperature: 1.0,
        max_new_tokens: 64,
        seed: cfg.seed,
        rows: 256,
    };
    let curve = rlhf_eval::best_of_n(&sft_pre, &proxy, &Oracle, &bo_prompts, &bo_cfg)?;
    curve
        .chart(
            "Best-of-n by the reward model (SFT samples)",
            "RM score (proxy)",
            "oracle score (gold)",
        )
        .save(&out.join("best_of_n"))?;
    let table: Vec<Vec<String>> = curve
        .points
        .iter()
        .map(|p| {
            vec![
                p.n.to_string(),
                format!("{:.3}", p.proxy),
                format!("{:.3}", p.gold),
            ]
        })
        .collect();
    rep.add(&format!(
        "\n## 8. Best-of-n against the reward model\n\n{} held-out prompts × {} SFT samples; \
         for each n the RM picks its favourite of n (disjoint groups, averaged).\n\n{}\n\
         ![best-of-n](best_of_n.svg)\n\n({:.0} s)\n",
        curve.prompts,
        curve.n_max,
        md_table(&["n", "RM score", "oracle score"], &table),
        t.elapsed().as_secs_f64()
    ))?;
    let seconds = rep.finish(obs)?;
    let win_rate_curves = runs
        .iter()
        .map(|(name, log, _)| {
            let points = log
                .iter()
                .filter_map(|m| Some((*m.get("eval/iteration")?, *m.get("eval/oracle_win_rate")?)))
                .collect();
            (name.to_string(), points)
        })
        .collect();
    Ok(DemoSummary {
        out: out.to_path_buf(),
        comparisons,
        agreement: labeled.agreement,
        rm_accuracy_labels: Some(rs.eval_accuracy_end.labels),
        rm_accuracy_oracle: rs.eval_accuracy_end.oracle,
        corpus_nll,
        win_rate_curves,
        stage_seconds: std::mem::take(&mut rep.timings),
        seconds,
    })
}

/// A learning rate for the report (`None`: the library's).
fn lr_text(lr: Option<f64>) -> String {
    lr.map_or("the library's".into(), |v| format!("{v:e}"))
}

/// Pretrains a `preset` model on the world in `data` for `steps` steps into `out` (stage 2 of
/// the demo and of `rlhf experiment align`).
pub(crate) fn pretrain_stage(
    data: &Path,
    out: &Path,
    preset: Preset,
    steps: u64,
    seed: u64,
    device: Device,
) -> Result<rlhf_train::PretrainSummary> {
    let mut pcfg = PretrainConfig {
        preset,
        ..Default::default()
    };
    pcfg.trainer.max_steps = steps;
    pcfg.trainer.seed = seed;
    pcfg.trainer.checkpoint_every = 0;
    Ok(rlhf_train::pretrain(
        data,
        out,
        &pcfg,
        Resume::No,
        device,
        true,
    )?)
}

/// The stages align and verifiable share: the task world of `seed` (with `prompts` RL prompts) in
/// `out/data`, a `preset` model pretrained on it for `pretrain_steps` in `out/pretrained`, then
/// SFT for `sft_steps` in `out/sft`. `note` is told when pretraining and SFT start.
#[allow(clippy::too_many_arguments)]
pub(crate) fn world_pretrain_sft(
    out: &Path,
    seed: u64,
    prompts: usize,
    preset: Preset,
    pretrain_steps: u64,
    sft_steps: u64,
    device: Device,
    mut note: impl FnMut(&str),
) -> Result<rlhf_train::PretrainSummary> {
    let data = out.join("data");
    write_world(
        &data,
        &WorldConfig {
            seed,
            prompts,
            ..Default::default()
        },
    )?;
    note("pretraining");
    let pretrained = out.join("pretrained");
    let summary = pretrain_stage(&data, &pretrained, preset, pretrain_steps, seed, device)?;
    note("SFT");
    sft_stage(
        &pretrained,
        &data,
        &out.join("sft"),
        sft_steps,
        seed,
        device,
    )?;
    Ok(summary)
}

/// SFT of `pretrained` on the world's `sft.jsonl` for `steps` steps into `out`.
pub(crate) fn sft_stage(
    pretrained: &Path,
    data: &Path,
    out: &Path,
    steps: u64,
    seed: u64,
    device: Device,
) -> Result<rlhf_train::SftSummary> {
    sft_stage_with(pretrained, data, out, steps, seed, (None, None), device)
}

/// [`sft_stage`] with another learning rate and batch size (`None`: the library's).
pub(crate) fn sft_stage_with(
    pretrained: &Path,
    data: &Path,
    out: &Path,
    steps: u64,
    seed: u64,
    (lr, batch): (Option<f64>, Option<usize>),
    device: Device,
) -> Result<rlhf_train::SftSummary> {
    let mut sft_cfg = SftConfig::default();
    sft_cfg.trainer.max_steps = steps;
    sft_cfg.trainer.seed = seed;
    if let Some(lr) = lr {
        sft_cfg.trainer.lr = lr;
        // A trained model needs no warm-up longer than the run.
        sft_cfg.trainer.warmup_steps = sft_cfg.trainer.warmup_steps.min(steps / 10);
    }
    if let Some(b) = batch {
        sft_cfg.trainer.batch_size = b;
    }
    Ok(rlhf_train::sft(
        pretrained,
        &data.join("sft.jsonl"),
        out,
        &sft_cfg,
        Resume::No,
        device,
    )?)
}

/// K responses per prompt from `sft` at temperature 1, ranked by the simulated labelers (every
/// prompt ranked a second time by another labeler, only to measure agreement; the rankings
/// keep the first labeler's): writes `out/samples.jsonl`, `out/rankings.jsonl` and
/// `out/agreement.json`, and returns the rankings' path, the labels and the panel.
pub(crate) fn label_stage(
    sft: &Pretrained,
    prompts: &[String],
    k: usize,
    seed: u64,
    out: &Path,
    obs: &mut dyn Observer,
) -> Result<(PathBuf, rlhf_data::Labeled, LabelerPanel)> {
    let sample_cfg = SampleConfig {
        k,
        max_new_tokens: 64,
        sampling: Sampling::new(1.0, None, None)?,
        seed,
        format: PromptFormat::Chat,
        rows: 128,
    };
    obs.phase("sampling", (prompts.len() * k) as u64);
    let sampled = sample_responses(sft, prompts, &sample_cfg, |d, _| obs.advance(d as u64))?;
    for p in &sampled.skipped {
        obs.note(&format!(
            "warning: skipped (fewer than 2 non-empty responses): {p}"
        ));
    }
    write_jsonl(out.join("samples.jsonl"), &sampled.records)?;
    let panel = LabelerPanel::new(4, seed, &LabelerConfig::default())?;
    let labeled = panel.rank_samples(sampled.records, 1.0)?;
    let rankings = out.join("rankings.jsonl");
    write_jsonl(&rankings, &labeled.rankings)?;
    write_text(
        out.join("agreement.json"),
        &serde_json::to_string_pretty(&labeled.agreement)?,
    )?;
    obs.note(&labeled.agreement.summary());
    Ok((rankings, labeled, panel))
}

/// The reward model: `sft` trained on `rankings` into `out`, the library's recipe.
pub(crate) fn reward_stage(
    sft: &Path,
    rankings: &Path,
    out: &Path,
    seed: u64,
    device: Device,
) -> Result<rlhf_train::RewardSummary> {
    reward_stage_with(sft, rankings, out, seed, (None, None), device)
}

/// [`reward_stage`] with another learning rate and batch size (`None`: the library's).
pub(crate) fn reward_stage_with(
    sft: &Path,
    rankings: &Path,
    out: &Path,
    seed: u64,
    (lr, batch): (Option<f64>, Option<usize>),
    device: Device,
) -> Result<rlhf_train::RewardSummary> {
    let mut rm_cfg = RewardConfig::default();
    rm_cfg.trainer.seed = seed;
    if let Some(lr) = lr {
        rm_cfg.trainer.lr = lr;
        rm_cfg.trainer.warmup_steps = 0;
    }
    if let Some(b) = batch {
        rm_cfg.trainer.batch_size = b;
    }
    Ok(rlhf_train::reward(
        sft,
        rankings,
        out,
        &rm_cfg,
        Resume::No,
        device,
    )?)
}

/// The last `n` documents of the world's corpus.txt (the held-out end of the pretraining stream).
pub(crate) fn held_out_corpus(data: &Path, n: usize) -> Result<Vec<String>> {
    let docs = rlhf_data::read_documents(data.join("corpus.txt"))?;
    Ok(docs[docs.len().saturating_sub(n)..].to_vec())
}

/// First → last iteration of the rollout metrics, one row per PPO run.
fn ppo_table(runs: &[(&str, Vec<Metrics>, f64)]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(name, log, secs)| {
            let (a, b) = (log.first(), log.last());
            let g = |m: Option<&Metrics>, k: &str| {
                m.and_then(|m| m.get(k))
                    .map_or("–".into(), |v| format!("{v:.3}"))
            };
            vec![
                name.to_string(),
                format!("{}", log.len()),
                format!("{secs:.0}"),
                format!("{} → {}", g(a, "rm_score"), g(b, "rm_score")),
                format!("{} → {}", g(a, "oracle_score"), g(b, "oracle_score")),
                g(b, "kl"),
                g(b, "response_len"),
            ]
        })
        .collect();
    md_table(
        &[
            "run",
            "iterations",
            "seconds",
            "RM score (rollouts)",
            "oracle score (rollouts)",
            "final KL (nats)",
            "final length",
        ],
        &rows,
    )
}

/// Reward, oracle score, KL and win rate against PPO iteration; oracle vs RM as KL grows.
fn ppo_plots(out: &Path, runs: &[(&str, Vec<Metrics>, f64)]) -> Result<String> {
    let series = |key: &str, x_key: &str| -> Vec<Series> {
        runs.iter()
            .map(|(name, log, _)| Series {
                name: format!("{name} {key}"),
                points: log
                    .iter()
                    .filter_map(|m| Some((*m.get(x_key)?, *m.get(key)?)))
                    .collect(),
                band: None,
            })
            .collect()
    };
    let both = |a: &str, b: &str, x: &str| {
        let mut v = series(a, x);
        v.extend(series(b, x));
        v
    };
    let mut s = String::from("\n");
    let charts = [
        (
            "ppo_reward",
            "Rollout rewards",
            "iteration",
            "score",
            both("rm_score", "oracle_score", "iteration"),
        ),
        (
            "ppo_kl",
            "KL to the SFT policy",
            "iteration",
            "KL (nats per response)",
            series("kl", "iteration"),
        ),
        (
            "ppo_win_rate",
            "Held-out oracle win rate vs SFT (64 prompts)",
            "iteration",
            "win rate",
            both("eval/oracle_win_rate", "eval/rm_win_rate", "eval/iteration"),
        ),
        (
            "ppo_overoptimisation",
            "Gold (oracle) vs proxy (RM) reward as KL grows",
            "KL (nats)",
            "score",
            both("rm_score", "oracle_score", "kl"),
        ),
    ];
    for (stem, title, x, y, series) in charts {
        let chart = LineChart {
            title: title.into(),
            x_label: x.into(),
            y_label: y.into(),
            series,
            ..Default::default()
        };
        chart.save(&out.join(stem))?;
        let _ = writeln!(s, "![{title}]({stem}.svg)\n");
    }
    Ok(s)
}
