//! GRPO (Shao et al., 2024) and RLOO (Ahmadian et al., 2024): policy-gradient RL without a
//! value model. Each prompt is answered G times; a response's advantage is its reward against
//! the others of its group — GRPO: `(r − mean) / (std + 1e-4)` (or `r − mean` without the std
//! division, as Dr. GRPO argues), RLOO: `r − mean of the other G − 1` — and is given to every
//! token of the response. The loss is PPO's clipped surrogate on the sampled tokens, with the KL
//! to the reference either as a loss term (the k3 estimator, GRPO's) or as a penalty on the
//! reward (β Σ k1 per response, RLOO's); aggregated per sequence (each response's token mean,
//! then the mean over responses: GRPO's paper) or per token (every token of the batch weighs
//! the same: DAPO's).
//!
//! Rewards come from any [`Scorer`]: a reward model, the task world's oracle, or a verifiable
//! answer check ([`AnswerMatch`]).
//!
//! Shapes: B·G rows (a prompt's G responses contiguous), R longest response.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rlhf_data::{JsonlRecord, RecordError, read_jsonl_lines};
use rlhf_eval::Scorer;
use rlhf_model::dist::Group;
use rlhf_model::sample::{Finish, Generation, generate};
use rlhf_model::score::response_logprobs;
use rlhf_model::{GenerateConfig, Gpt, Head, LoraConfig, Pretrained, ResponseBatch, Sampling};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{DataRng, Epochs, Shard};
use crate::engine::RolloutEngine;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, ClippedGradients, clip_grad_norm};
use crate::parallel;
use crate::rl::{self, KlEstimator};
use crate::run::{self, Resume, RunDir, RunOptions};
use crate::step::Metrics;

/// Which baseline the advantages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// The group's mean (and std).
    #[default]
    Grpo,
    /// The mean of the other responses of the group.
    Rloo,
}

/// Where the KL to the reference goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlMode {
    /// β × the k3 estimate per token, added to the loss (GRPO).
    #[default]
    Loss,
    /// β × the summed k1 estimate, subtracted from each response's reward (RLOO, PPO).
    Reward,
}

/// How per-token losses become the batch's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Each response's token mean, then the mean over responses (GRPO's paper): every response
    /// weighs the same, so a long one's tokens weigh less.
    #[default]
    Sequence,
    /// The mean over every token of the batch (DAPO): every token weighs the same.
    Token,
}

/// `rlhf grpo`'s configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// `grpo` or `rloo`.
    pub algo: Algo,
    /// Iterations (sample, then update). 100.
    pub iterations: u64,
    /// Prompts per iteration; each is answered `group` times. 8.
    pub prompts_per_iteration: usize,
    /// G, responses per prompt. 8.
    pub group: usize,
    /// Passes over each iteration's samples (μ). 1: the ratio stays 1, a plain policy gradient.
    pub epochs: usize,
    /// Minibatches per pass. 2.
    pub minibatches: usize,
    /// Adam's learning rate. 5e-5 (chosen on the task world's dev seed: 2e-5 barely moved).
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Global gradient-norm clip. 1.0.
    pub grad_clip: f64,
    /// PPO's ratio clip ε. 0.2.
    pub clip: f64,
    /// β of the KL to the reference. 0.04, GRPO's paper (0 drops the reference pass).
    pub beta: f64,
    /// `loss` (k3 per token, GRPO) or `reward` (summed k1 off the reward, RLOO).
    pub kl_mode: KlMode,
    /// GRPO: divide by the group's std. true (the paper); false is Dr. GRPO's unbiased form.
    pub scale_rewards: bool,
    /// `sequence` (GRPO's paper) or `token` (DAPO).
    pub aggregation: Aggregation,
    /// Sampling temperature. 1.0.
    pub temperature: f64,
    /// Longest response. 64.
    pub max_new_tokens: usize,
    /// Seeds prompt order, sampling and fresh adapters. 0.
    pub seed: u64,
    /// Checkpoint every N iterations (and at the end); 0 only at the end. 20.
    pub checkpoint_every: u64,
    /// Checkpoints kept; 0 keeps all. 2.
    pub keep_checkpoints: usize,
    /// LoRA (`--lora`): the reference is the base with the adapter off.
    pub lora: LoraConfig,
    /// With `--rollout-engine`: how many updates the served policy may lag the trained one. 0.
    pub rollout_staleness: u64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            algo: Algo::Grpo,
            iterations: 100,
            prompts_per_iteration: 8,
            group: 8,
            epochs: 1,
            minibatches: 2,
            lr: 5e-5,
            betas: [0.9, 0.95],
            eps: 1e-8,
            grad_clip: 1.0,
            clip: 0.2,
            beta: 0.04,
            kl_mode: KlMode::Loss,
            scale_rewards: true,
            aggregation: Aggregation::Sequence,
            temperature: 1.0,
            max_new_tokens: 64,
            seed: 0,
            checkpoint_every: 20,
            keep_checkpoints: 2,
            lora: LoraConfig::default(),
            rollout_staleness: 0,
        }
    }
}

impl GrpoConfig {
    /// Adam over `model`'s trainable parameters with these betas and eps, no weight decay.
    pub fn optimizer(&self, model: &Gpt) -> Result<AdamW> {
        AdamW::new(
            model.trainable_parameters(),
            AdamWConfig {
                betas: self.betas,
                eps: self.eps,
                weight_decay: 0.0,
            },
        )
    }

    /// Checks every value before a model is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("grpo config: {m}")));
        if self.iterations == 0 || self.prompts_per_iteration == 0 || self.epochs == 0 {
            return bad("iterations, prompts_per_iteration and epochs must be at least 1".into());
        }
        if self.group < 2 {
            return bad(format!(
                "group must be at least 2 (a response is judged against its group), got {}",
                self.group
            ));
        }
        let rows = self.prompts_per_iteration * self.group;
        if self.minibatches == 0 || rows % self.minibatches != 0 {
            return bad(format!(
                "minibatches ({}) must divide prompts_per_iteration × group ({rows})",
                self.minibatches
            ));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("clip", self.clip),
            ("temperature", self.temperature),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad(format!("beta must be ≥ 0, got {}", self.beta));
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        crate::adapter::validate(&self.lora)
    }
}

// ---------------------------------------------------------------------------------------------
// The maths.

/// GRPO's advantages: each reward against its group's mean, divided by the group's (unbiased)
/// std + 1e-4 when `scale`. `rewards` holds whole groups of `group`, contiguous. A group whose
/// rewards all tie gets 0 everywhere.
pub fn group_advantages(rewards: &[f64], group: usize, scale: bool) -> Result<Vec<f64>> {
    check_groups(rewards, group)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let mean = g.iter().sum::<f64>() / group as f64;
        let var = g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (group - 1) as f64;
        let div = if scale { var.sqrt() + 1e-4 } else { 1.0 };
        out.extend(g.iter().map(|r| (r - mean) / div));
    }
    Ok(out)
}

/// RLOO's advantages: each reward minus the mean of the other `group − 1` of its group.
pub fn rloo_advantages(rewards: &[f64], group: usize) -> Result<Vec<f64>> {
    check_groups(rewards, group)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let sum: f64 = g.iter().sum();
        out.extend(g.iter().map(|r| r - (sum - r) / (group - 1) as f64));
    }
    Ok(out)
}

fn check_groups(rewards: &[f64], group: usize) -> Result<()> {
    if group < 2 || rewards.len() % group != 0 {
        return Err(TrainError::Invalid(format!(
            "{} rewards do not form groups of {group} (at least 2)",
            rewards.len()
        )));
    }
    if let Some(r) = rewards.iter().find(|r| !r.is_finite()) {
        return Err(TrainError::Invalid(format!("a reward is {r}")));
    }
    Ok(())
}

/// The loss of one minibatch and its diagnostics.
#[derive(Debug)]
pub struct GrpoLoss {
    pub loss: Tensor,
    pub clip_fraction: f64,
    /// Mean k3 estimate per token (the KL term before β).
    pub kl: f64,
}

/// The clipped surrogate with per-response advantages `adv` (B,) on every token, plus β × k3
/// per token when `kl_in_loss`, aggregated per `agg`. `logp`, `old_logp`, `ref_logp`, `mask`:
/// (B, R); `old_logp`, `ref_logp` and `adv` are treated as constants.
#[allow(clippy::too_many_arguments)]
pub fn grpo_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    clip: f64,
    beta: f64,
    kl_in_loss: bool,
    agg: Aggregation,
) -> Result<GrpoLoss> {
    let ratio = (logp - old_logp.detach()).exp();
    let a = adv.detach().unsqueeze(1); // (B, 1)
    let unclipped = -(&a * &ratio);
    let clipped = -(&a * ratio.clamp(1.0 - clip, 1.0 + clip));
    let surrogate = unclipped.maximum(&clipped);
    let k3 = rl::kl_per_token(logp, &ref_logp.detach(), KlEstimator::K3)?;
    let per_token = if kl_in_loss && beta > 0.0 {
        surrogate + &k3 * beta
    } else {
        surrogate
    };
    let loss = match agg {
        Aggregation::Sequence => rl::masked_mean_dim(&per_token, mask, 1)?.mean(per_token.kind()),
        Aggregation::Token => rl::masked_mean(&per_token, mask)?,
    };
    let _g = tch::no_grad_guard();
    let clip_fraction = rl::masked_mean(&clipped.gt_tensor(&unclipped).to_kind(logp.kind()), mask)?
        .double_value(&[]);
    let kl = rl::masked_mean(&k3, mask)?.double_value(&[]);
    Ok(GrpoLoss {
        loss,
        clip_fraction,
        kl,
    })
}

// ---------------------------------------------------------------------------------------------
// Verifiable rewards.

/// `{"prompt", "answer"}`: a prompt with the answer a response must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRecord {
    pub prompt: String,
    pub answer: String,
}

impl JsonlRecord for AnswerRecord {
    fn from_json(value: &serde_json::Value) -> std::result::Result<Self, RecordError> {
        let f = rlhf_data::Fields::of(value)?;
        Ok(Self {
            prompt: f.string("prompt")?.to_string(),
            answer: f.nonempty_string("answer")?.to_string(),
        })
    }
}

/// A verifiable reward for `{"prompt", "answer"}` files: 1 when the response reaches the
/// reference answer, else 0. A numeric answer is compared with the response's final number
/// (`rlhf_data::extract_answer`: the number after the last "answer is", else the last integer);
/// any other answer with the text after the last "answer is" (else the response's last line),
/// blind to case, surrounding spaces and a final full stop.
#[derive(Debug, Clone, Default)]
pub struct AnswerMatch {
    answers: HashMap<String, String>,
}

impl AnswerMatch {
    pub fn new(records: &[AnswerRecord]) -> Self {
        Self {
            answers: records
                .iter()
                .map(|r| (r.prompt.clone(), r.answer.clone()))
                .collect(),
        }
    }
}

impl Scorer for AnswerMatch {
    fn key(&self) -> &str {
        "answer"
    }

    fn name(&self) -> &str {
        "answer match"
    }

    fn check(&self, prompts: &[String]) -> rlhf_eval::Result<()> {
        match prompts.iter().find(|p| !self.answers.contains_key(*p)) {
            Some(p) => Err(rlhf_eval::EvalError::Invalid(format!(
                "no reference answer for the prompt {p:?}"
            ))),
            None => Ok(()),
        }
    }

    fn score(&self, prompts: &[String], responses: &[String]) -> rlhf_eval::Result<Vec<f64>> {
        self.check(prompts)?;
        Ok(prompts
            .iter()
            .zip(responses)
            .map(|(p, r)| f64::from(u8::from(answer_reached(r, &self.answers[p]))))
            .collect())
    }
}

/// Whether `response` reaches `answer` (see [`AnswerMatch`]).
pub fn answer_reached(response: &str, answer: &str) -> bool {
    if let Ok(n) = answer.trim().trim_end_matches('.').parse::<i64>() {
        return rlhf_data::extract_answer(response) == Some(n);
    }
    // ASCII lowering keeps byte offsets, so the index is valid in `response`.
    let lower = response.to_ascii_lowercase();
    let tail = match lower.rfind("answer is") {
        Some(at) => &response[at + "answer is".len()..],
        None => response.trim().lines().last().unwrap_or(""),
    };
    rlhf_data::answer_matches(tail, answer)
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// The inputs of a GRPO run.
pub struct GrpoInputs {
    /// The initial policy (an SFT checkpoint); also the reference.
    pub policy: PathBuf,
    /// Training prompts: `{"prompt"}` (or `{"prompt", "answer"}`) JSONL.
    pub prompts: PathBuf,
    /// The reward.
    pub reward: Box<dyn Scorer>,
    /// Task-world prompts whose greedy word-problem accuracy is measured before and after.
    pub eval_prompts: Option<PathBuf>,
    pub out: PathBuf,
    /// Draw a progress bar on stderr (iterations, reward, KL, length).
    pub progress: bool,
    /// `openai:URL`: sample from this OpenAI-compatible server (`crate::engine`, as PPO's);
    /// needs a LoRA policy and one process.
    pub rollout_engine: Option<String>,
}

/// What a finished run reports (also `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct GrpoSummary {
    pub algo: Algo,
    pub iterations: u64,
    pub elapsed_s: f64,
    /// Mean reward of the first and the last iteration's samples.
    pub reward_first: f64,
    pub reward_last: f64,
    /// Greedy accuracy on the evaluation's word problems, before and after (when given).
    pub word_problem_accuracy: Option<(f64, f64)>,
    pub eval_word_problems: usize,
    pub out: PathBuf,
}

/// What a checkpoint keeps beyond the policy and the optimizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrpoState {
    reward_first: f64,
}

const STATE_FILE: &str = "grpo_state.json";

/// Trains with GRPO or RLOO; `out` becomes the policy's checkpoint (or adapter) directory, with
/// `metrics.jsonl` (one line per iteration), `checkpoints/` and `summary.json`. With
/// `Resume::Latest` the run continues from its latest checkpoint (the same configuration and
/// inputs), drawing the same samples it would have drawn.
pub fn grpo(
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    resume: Resume,
    device: Device,
) -> Result<GrpoSummary> {
    cfg.validate()?;
    let prompts = crate::ppo::read_prompts(&inputs.prompts)?;
    let texts: Vec<String> = prompts.iter().map(|(_, p)| p.clone()).collect();
    inputs
        .reward
        .check(&texts)
        .map_err(|e| TrainError::from(e).context(format!("{}", inputs.prompts.display())))?;
    if prompts.len() < cfg.prompts_per_iteration {
        return Err(TrainError::Invalid(format!(
            "{}: {} prompts are fewer than prompts_per_iteration = {}",
            inputs.prompts.display(),
            prompts.len(),
            cfg.prompts_per_iteration
        )));
    }
    let mut opts = RunOptions::stage(
        &inputs.out,
        "grpo",
        cfg,
        &[
            ("policy", inputs.policy.as_path()),
            ("prompts", inputs.prompts.as_path()),
        ],
        resume,
    )?;
    opts.inputs
        .push(crate::run::RunInput::reward(inputs.reward.as_ref())?);
    let run = RunDir::create(opts)?;
    let resume_point = run.resume_point()?;
    let mut engine = RolloutEngine::for_run(
        inputs.rollout_engine.as_deref(),
        cfg.lora.enabled,
        run.dir(),
    )?;
    let mut policy = Pretrained::load(&inputs.policy, Head::Lm, device)?;
    crate::adapter::prepare(&mut policy.model, &cfg.lora, &inputs.policy, cfg.seed)?;
    let reference = match (cfg.beta > 0.0, cfg.lora.enabled) {
        (false, _) => None,
        (true, true) => Some(policy.model.base_view()?),
        (true, false) => Some(Gpt::load(&inputs.policy, Head::Lm, device)?),
    };
    if let Some(r) = &reference {
        for (_, t) in r.vs.variables() {
            let _ = t.shallow_clone().set_requires_grad(false);
        }
    }
    let ids = crate::ppo::tokenize_prompts(&policy, &inputs.prompts, &prompts, cfg.max_new_tokens)?;
    let eval = match &inputs.eval_prompts {
        Some(path) => {
            let recs = crate::ppo::read_prompts(path)?;
            let wp: Vec<String> = recs
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| {
                    matches!(
                        rlhf_data::Task::parse(p),
                        Ok(rlhf_data::Task::Arithmetic(_))
                    )
                })
                .collect();
            if wp.is_empty() {
                return Err(TrainError::Invalid(format!(
                    "{}: no word problems to measure accuracy on",
                    path.display()
                )));
            }
            Some(wp)
        }
        None => None,
    };
    let accuracy = |pre: &Pretrained| -> Result<Option<f64>> {
        match &eval {
            Some(wp) => Ok(Some(
                rlhf_eval::greedy_task_score(pre, wp, rlhf_model::PromptFormat::Chat, 32)?.accuracy,
            )),
            None => Ok(None),
        }
    };
    let acc_before = accuracy(&policy)?;
    let mut opt = cfg.optimizer(&policy.model)?;
    opt.set_one_pass_clip(policy.model.compute() == rlhf_model::Compute::Bf16);
    // Under data parallelism each rank samples its slice of every iteration's prompts.
    let group = rlhf_model::dist::group();
    let writer = rlhf_model::dist::is_writer();
    let mut order = Epochs::new(ids.len(), cfg.prompts_per_iteration, cfg.seed, 9)
        .sharded(Shard::of_process())?;
    let steps_per_iteration = (cfg.epochs * cfg.minibatches) as u64;
    let (mut start, mut elapsed_before, mut first) = (0, 0.0, f64::NAN);
    if let Some(point) = &resume_point {
        let dir = &point.dir;
        crate::checkpoint::load_gpt(&policy.model, &dir.join("policy"))?;
        run::load_optimizer(&mut opt, dir, point.info.step * steps_per_iteration)?;
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io("read", &path, e))?;
        let state: GrpoState = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
        order.seek(&point.info.data_position);
        (start, elapsed_before, first) =
            (point.info.step, point.info.elapsed_s, state.reward_first);
    }
    parallel::start_from_rank0(&opt, group)?;
    let mut metrics_log = crate::callbacks::MetricsLog::new(run.dir());
    if writer {
        metrics_log.open(start)?;
    }
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::new(cfg.temperature, None, None)?,
        seed: None,
        eos_token_ids: policy.eos_ids(),
        pad_token_id: policy.pad_id(),
    };
    let t0 = Instant::now();
    // A resumed run that is already complete reports its checkpoint's last reward.
    let mut last = resume_point
        .as_ref()
        .and_then(|p| p.info.metrics.get("reward").copied())
        .unwrap_or(f64::NAN);
    let bar = (inputs.progress && writer).then(|| {
        let style = indicatif::ProgressStyle::with_template(
            "grpo {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let b = indicatif::ProgressBar::new(cfg.iterations).with_style(style);
        b.set_position(start);
        b.reset_eta();
        b
    });
    for it in start..cfg.iterations {
        let t_it = Instant::now();
        let idx = order.next_indices();
        let mut rows = Vec::with_capacity(idx.len() * cfg.group);
        let mut row_texts = Vec::with_capacity(rows.capacity());
        for &i in &idx {
            for _ in 0..cfg.group {
                rows.push(ids[i].clone());
                row_texts.push(texts[i].clone());
            }
        }
        let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(it);
        let seed = parallel::rank_seed(seed, rlhf_model::dist::rank());
        let mut served = Metrics::new();
        let samples = match engine.as_mut() {
            None => {
                let gen_cfg = GenerateConfig {
                    seed: Some(seed),
                    ..gen_cfg.clone()
                };
                let r = reference.as_ref();
                sample(
                    &policy,
                    r,
                    inputs.reward.as_ref(),
                    &rows,
                    &row_texts,
                    cfg,
                    &gen_cfg,
                )?
            }
            Some(engine) => {
                let t = Instant::now();
                // The policy after `it` iterations is version `it`.
                if engine.due(it, cfg.rollout_staleness) {
                    engine.hand_over(&policy.model, it)?;
                }
                let version = engine.version().unwrap_or(it);
                served.insert("rollout/served_version".into(), version as f64);
                served.insert("rollout/staleness".into(), (it - version.min(it)) as f64);
                let stop = *gen_cfg.eos_token_ids.first().ok_or_else(|| {
                    TrainError::Invalid("the policy has no stop token to end responses".into())
                })?;
                let unique: Vec<Vec<i64>> = idx.iter().map(|&i| ids[i].clone()).collect();
                let (temp, max) = (cfg.temperature, cfg.max_new_tokens);
                let gens = engine.generate(&unique, cfg.group, temp, max, stop, seed)?;
                let r = reference.as_ref();
                let reward = inputs.reward.as_ref();
                let mut s = score(&policy, r, reward, &rows, &row_texts, cfg, &gens)?;
                s.seconds = t.elapsed().as_secs_f64();
                s
            }
        };
        let mut m = update(
            &policy.model,
            reference.as_ref(),
            &mut opt,
            &samples,
            cfg,
            it,
            group,
        )?;
        m.extend(served);
        if let Some(group) = group {
            parallel::mean_over_ranks(&mut m, group, it + 1)?;
        }
        if it == 0 {
            first = m["reward"];
        }
        last = m["reward"];
        m.insert("iteration".into(), (it + 1) as f64);
        m.insert("step".into(), (it + 1) as f64);
        m.insert("time/iteration_s".into(), t_it.elapsed().as_secs_f64());
        if writer {
            metrics_log.append(&m)?;
        }
        if let Some(b) = &bar {
            b.set_position(it + 1);
            b.set_message(format!(
                "reward {:.3} kl {:.2} len {:.0}",
                m["reward"], m["kl"], m["response_len"]
            ));
        }
        let done = it + 1;
        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.iterations
        {
            let progress = run::Progress {
                step: done,
                tokens_seen: 0,
                elapsed_s: elapsed_before + t0.elapsed().as_secs_f64(),
                metrics: m.clone(),
                data_position: order.position(),
            };
            let state = GrpoState {
                reward_first: first,
            };
            let (opt, model) = (&opt, &policy.model);
            run.save_checkpoint(progress, cfg.keep_checkpoints, |tmp| {
                rlhf_model::checkpoint::save_tensors(
                    &opt.state(),
                    &tmp.join(crate::checkpoint::OPTIMIZER_FILE),
                )?;
                model.save(&tmp.join("policy"))?;
                let p = tmp.join(STATE_FILE);
                let json = serde_json::to_string(&state).expect("state serialises");
                std::fs::write(&p, json).map_err(|e| TrainError::io("write", &p, e))
            })?;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let elapsed_s = elapsed_before + t0.elapsed().as_secs_f64();
    let acc_after = accuracy(&policy)?;
    crate::checkpoint::export_with(&policy.model, None, &inputs.out, |dir| {
        Ok(policy.tokenizer.save(dir)?)
    })?;
    let s = GrpoSummary {
        algo: cfg.algo,
        iterations: cfg.iterations,
        elapsed_s,
        reward_first: first,
        reward_last: last,
        word_problem_accuracy: acc_before.zip(acc_after),
        eval_word_problems: eval.as_ref().map_or(0, Vec::len),
        out: inputs.out.clone(),
    };
    if writer {
        let path = inputs.out.join("summary.json");
        let json = serde_json::to_string_pretty(&s).expect("plain values serialise");
        std::fs::write(&path, json + "\n").map_err(|e| TrainError::io("write", &path, e))?;
    }
    Ok(s)
}

/// One iteration's samples: G responses per prompt with what the update needs about them.
pub struct Samples {
    /// Prompts + responses; rows are `rows` of the iteration (each prompt's G in a row).
    pub batch: ResponseBatch,
    /// Log-probs at sampling time (`None` when the update is on-policy, see [`sample`]) and
    /// under the reference (`None` without one), (B, R).
    pub old_logp: Option<Tensor>,
    pub ref_logp: Option<Tensor>,
    /// The reward of each response, whether it ended with a stop token, and its length.
    pub scores: Vec<f64>,
    pub ended: Vec<bool>,
    pub lens: Vec<f64>,
    /// Seconds spent sampling and scoring.
    pub seconds: f64,
}

impl Samples {
    /// Rows `idx` (whole groups, e.g. one rank's share of a data-parallel iteration).
    pub fn select(&self, idx: &[i64]) -> Samples {
        let device = self.batch.seqs.device();
        let rows = Tensor::from_slice(idx).to_device(device);
        let pick = |t: &Tensor| t.index_select(0, &rows);
        let at = |i: &i64| *i as usize;
        Samples {
            batch: self.batch.select(&rows),
            old_logp: self.old_logp.as_ref().map(pick),
            ref_logp: self.ref_logp.as_ref().map(pick),
            scores: idx.iter().map(|i| self.scores[at(i)]).collect(),
            ended: idx.iter().map(|i| self.ended[at(i)]).collect(),
            lens: idx.iter().map(|i| self.lens[at(i)]).collect(),
            seconds: self.seconds,
        }
    }
}

/// Whether an update over these samples is on-policy: one epoch of one minibatch, the KL in
/// the loss. Its old log-probs are then the update's own, detached, so their separate forward
/// pass is skipped (as TRL does when it takes one step per generation); a KL penalty on the
/// reward still needs them first.
fn on_policy(cfg: &GrpoConfig) -> bool {
    cfg.epochs == 1 && cfg.minibatches == 1 && cfg.kl_mode == KlMode::Loss
}

/// G samples per prompt from the policy, scored: `rows` holds each prompt's ids `group` times
/// in a row, `row_texts` the prompts' text for the reward.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    policy: &Pretrained,
    reference: Option<&Gpt>,
    reward: &dyn Scorer,
    rows: &[Vec<i64>],
    row_texts: &[String],
    cfg: &GrpoConfig,
    gen_cfg: &GenerateConfig,
) -> Result<Samples> {
    let t0 = Instant::now();
    let gens = generate(&policy.model, rows, gen_cfg, |_, _| false)?;
    let mut s = score(policy, reference, reward, rows, row_texts, cfg, &gens)?;
    s.seconds = t0.elapsed().as_secs_f64();
    Ok(s)
}

/// Scores generations (from the policy, or from an external engine): the rewards, and the old
/// and reference log-probs recomputed here.
pub fn score(
    policy: &Pretrained,
    reference: Option<&Gpt>,
    reward: &dyn Scorer,
    rows: &[Vec<i64>],
    row_texts: &[String],
    cfg: &GrpoConfig,
    gens: &[Generation],
) -> Result<Samples> {
    let t0 = Instant::now();
    let model = &policy.model;
    let device = model.device();
    let ended: Vec<bool> = gens
        .iter()
        .map(|g| matches!(g.finish, Finish::Eos))
        .collect();
    let responses: Vec<String> = gens
        .iter()
        .zip(&ended)
        .map(|(g, &e)| {
            let ids: Vec<u32> = g.token_ids[..g.token_ids.len() - usize::from(e)]
                .iter()
                .map(|&i| i as u32)
                .collect();
            policy.tokenizer.decode(&ids, true)
        })
        .collect::<rlhf_tokenizer::Result<_>>()?;
    let full: Vec<&[i64]> = gens.iter().map(|g| g.token_ids.as_slice()).collect();
    let batch = ResponseBatch::new(rows, &full, policy.pad_id(), device)?;
    let (old_logp, ref_logp) = tch::no_grad(|| -> Result<(Option<Tensor>, Option<Tensor>)> {
        let old = match on_policy(cfg) {
            true => None,
            false => Some(response_logprobs(model, &batch, cfg.temperature)?.0),
        };
        let r = match reference {
            Some(r) => Some(response_logprobs(r, &batch, cfg.temperature)?.0),
            None => None,
        };
        Ok((old, r))
    })?;
    let scores = reward.score(row_texts, &responses)?;
    Ok(Samples {
        batch,
        old_logp,
        ref_logp,
        scores,
        ended,
        lens: gens.iter().map(|g| g.token_ids.len() as f64).collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// One iteration: G samples per prompt, rewards, advantages, `epochs` passes of minibatches,
/// for the process's data-parallel group if it has one. Public for the benchmark
/// (`examples/bench_grpo.rs`); [`grpo`] is the loop around it.
#[allow(clippy::too_many_arguments)]
pub fn iteration(
    policy: &Pretrained,
    reference: Option<&Gpt>,
    opt: &mut AdamW,
    reward: &dyn Scorer,
    rows: &[Vec<i64>],
    row_texts: &[String],
    cfg: &GrpoConfig,
    gen_cfg: GenerateConfig,
    it: u64,
) -> Result<Metrics> {
    let s = sample(policy, reference, reward, rows, row_texts, cfg, &gen_cfg)?;
    update(
        &policy.model,
        reference,
        opt,
        &s,
        cfg,
        it,
        rlhf_model::dist::group(),
    )
}

/// Advantages from the samples' rewards, then `epochs` passes of minibatches.
///
/// With a data-parallel `group`, these samples are rows `rank·n .. (rank+1)·n` of the global
/// iteration's (whole groups, so the advantages stay local). Every rank draws the same
/// permutation of the global rows, so each minibatch is the one a single process would form; a
/// rank trains on its rows of it, its loss weighted by its share of the minibatch (of its
/// tokens under `Aggregation::Token`, of its responses under `Sequence`), and the gradients are
/// summed over the ranks: every update equals one process's. The metrics are this rank's.
pub fn update(
    model: &Gpt,
    reference: Option<&Gpt>,
    opt: &mut AdamW,
    s: &Samples,
    cfg: &GrpoConfig,
    it: u64,
    group: Option<&Group>,
) -> Result<Metrics> {
    let t0 = Instant::now();
    let device = model.device();
    let on_policy = on_policy(cfg);
    let (batch, old_logp, ref_logp, scores) = (&s.batch, &s.old_logp, &s.ref_logp, &s.scores);
    // Σ_t (log π − log π_ref) per sequence (0 without a reference).
    let kl_of = |logp: &Tensor, reference: Option<&Tensor>, mask: &Tensor| -> Result<Vec<f64>> {
        let diff = match reference {
            Some(r) => logp - r,
            None => logp.zeros_like(),
        };
        Ok(Vec::<f64>::try_from(
            rl::masked_sum_dim(&diff, mask, 1)?
                .to_kind(Kind::Double)
                .to_device(Device::Cpu),
        )?)
    };
    let mut kl_seq = match old_logp {
        Some(old) => kl_of(old, ref_logp.as_ref(), &batch.mask)?,
        None => Vec::new(),
    };
    let shaped: Vec<f64> = match cfg.kl_mode {
        KlMode::Reward => scores
            .iter()
            .zip(&kl_seq)
            .map(|(s, k)| s - cfg.beta * k)
            .collect(),
        KlMode::Loss => scores.clone(),
    };
    let adv = match cfg.algo {
        Algo::Grpo => group_advantages(&shaped, cfg.group, cfg.scale_rewards)?,
        Algo::Rloo => rloo_advantages(&shaped, cfg.group)?,
    };
    let adv = Tensor::from_slice(&adv)
        .to_kind(Kind::Float)
        .to_device(device);
    let n = batch.rows() as usize;
    let global = n * group.map_or(1, Group::world);
    let mb = global / cfg.minibatches;
    let tokens_per_row: Vec<f64> =
        Vec::<f64>::try_from(batch.mask.sum_dim_intlist(1, false, Kind::Double))?;
    let mut rng = DataRng::new(cfg.seed.wrapping_add(it), 13);
    let (mut steps, mut loss_sum, mut clip_sum, mut kl_sum, mut gn_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for _ in 0..cfg.epochs {
        let perm = rng.permutation(global);
        for chunk in perm.chunks(mb) {
            let (mine, share) = parallel::my_rows(chunk, n, group, |i| match cfg.aggregation {
                Aggregation::Token => tokens_per_row[i],
                Aggregation::Sequence => 1.0,
            })?;
            opt.zero_grad();
            let mut l = None;
            if !mine.is_empty() {
                let idx = Tensor::from_slice(&mine).to_device(device);
                let sub = batch.select(&idx);
                let pick = |t: &Tensor| t.index_select(0, &idx);
                let (logp, _) = response_logprobs(model, &sub, cfg.temperature)?;
                let old = match old_logp {
                    Some(o) => pick(o),
                    None => logp.detach(),
                };
                let refp = match ref_logp {
                    Some(r) => pick(r),
                    None => old.shallow_clone(),
                };
                if on_policy {
                    // The rows in this (only) minibatch's order: the mean KL does not mind.
                    kl_seq = kl_of(&old, ref_logp.as_ref().map(|_| &refp), &sub.mask)?;
                }
                let gl = grpo_loss(
                    &logp,
                    &old,
                    &refp,
                    &pick(&adv),
                    &sub.mask,
                    cfg.clip,
                    if reference.is_some() { cfg.beta } else { 0.0 },
                    cfg.kl_mode == KlMode::Loss,
                    cfg.aggregation,
                )?;
                let lv = gl.loss.double_value(&[]);
                if !lv.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: it + 1,
                        what: "the GRPO loss",
                        value: lv,
                        last_checkpoint: None,
                    });
                }
                if share == 1.0 {
                    gl.loss.backward();
                } else {
                    (&gl.loss * share).backward();
                }
                l = Some((lv, gl));
            }
            let grad = match group {
                None => opt.clipped_gradients(1.0, cfg.grad_clip)?,
                Some(group) => {
                    let mut grad = opt.gradients(1.0)?;
                    let what = format!("the gradient all-reduce of GRPO iteration {}", it + 1);
                    group.all_reduce_sum(&grad, &what)?;
                    let norm = clip_grad_norm(&mut grad, cfg.grad_clip)?;
                    ClippedGradients::clipped(grad, norm)
                }
            };
            let norm = grad.norm.double_value(&[]);
            opt.step_clipped(&grad, cfg.lr)?;
            if let Some((lv, gl)) = l {
                steps += 1.0;
                loss_sum += lv;
                clip_sum += gl.clip_fraction;
                kl_sum += gl.kl;
                gn_sum += norm;
            }
        }
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    let zero_std = scores
        .chunks(cfg.group)
        .filter(|g| g.iter().all(|r| *r == g[0]))
        .count() as f64
        / (n / cfg.group) as f64;
    Ok(Metrics::from([
        ("reward".to_string(), mean(scores)),
        ("reward_std".to_string(), {
            let m = mean(scores);
            (scores.iter().map(|s| (s - m).powi(2)).sum::<f64>() / n as f64).sqrt()
        }),
        ("frac_groups_tied".to_string(), zero_std),
        ("kl".to_string(), mean(&kl_seq)),
        ("loss".to_string(), loss_sum / steps),
        ("clip_fraction".to_string(), clip_sum / steps),
        ("kl_k3_per_token".to_string(), kl_sum / steps),
        ("grad_norm".to_string(), gn_sum / steps),
        ("response_len".to_string(), mean(&s.lens)),
        (
            "eos_rate".to_string(),
            s.ended.iter().filter(|&&e| e).count() as f64 / n as f64,
        ),
        ("time/sample_s".to_string(), s.seconds),
        ("time/update_s".to_string(), t0.elapsed().as_secs_f64()),
    ]))
}

/// The reward behind `--reward`: `oracle` (task-world prompts), `answer` (the prompts file's
/// `{"prompt", "answer"}`), or `rm:DIR` (a reward model).
pub fn reward_from_spec(spec: &str, prompts: &Path, device: Device) -> Result<Box<dyn Scorer>> {
    match spec {
        "oracle" => Ok(Box::new(rlhf_eval::Oracle)),
        "answer" => {
            let records: Vec<(usize, AnswerRecord)> = read_jsonl_lines(prompts)?;
            let records: Vec<AnswerRecord> = records.into_iter().map(|(_, r)| r).collect();
            Ok(Box::new(AnswerMatch::new(&records)))
        }
        s => match s.strip_prefix("rm:") {
            Some(dir) => Ok(Box::new(rlhf_eval::RewardModel::load(
                Path::new(dir),
                device,
            )?)),
            None => Err(TrainError::Config(format!(
                "--reward {s:?}: expected oracle, answer or rm:DIR"
            ))),
        },
    }
}
