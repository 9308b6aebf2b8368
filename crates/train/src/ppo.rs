//! PPO against a reward model (InstructGPT step 3), and PPO-ptx. Each iteration samples one
//! response per prompt for a batch of prompts (`rollout.rs`), turns the reward model's score at
//! EOS minus a per-token KL penalty to the frozen SFT reference into per-token rewards, computes
//! GAE advantages (whitened) and returns, then runs `ppo_epochs` passes of clipped policy and
//! value losses over shuffled minibatches; PPO-ptx adds `ptx_coef` × the LM loss on a corpus
//! batch to every minibatch. The value model starts from the reward model. The defaults follow
//! InstructGPT and "The N Implementation Details of RLHF with PPO" (Huang et al., 2024).
//!
//! Two levels: [`Ppo`] is the algorithm in memory (models in, one [`Ppo::step`] per iteration:
//! rollout, advantages, update); [`ppo`] runs it over paths and a run folder in named phases:
//! open the run (resume checks), load, resume, then per iteration rollout + update, evaluate,
//! checkpoint, and finally export.
//!
//! Not here: the maths (`rl.rs`), sampling and scoring (`rollout.rs`), the judges and the
//! comparison that the held-out evaluation produces (`rlhf-eval`), the run folder (`run.rs`).
//!
//! Shapes as in `rollout.rs`: B rollouts, M minibatch rows, R response tokens.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rlhf_data::{PromptRecord, read_jsonl_lines};
use rlhf_eval::{Comparison, RewardModel, Scorer, scored_verdicts, summarize};
use rlhf_model::score::response_scalars;
use rlhf_model::{Gpt, Head, Pretrained, PromptFormat, TextGenerateConfig, response_logprobs};
use rlhf_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, OPTIMIZER_FILE};
use crate::data::{DataRng, DataSource, Epochs, Shard};
use crate::engine::RolloutEngine;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, ClippedGradients, clip_grad_norm};
use crate::parallel;
use crate::pretrain::{CorpusWindows, lm_loss};
use crate::reward::RewardStats;
use crate::rl::{self, KlControl, KlEstimator};
use crate::rollout::{self, Models, Rollout, RolloutConfig};
use crate::run::{self, Resume, RunDir, RunOptions};
use crate::step::Metrics;
use rlhf_model::dist::Group;

/// `rlhf ppo`'s configuration (`--config FILE`, `--set key=value`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// PPO iterations (rollouts + update). 100.
    pub iterations: u64,
    /// Prompts (one response each) per iteration. 64.
    pub rollout_batch: usize,
    /// Minibatches per PPO epoch (rows per minibatch = rollout_batch / minibatches). 4.
    pub minibatches: usize,
    /// Passes over each rollout batch. 4: TRL's and InstructGPT's.
    pub ppo_epochs: u64,
    /// Adam learning rate of policy and value model, constant. 3e-5: tiny models need more than
    /// InstructGPT's 9.65e-6 (1.3B) to move within a few hundred updates.
    pub lr: f64,
    /// Adam betas and epsilon. (0.9, 0.95), 1e-8.
    pub betas: [f64; 2],
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables. 1.0.
    pub grad_clip: f64,
    /// Sampling temperature; log-probs are recomputed at the same temperature. 1.0.
    pub temperature: f64,
    /// Longest response. 64: twice a clean task-world answer.
    pub max_new_tokens: usize,
    /// β, the per-token KL penalty to the SFT reference. 0.02: InstructGPT.
    pub kl_coef: f64,
    /// Target KL (nats per response) of the adaptive controller (Ziegler et al. 2019); 0 keeps β
    /// fixed. 0.
    pub kl_target: f64,
    /// The controller's horizon in episodes. 10000.
    pub kl_horizon: f64,
    /// Estimator of the per-token KL in the reward: k1 (log ratio, InstructGPT), k2 or k3.
    pub kl_estimator: KlEstimator,
    /// GAE discount γ and λ. 1.0 and 0.95.
    pub gamma: f64,
    pub lambda: f64,
    /// Policy ratio clip ε. 0.2.
    pub clip: f64,
    /// Value clip. 0.2.
    pub value_clip: f64,
    /// Weight of the value loss. 0.1: TRL.
    pub vf_coef: f64,
    /// Whiten advantages per batch. true.
    pub whiten_advantages: bool,
    /// Subtracted from the normalised score of a response that hit `max_new_tokens` without EOS.
    /// 1.0: one standard deviation of the reward model's score.
    pub missing_eos_penalty: f64,
    /// PPO-ptx: weight γ of the pretraining LM loss mixed into every minibatch; 0 is plain PPO.
    pub ptx_coef: f64,
    /// PPO-ptx corpus rows per minibatch and their length. 8 × 128.
    pub ptx_batch: usize,
    pub ptx_seq_len: i64,
    /// Evaluate on held-out prompts every N iterations (and at the start and end); 0 never. 10.
    pub eval_every: u64,
    /// Held-out prompts per evaluation. 64.
    pub eval_prompts: usize,
    /// Checkpoint every N iterations (and at the end); 0 only at the end. 20.
    pub checkpoint_every: u64,
    /// Checkpoints kept. 2.
    pub keep_checkpoints: usize,
    /// Seeds prompt order, sampling, the ptx batches and fresh adapters. 0.
    pub seed: u64,
    /// LoRA (`--lora`; off by default): the policy trains an adapter and the reference is its
    /// base with the adapter off (no second copy); the value model trains its own adapter and
    /// head on the reward model's frozen body (shared with the reward model, no copy).
    pub lora: rlhf_model::LoraConfig,
    /// With `--rollout-engine`: how many updates the served policy may lag the trained one. 0
    /// hands every update to the server before the next rollout.
    pub rollout_staleness: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            iterations: 100,
            rollout_batch: 64,
            minibatches: 4,
            ppo_epochs: 4,
            lr: 3e-5,
            betas: [0.9, 0.95],
            eps: 1e-8,
            grad_clip: 1.0,
            temperature: 1.0,
            max_new_tokens: 64,
            kl_coef: 0.02,
            kl_target: 0.0,
            kl_horizon: 10000.0,
            kl_estimator: KlEstimator::K1,
            gamma: 1.0,
            lambda: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            whiten_advantages: true,
            missing_eos_penalty: 1.0,
            ptx_coef: 0.0,
            ptx_batch: 8,
            ptx_seq_len: 128,
            eval_every: 10,
            eval_prompts: 64,
            checkpoint_every: 20,
            keep_checkpoints: 2,
            seed: 0,
            lora: Default::default(),
            rollout_staleness: 0,
        }
    }
}

impl PpoConfig {
    /// Checks every value, before any model is loaded (the maths in `rl.rs` would refuse the
    /// same values, but only after minutes of loading and sampling).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(format!("ppo config: {m}")));
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if self.iterations == 0 {
            return bad("iterations must be at least 1");
        }
        if self.rollout_batch == 0 || self.minibatches == 0 || self.ppo_epochs == 0 {
            return bad("rollout_batch, minibatches and ppo_epochs must be at least 1");
        }
        if self.rollout_batch % self.minibatches != 0 {
            return bad("rollout_batch must be a multiple of minibatches");
        }
        if self.rollout_batch / self.minibatches < 2 {
            return bad("minibatches must hold at least 2 rows each (advantages are whitened)");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature must be > 0 (PPO samples)");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be positive");
        }
        if !(self.betas.iter().all(|&b| (0.0..1.0).contains(&b)) && self.eps > 0.0) {
            return bad("betas must lie in [0, 1) and eps must be > 0");
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad("grad_clip must be >= 0 (0 disables it)");
        }
        if !(self.kl_coef >= 0.0 && self.kl_target >= 0.0 && self.kl_coef.is_finite()) {
            return bad("kl_coef and kl_target must be >= 0");
        }
        if self.kl_target > 0.0 && !(self.kl_horizon > 0.0 && self.kl_horizon.is_finite()) {
            return bad("kl_horizon must be > 0 when kl_target is set");
        }
        if !unit(self.gamma) || !unit(self.lambda) {
            return bad("gamma and lambda must lie in [0, 1]");
        }
        if !(self.clip > 0.0 && self.clip.is_finite() && self.value_clip > 0.0) {
            return bad("clip and value_clip must be > 0");
        }
        if !(self.vf_coef >= 0.0 && self.vf_coef.is_finite()) {
            return bad("vf_coef must be >= 0");
        }
        if !(self.missing_eos_penalty >= 0.0 && self.missing_eos_penalty.is_finite()) {
            return bad("missing_eos_penalty must be >= 0");
        }
        if !(self.ptx_coef >= 0.0 && self.ptx_coef.is_finite()) {
            return bad("ptx_coef must be >= 0");
        }
        if self.ptx_coef > 0.0 && (self.ptx_batch == 0 || self.ptx_seq_len < 2) {
            return bad("ptx_batch must be at least 1 and ptx_seq_len at least 2");
        }
        if self.eval_every > 0 && self.eval_prompts == 0 {
            return bad("eval_prompts must be at least 1 when eval_every is set");
        }
        crate::adapter::validate(&self.lora)
    }
}

/// The inputs of a PPO run.
#[derive(Debug)]
pub struct PpoInputs {
    /// SFT checkpoint: the initial policy and the frozen reference.
    pub policy: PathBuf,
    /// The reward: a reward model (also the value model's initialisation) or a scorer.
    pub reward: PpoReward,
    /// Training prompts JSONL ({"prompt"}).
    pub prompts: PathBuf,
    /// Held-out prompts for the periodic evaluation against the SFT policy.
    pub eval_prompts: Option<PathBuf>,
    /// PPO-ptx corpus: text (documents separated by blank lines) or JSONL {"text"}.
    pub ptx_data: Option<PathBuf>,
    pub out: PathBuf,
    /// The gold judge of rollouts and held-out responses, besides the reward model (e.g. the
    /// task world's oracle, `rlhf_eval::Oracle`): logged as `<key>_score` and
    /// `eval/<key>_win_rate`. It must know every training and held-out prompt.
    pub gold: Option<Box<dyn Scorer>>,
    /// `openai:URL`: sample the rollouts from this OpenAI-compatible server instead of the
    /// policy here (`crate::engine`); needs a LoRA policy. Not part of the configuration, so a
    /// resume may point at a server restarted elsewhere.
    pub rollout_engine: Option<String>,
}

/// PPO's reward.
#[derive(Debug)]
pub enum PpoReward {
    /// A reward-model dir (from `rlhf reward`): the score at EOS, divided by its std on the SFT
    /// samples (`reward.json`); the value model starts from it.
    Model(PathBuf),
    /// Any scorer of the decoded text: a verifiable reward (`grpo::AnswerMatch`), the task
    /// world's oracle. Its raw score is the reward (no scaling); the value model starts from the
    /// policy's body with a fresh scalar head, as in TRL when the reward is a function.
    Scorer(Box<dyn Scorer>),
}

impl PpoReward {
    /// `oracle`, `answer` (the prompts file's answers) or `rm:DIR` as in `rlhf grpo`, or a
    /// reward-model dir.
    pub fn from_spec(spec: &str, prompts: &Path) -> Result<Self> {
        match spec {
            "oracle" | "answer" => Ok(Self::Scorer(crate::grpo::reward_from_spec(
                spec,
                prompts,
                Device::Cpu,
            )?)),
            s => Ok(Self::Model(PathBuf::from(
                s.strip_prefix("rm:").unwrap_or(s),
            ))),
        }
    }
}

/// One iteration's log line (`metrics.jsonl`).
pub type IterationLog = Metrics;

/// What a finished PPO run reports.
#[derive(Debug, Clone)]
pub struct PpoSummary {
    pub iterations: u64,
    pub elapsed_s: f64,
    /// Every iteration's metrics, resumed runs included.
    pub log: Vec<IterationLog>,
    pub out: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// The algorithm in memory.

/// One AdamW over the policy's parameters and the value model's trainable ones (its scalar
/// head's bias is fixed), named `policy.*` and `value.*`.
pub fn optimizer(policy: &Gpt, value: &Gpt, cfg: &PpoConfig) -> Result<AdamW> {
    let mut params: Vec<(String, Tensor)> = Vec::new();
    for (n, t) in policy.trainable_parameters() {
        params.push((format!("policy.{n}"), t));
    }
    for (n, t) in value.trainable_parameters() {
        params.push((format!("value.{n}"), t));
    }
    AdamW::new(
        params,
        AdamWConfig {
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: 0.0,
        },
    )
}

/// PPO in memory: the models, one optimizer over policy and value, the KL controller and the
/// optional pretraining corpus. The frozen models (reference, reward) get no gradient.
pub struct Ppo<'a> {
    pub models: Models<'a>,
    pub cfg: &'a PpoConfig,
    pub rollout: RolloutConfig,
    pub opt: AdamW,
    pub kl: KlControl,
    pub ptx: Option<CorpusWindows>,
    /// Where rollouts are sampled when not here (`--rollout-engine`).
    pub engine: Option<RolloutEngine>,
    /// The data-parallel group (the process's, `rlhf_model::dist::group`, by default): each
    /// rank samples its share of the prompts, and the statistics and gradients are global.
    pub group: Option<&'a Group>,
}

impl<'a> Ppo<'a> {
    pub fn new(
        models: Models<'a>,
        cfg: &'a PpoConfig,
        rollout: RolloutConfig,
        ptx: Option<CorpusWindows>,
    ) -> Result<Self> {
        cfg.validate()?;
        for gpt in [Some(models.reference), models.reward.model()]
            .into_iter()
            .flatten()
        {
            for (_, t) in gpt.vs.variables() {
                let _ = t.shallow_clone().set_requires_grad(false);
            }
        }
        let mut opt = optimizer(models.policy, models.value, cfg)?;
        opt.set_one_pass_clip(models.policy.compute() == rlhf_model::Compute::Bf16);
        let kl = KlControl::new(
            cfg.kl_coef,
            (cfg.kl_target > 0.0).then_some(cfg.kl_target),
            cfg.kl_horizon,
        )?;
        Ok(Self {
            models,
            cfg,
            rollout,
            opt,
            kl,
            ptx,
            engine: None,
            group: rlhf_model::dist::group(),
        })
    }

    /// One iteration on `prompts` (token ids): rollout, rewards and advantages, the PPO update,
    /// then the KL controller. Returns the rollout and the iteration's metrics (KL, β, losses,
    /// clip fractions, entropy, reward-model score, lengths, EOS rate, the sampler's log-prob
    /// mismatch, seconds per phase).
    pub fn step(&mut self, prompts: &[Vec<i64>], it: u64) -> Result<(Rollout, Metrics)> {
        let t0 = Instant::now();
        let seed = self.cfg.seed.wrapping_mul(1_000_003).wrapping_add(it);
        // Each rank samples its own prompts with its own stream (rank 0's is one process's).
        let seed = parallel::rank_seed(seed, self.group.map_or(0, Group::rank));
        let mut m = Metrics::new();
        let ro = match &mut self.engine {
            None => rollout::rollout(&self.models, prompts, &self.rollout, seed)?,
            Some(engine) => {
                // The policy after `it` iterations is version `it`.
                if engine.due(it, self.cfg.rollout_staleness) {
                    engine.hand_over(self.models.policy, it)?;
                }
                let served = engine.version().unwrap_or(it);
                m.insert("rollout/served_version".into(), served as f64);
                m.insert("rollout/staleness".into(), (it - served.min(it)) as f64);
                let stop = *self.rollout.stop_ids.first().ok_or_else(|| {
                    TrainError::Invalid("the policy has no stop token to end responses".into())
                })?;
                let gens = engine.generate(
                    prompts,
                    1,
                    self.cfg.temperature,
                    self.cfg.max_new_tokens,
                    stop,
                    seed,
                )?;
                rollout::score(&self.models, prompts, &gens, &self.rollout)?
            }
        };
        let t_rollout = t0.elapsed().as_secs_f64();
        let (adv, ret, kl_mean) = advantages_in(&ro, self.cfg, self.kl.value(), self.group)?;
        m.insert("kl".into(), kl_mean);
        m.insert("kl_coef".into(), self.kl.value());
        let upd = update(
            &self.models,
            &mut self.opt,
            &ro,
            &adv,
            &ret,
            self.cfg,
            self.ptx.as_mut(),
            it,
            self.group,
        )?;
        m.extend(upd);
        let world = self.group.map_or(1, |g| g.world());
        self.kl.update(kl_mean, (prompts.len() * world) as u64);
        let lens: Vec<f64> = ro.response_ids.iter().map(|r| r.len() as f64).collect();
        m.insert("reward".into(), mean(&ro.raw_scores));
        if matches!(self.models.reward, rollout::Reward::Model(_)) {
            m.insert("rm_score".into(), mean(&ro.raw_scores));
        }
        m.insert("score".into(), scalar(&ro.scores.mean(Kind::Float)));
        m.insert("response_len".into(), mean(&lens));
        m.insert(
            "eos_rate".into(),
            ro.ended.iter().filter(|&&e| e).count() as f64 / ro.ended.len().max(1) as f64,
        );
        m.insert("logprob_mismatch".into(), ro.logprob_mismatch());
        m.insert("time/rollout_s".into(), t_rollout);
        m.insert(
            "time/update_s".into(),
            t0.elapsed().as_secs_f64() - t_rollout,
        );
        Ok((ro, m))
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// A device scalar as f64 (one host sync).
fn scalar(t: &Tensor) -> f64 {
    f64::try_from(t.to_kind(Kind::Double)).unwrap_or(f64::NAN)
}

/// Per-token rewards (B, R): −β·KL on every response token plus the normalised reward-model
/// score at each row's last token (its EOS), and the per-token KL itself.
pub fn token_rewards(ro: &Rollout, cfg: &PpoConfig, beta: f64) -> Result<(Tensor, Tensor)> {
    rl::rewards_with_kl(
        &ro.scores,
        &ro.logprobs,
        &ro.ref_logprobs,
        &ro.batch.mask,
        beta,
        cfg.kl_estimator,
    )
}

/// Per-token rewards, GAE advantages (whitened) and returns; also the mean summed KL per
/// response. Refuses non-finite advantages before anything is updated.
pub fn advantages(ro: &Rollout, cfg: &PpoConfig, beta: f64) -> Result<(Tensor, Tensor, f64)> {
    advantages_in(ro, cfg, beta, None)
}

/// [`advantages`] for one rank's share of a data-parallel batch: the KL mean and the whitening
/// statistics are the global batch's (all-reduced), so each rank gets its rows of what one
/// process would compute on the whole batch.
pub fn advantages_in(
    ro: &Rollout,
    cfg: &PpoConfig,
    beta: f64,
    group: Option<&Group>,
) -> Result<(Tensor, Tensor, f64)> {
    let _g = tch::no_grad_guard();
    let mask = &ro.batch.mask;
    let (rewards, kl) = token_rewards(ro, cfg, beta)?;
    let mut kl_sum = [scalar(&rl::masked_sum(&kl, mask)?), mask.size()[0] as f64];
    if let Some(group) = group {
        group.all_reduce_f64(&mut kl_sum, "the all-reduce of the rollouts' KL")?;
    }
    let kl_mean = kl_sum[0] / kl_sum[1];
    let (mut adv, ret) = rl::gae(&rewards, &ro.values, mask, cfg.gamma, cfg.lambda)?;
    if cfg.whiten_advantages {
        adv = match group {
            None => rl::masked_whiten(&adv, mask, true)?,
            Some(group) => whiten_global(&adv, mask, group)?,
        };
    }
    let finite = adv.isfinite().all();
    if !bool::try_from(&finite).unwrap_or(false) {
        return Err(TrainError::Invalid(
            "the advantages contain NaN or inf (from the reward model's scores or the value \
             model); PPO stopped before updating, and the last checkpoint is untouched"
                .into(),
        ));
    }
    Ok((adv, ret, kl_mean))
}

/// `rl::masked_whiten` (shifted, unbiased variance) with the mean and variance of every rank's
/// masked entries together.
fn whiten_global(x: &Tensor, mask: &Tensor, group: &Group) -> Result<Tensor> {
    let m = mask.ne(0.0).to_kind(Kind::Double);
    let xd = x.to_kind(Kind::Double) * &m;
    let mut stats = [
        scalar(&m.sum(Kind::Double)),
        scalar(&xd.sum(Kind::Double)),
        scalar(&(&xd * &xd).sum(Kind::Double)),
    ];
    group.all_reduce_f64(&mut stats, "the all-reduce of the advantage statistics")?;
    let [n, sum, sq] = stats;
    if n < 2.0 {
        return Err(TrainError::Invalid(format!(
            "whitening the advantages: the rollouts hold {n} response tokens in all; an \
             unbiased variance needs at least 2"
        )));
    }
    let mean = sum / n;
    let var = (sq - n * mean * mean) / (n - 1.0);
    let whitened = (x - mean) * (var + 1e-8).sqrt().recip();
    Ok(whitened * mask.ne(0.0).to_kind(x.kind()))
}

/// One minibatch's loss and what is logged about it.
pub struct MinibatchLoss {
    /// policy loss + vf_coef · value loss (+ ptx_coef · LM loss): differentiable.
    pub loss: Tensor,
    pub policy: rl::PolicyLoss,
    pub value: rl::ValueLoss,
    /// The policy's logits (M, R, V) at the sampling temperature's scale of 1 (for entropy).
    pub logits: Tensor,
    pub ptx_loss: Option<f64>,
    /// max |log π(a) − log π_old(a)| over the minibatch's response tokens. Before the first
    /// optimizer step of an iteration this is the recomputation's own noise (0 when the update
    /// recomputes exactly what the rollout recorded; bf16 products on other batch shapes are
    /// not bit-identical): the first PPO ratio is 1 within exp(±this). A detached scalar tensor,
    /// read (one host sync) only where it is logged.
    pub max_log_ratio: Tensor,
}

/// The PPO loss on the rows `idx` of a rollout: the clipped policy loss on the recomputed
/// log-probs, vf_coef × the clipped value loss (both times `share`, this rank's share of a
/// data-parallel minibatch's tokens; 1 in one process), and, given a corpus batch `(ids, γ)`,
/// γ × its LM loss (PPO-ptx).
#[allow(clippy::too_many_arguments)]
pub fn minibatch_loss(
    models: &Models<'_>,
    ro: &Rollout,
    idx: &Tensor,
    adv: &Tensor,
    ret: &Tensor,
    cfg: &PpoConfig,
    ptx: Option<(&Tensor, f64)>,
    share: f64,
) -> Result<MinibatchLoss> {
    let mb = ro.batch.select(idx);
    let rows = |t: &Tensor| t.index_select(0, idx);
    let (logp, logits) = response_logprobs(models.policy, &mb, cfg.temperature)?;
    let old = rows(&ro.logprobs);
    let max_log_ratio = tch::no_grad(|| ((&logp - &old).abs() * &mb.mask).max());
    let policy = rl::policy_loss(&logp, &old, &rows(adv), &mb.mask, cfg.clip)?;
    let v = response_scalars(models.value, &mb)?;
    let value = rl::value_loss(&v, &rows(&ro.values), &rows(ret), &mb.mask, cfg.value_clip)?;
    let mut loss = &policy.loss + cfg.vf_coef * &value.loss;
    if share != 1.0 {
        // This rank's part of a data-parallel minibatch (see `update`).
        loss = &loss * share;
    }
    let mut ptx_loss = None;
    if let Some((ids, coef)) = ptx {
        let l = lm_loss(models.policy, ids)?;
        ptx_loss = Some(scalar(&l));
        loss += coef * l;
    }
    Ok(MinibatchLoss {
        loss,
        policy,
        value,
        logits,
        ptx_loss,
        max_log_ratio,
    })
}

/// `ppo_epochs` passes of clipped policy + value loss (+ ptx) over shuffled minibatches.
///
/// With a data-parallel `group`, this rank's rollout holds rows `rank·b .. (rank+1)·b` of the
/// global batch of `world·b`. Every rank draws the same permutation of the global rows, so each
/// global minibatch is the one a single process would form; a rank trains on the rows of it
/// that it holds, its token-mean losses weighted by its share of the minibatch's tokens (and
/// the ptx loss by 1/world, each rank holding an equal share of the corpus rows), and the
/// gradients are summed over the ranks before clipping: every update equals one process's on
/// the same rollouts. The metrics returned are this rank's.
#[allow(clippy::too_many_arguments)]
pub fn update(
    models: &Models<'_>,
    opt: &mut AdamW,
    ro: &Rollout,
    adv: &Tensor,
    ret: &Tensor,
    cfg: &PpoConfig,
    mut ptx: Option<&mut CorpusWindows>,
    it: u64,
    group: Option<&Group>,
) -> Result<Metrics> {
    let b = ro.batch.rows() as usize;
    let world = group.map_or(1, Group::world);
    let global = b * world;
    let mb = global / cfg.minibatches;
    let device = ro.batch.seqs.device();
    let tokens_per_row: Vec<f64> =
        Vec::<f64>::try_from(ro.batch.mask.sum_dim_intlist(1, false, Kind::Double))?;
    let mut rng = DataRng::new(cfg.seed.wrapping_add(it), 11);
    let (mut n, mut pg, mut vf, mut clipfrac, mut vclip, mut akl, mut ent, mut ptx_loss, mut gn) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let mut first_log_ratio = f64::NAN;
    for _ in 0..cfg.ppo_epochs {
        let perm = rng.permutation(global);
        for chunk in perm.chunks(mb) {
            // This rank's rows of the global minibatch, and its share of the minibatch's tokens.
            let (mine, share) = parallel::my_rows(chunk, b, group, |i| tokens_per_row[i])?;
            opt.zero_grad();
            let corpus = match ptx.as_deref_mut() {
                Some(src) => Some(
                    src.next_batch()?
                        .expect("corpus windows never end")
                        .to_device(device),
                ),
                None => None,
            };
            let ptx_arg = corpus.as_ref().map(|c| (c, cfg.ptx_coef / world as f64));
            let l = if mine.is_empty() {
                // None of this minibatch's rows here: only the ptx term, if any.
                match ptx_arg {
                    Some((ids, coef)) => Some((None, coef * lm_loss(models.policy, ids)?)),
                    None => None,
                }
            } else {
                let idx = Tensor::from_slice(&mine).to_device(device);
                let l = minibatch_loss(models, ro, &idx, adv, ret, cfg, ptx_arg, share)?;
                let loss = l.loss.shallow_clone();
                Some((Some((l, idx)), loss))
            };
            if let Some((_, loss)) = &l {
                let lv = scalar(loss);
                if !lv.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: it + 1,
                        what: "the PPO loss",
                        value: lv,
                        last_checkpoint: None,
                    });
                }
                loss.backward();
            }
            let grad = match group {
                None => opt.clipped_gradients(1.0, cfg.grad_clip)?,
                Some(group) => {
                    let mut grad = opt.gradients(1.0)?;
                    group.all_reduce_sum(
                        &grad,
                        &format!("the gradient all-reduce of PPO iteration {}", it + 1),
                    )?;
                    let norm = clip_grad_norm(&mut grad, cfg.grad_clip)?;
                    ClippedGradients::clipped(grad, norm)
                }
            };
            let norm = scalar(&grad.norm);
            if !norm.is_finite() {
                return Err(TrainError::NonFinite {
                    step: it + 1,
                    what: "the gradient norm",
                    value: norm,
                    last_checkpoint: None,
                });
            }
            opt.step_clipped(&grad, cfg.lr)?;
            let Some((Some((l, idx)), _)) = l else {
                continue;
            };
            if n == 0.0 {
                first_log_ratio = scalar(&l.max_log_ratio);
            }
            let mask = ro.batch.mask.index_select(0, &idx);
            tch::no_grad(|| -> Result<()> {
                let e = rl::entropy_from_logits(&(l.logits.detach() / cfg.temperature))?;
                ent += scalar(&rl::masked_mean(&e, &mask)?);
                Ok(())
            })?;
            n += 1.0;
            pg += scalar(&l.policy.loss);
            vf += scalar(&l.value.loss);
            clipfrac += l.policy.clip_fraction;
            vclip += l.value.clip_fraction;
            akl += l.policy.approx_kl;
            ptx_loss += l.ptx_loss.unwrap_or(0.0);
            gn += norm;
        }
    }
    let mut m = Metrics::from([
        ("policy_loss".to_string(), pg / n),
        ("value_loss".to_string(), vf / n),
        ("clip_fraction".to_string(), clipfrac / n),
        ("value_clip_fraction".to_string(), vclip / n),
        ("approx_kl".to_string(), akl / n),
        ("entropy".to_string(), ent / n),
        ("grad_norm".to_string(), gn / n),
        // The first minibatch's, before any step: how far from 1 the first ratio starts.
        ("first_max_log_ratio".to_string(), first_log_ratio),
    ]);
    if ptx.is_some() {
        m.insert("ptx_loss".into(), ptx_loss / n);
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// The run over paths, phase by phase.

/// Phase "load": the policy and its frozen copy, the reward model, the value model from it.
struct PpoModels {
    policy: Pretrained,
    reference: Pretrained,
    /// `None` when the reward is the inputs' scorer (used through [`TextReward`]).
    reward: Option<RewardModel>,
    value: Gpt,
    /// The reward model's std on the SFT samples (`reward.json`), which divides its scores.
    score_scale: f64,
}

impl PpoModels {
    fn load(
        inputs: &PpoInputs,
        lora: &rlhf_model::LoraConfig,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let mut policy = Pretrained::load(&inputs.policy, Head::Lm, device)?;
        crate::adapter::prepare(&mut policy.model, lora, &inputs.policy, seed)?;
        let reference = if lora.enabled {
            Pretrained {
                model: policy.model.base_view()?,
                tokenizer: policy.tokenizer.clone(),
            }
        } else {
            Pretrained::load(&inputs.policy, Head::Lm, device)?
        };
        let path = match &inputs.reward {
            PpoReward::Model(path) => path,
            PpoReward::Scorer(_) => {
                // The value model: the policy's body (its base under LoRA, with an adapter of
                // its own) and a fresh scalar head, drawn from the run's seed.
                tch::manual_seed(seed as i64);
                let mut value = match lora.enabled {
                    true => reference.model.copy_with_head(Head::Scalar)?,
                    false => policy.model.copy_with_head(Head::Scalar)?,
                };
                if lora.enabled {
                    value.add_lora(lora, None)?;
                }
                return Ok(Self {
                    policy,
                    reference,
                    reward: None,
                    value,
                    score_scale: 1.0,
                });
            }
        };
        let reward = RewardModel::load(path, device)?;
        reward.check_tokenizer(&policy.tokenizer, &inputs.policy)?;
        let value = match (lora.enabled, reward.pre.model.adapter().is_some()) {
            // The reward model's frozen body, shared; the value's head is the view's own copy.
            (true, false) => {
                let mut v = reward.pre.model.base_view()?;
                v.add_lora(lora, Some(crate::adapter::absolute(path)))?;
                v
            }
            // A LoRA reward model: its adapter merged into a copy, the value's adapter on that.
            (true, true) => {
                let mut v = Gpt::load(path, Head::Scalar, device)?;
                v.merge_adapter()?;
                v.add_lora(lora, Some(crate::adapter::absolute(path)))?;
                v
            }
            (false, _) => {
                let mut v = Gpt::load(path, Head::Scalar, device)?;
                v.merge_adapter()?;
                v
            }
        };
        let stats = RewardStats::read(path)?;
        Ok(Self {
            policy,
            reference,
            reward: Some(reward),
            value,
            score_scale: stats.map_or(1.0, |s| s.std).max(1e-6),
        })
    }

    /// The models of a rollout; `text` scores the responses when the reward is a scorer.
    fn models<'a>(&'a self, text: Option<&'a TextReward<'a>>) -> Result<Models<'a>> {
        let reward = match (&self.reward, text) {
            (Some(rm), _) => rollout::Reward::Model(&rm.pre.model),
            (None, Some(t)) => rollout::Reward::Tokens(t),
            (None, None) => {
                return Err(TrainError::Invalid(
                    "a scorer reward needs the prompts' texts".into(),
                ));
            }
        };
        Ok(Models {
            policy: &self.policy.model,
            reference: &self.reference.model,
            value: &self.value,
            reward,
        })
    }
}

/// A scorer of text as PPO's reward: the rollout's prompt ids are mapped back to the prompt
/// texts and the responses decoded (special tokens dropped) before scoring.
pub struct TextReward<'a> {
    pub scorer: &'a dyn Scorer,
    pub tokenizer: &'a Tokenizer,
    /// Each training prompt's token ids (as the policy sees them) → its text.
    pub prompts: std::collections::HashMap<Vec<i64>, String>,
}

impl rollout::TokenReward for TextReward<'_> {
    fn score(&self, prompts: &[Vec<i64>], responses: &[Vec<i64>]) -> Result<Vec<f64>> {
        let texts = prompts
            .iter()
            .map(|p| {
                self.prompts.get(p).cloned().ok_or_else(|| {
                    TrainError::Invalid("a rollout's prompt is not a training prompt".into())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let responses = responses
            .iter()
            .map(|r| {
                let ids: Vec<u32> = r.iter().map(|&i| i as u32).collect();
                self.tokenizer.decode(&ids, true)
            })
            .collect::<rlhf_tokenizer::Result<Vec<_>>>()?;
        Ok(self.scorer.score(&texts, &responses)?)
    }
}

/// Prompt texts with their line numbers, read before any model is loaded.
pub(crate) fn read_prompts(path: &Path) -> Result<Vec<(usize, String)>> {
    let records: Vec<(usize, PromptRecord)> = read_jsonl_lines(path)?;
    if records.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no prompts",
            path.display()
        )));
    }
    Ok(records.into_iter().map(|(l, r)| (l, r.prompt)).collect())
}

/// Prompts tokenized with the chat template; one that leaves no room for `max_new` tokens in
/// the context is an error naming file:line.
pub(crate) fn tokenize_prompts(
    pre: &Pretrained,
    path: &Path,
    records: &[(usize, String)],
    max_new: usize,
) -> Result<Vec<Vec<i64>>> {
    let max = pre.model.cfg.max_positions as usize;
    let budget = crate::data::text_budget(pre);
    let mut ids = Vec::with_capacity(records.len());
    for (line, prompt) in records {
        // From the byte length, before a long prompt costs a tokenizer pass.
        if let Some(Err(e)) = budget
            .as_ref()
            .map(|b| b.check("prompt", &[prompt.as_str()]))
        {
            return Err(TrainError::Invalid(e.problem).at(path, *line, "prompt"));
        }
        let q = pre
            .encode_prompt(prompt, PromptFormat::Chat)
            .map_err(|e| TrainError::from(e).at(path, *line, "prompt"))?;
        if q.len() + max_new > max {
            let e = TrainError::Invalid(format!(
                "{} tokens + max_new_tokens {max_new} exceed the model's context of {max}; \
                 shorten the prompt or lower max_new_tokens",
                q.len()
            ));
            return Err(e.at(path, *line, "prompt"));
        }
        ids.push(q);
    }
    Ok(ids)
}

/// The ptx corpus as one token stream (`rlhf_data::read_documents`, joined by EOS).
fn ptx_stream(tok: &Tokenizer, path: &Path) -> Result<Vec<i64>> {
    crate::pretrain::token_stream(tok, &rlhf_data::read_documents(path)?)
}

/// The state checkpoints carry besides weights and optimizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PpoState {
    kl: KlControl,
    log: Vec<IterationLog>,
    ptx_position: Option<crate::data::DataPosition>,
}

const STATE_FILE: &str = "ppo_state.json";

/// Phase "evaluate": held-out prompts answered by the policy and, once, by the SFT reference,
/// judged by the reward model and the gold judge (`rlhf-eval`'s comparison).
struct Evaluator {
    prompts: Vec<String>,
    ids: Vec<Vec<i64>>,
    baseline: Vec<String>,
    sampling: TextGenerateConfig,
    seed: u64,
}

impl Evaluator {
    fn new(
        reference: &Pretrained,
        prompts: Vec<String>,
        ids: Vec<Vec<i64>>,
        cfg: &PpoConfig,
    ) -> Result<Self> {
        let sampling = TextGenerateConfig {
            max_new_tokens: cfg.max_new_tokens,
            sampling: rlhf_model::Sampling::new(cfg.temperature, None, None)?,
            seed: Some(cfg.seed ^ 0x5eed),
            stop: vec![],
        };
        let mut e = Self {
            prompts,
            ids,
            baseline: vec![],
            sampling,
            seed: cfg.seed,
        };
        e.baseline = e.respond(reference)?;
        Ok(e)
    }

    /// Responses (decoded, the stop token dropped) with a fixed seed, 64 prompts at a time.
    fn respond(&self, pre: &Pretrained) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.ids.len());
        for chunk in self.ids.chunks(64) {
            out.extend(
                pre.generate_ids(chunk, &self.sampling)?
                    .into_iter()
                    .map(|g| g.text),
            );
        }
        Ok(out)
    }

    fn compare(&self, judge: &dyn Scorer, responses: &[String]) -> Result<Comparison> {
        let v = scored_verdicts(judge, &self.prompts, responses, &self.baseline)?;
        let paired = rlhf_eval::Paired {
            prompts: &self.prompts,
            a: responses,
            b: &self.baseline,
            kl: None,
            tokens: None,
        };
        Ok(summarize(judge.name(), paired, &v, 1000, self.seed))
    }

    /// `eval/<judge>_score`, `eval/<judge>_win_rate` (with `_lo`/`_hi`) for the reward model and
    /// the gold judge, and the gold judge's score of the baseline.
    fn evaluate(
        &self,
        policy: &Pretrained,
        reward: &dyn Scorer,
        gold: Option<&dyn Scorer>,
        it: u64,
    ) -> Result<Metrics> {
        let responses = self.respond(policy)?;
        let mut m = Metrics::new();
        let mut judges: Vec<&dyn Scorer> = vec![reward];
        // A gold judge that is the reward itself (the oracle both ways) is judged once.
        judges.extend(gold.filter(|g| g.key() != reward.key()));
        for judge in judges {
            let c = self.compare(judge, &responses)?;
            let k = judge.key();
            if let Some(a) = c.score_a {
                m.insert(format!("eval/{k}_score"), a.mean);
            }
            m.insert(format!("eval/{k}_win_rate"), c.win_rate.mean);
            m.insert(format!("eval/{k}_win_rate_lo"), c.win_rate.lo);
            m.insert(format!("eval/{k}_win_rate_hi"), c.win_rate.hi);
            if let Some(b) = c.score_b {
                m.insert(format!("eval/baseline_{k}_score"), b.mean);
            }
        }
        m.insert("eval/iteration".into(), it as f64);
        Ok(m)
    }
}

fn progress_bar(iterations: u64, start: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "ppo {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let b = ProgressBar::new(iterations).with_style(style);
    b.set_position(start);
    b.reset_eta();
    b
}

/// Runs PPO; `out` receives the final policy (a checkpoint dir for `rlhf eval`/`rlhf generate`),
/// `out/value/`, `config.toml`, `metrics.jsonl` and `checkpoints/`.
pub fn ppo(
    inputs: &PpoInputs,
    cfg: &PpoConfig,
    resume: Resume,
    device: Device,
    progress: bool,
) -> Result<PpoSummary> {
    // Phase "open the run": the whole configuration, the prompts the gold judge must know and
    // the resume checks, before any model is loaded.
    cfg.validate()?;
    if cfg.ptx_coef > 0.0 && inputs.ptx_data.is_none() {
        return Err(TrainError::Config(
            "ptx_coef > 0 needs a pretraining corpus (--ptx-data)".into(),
        ));
    }
    let prompts = read_prompts(&inputs.prompts)?;
    let eval_prompts = match &inputs.eval_prompts {
        Some(p) if cfg.eval_every > 0 => {
            let mut e = read_prompts(p)?;
            e.truncate(cfg.eval_prompts);
            Some((p.as_path(), e))
        }
        _ => None,
    };
    if let Some(gold) = &inputs.gold {
        let texts = |r: &[(usize, String)]| r.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
        gold.check(&texts(&prompts))
            .map_err(|e| TrainError::from(e).context(format!("{}", inputs.prompts.display())))?;
        if let Some((path, e)) = &eval_prompts {
            gold.check(&texts(e))
                .map_err(|e| TrainError::from(e).context(format!("{}", path.display())))?;
        }
    }
    let mut files = vec![("policy", inputs.policy.as_path())];
    match &inputs.reward {
        PpoReward::Model(path) => files.push(("reward", path.as_path())),
        PpoReward::Scorer(r) => {
            r.check(&prompts.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>())
                .map_err(|e| {
                    TrainError::from(e).context(format!("{}", inputs.prompts.display()))
                })?;
        }
    }
    files.push(("prompts", inputs.prompts.as_path()));
    files.extend(inputs.ptx_data.as_deref().map(|p| ("ptx corpus", p)));
    let mut opts = RunOptions::stage(&inputs.out, "ppo", cfg, &files, resume)?;
    if let PpoReward::Scorer(s) = &inputs.reward {
        opts.inputs.push(run::RunInput::reward(s.as_ref())?);
    }
    opts.progress = progress;
    let run = RunDir::create(opts)?;
    let resume_point = run.resume_point()?;
    let t0 = Instant::now();
    let group = rlhf_model::dist::group();
    let shard = Shard::of_process();
    let engine = RolloutEngine::for_run(
        inputs.rollout_engine.as_deref(),
        cfg.lora.enabled,
        run.dir(),
    )?;

    // Phase "load".
    let models = PpoModels::load(inputs, &cfg.lora, cfg.seed, device)?;
    let pre = &models.policy;
    let prompt_ids = tokenize_prompts(pre, &inputs.prompts, &prompts, cfg.max_new_tokens)?;
    let prompt_texts: Vec<String> = prompts.into_iter().map(|(_, p)| p).collect();
    let text_reward = match &inputs.reward {
        PpoReward::Scorer(scorer) => Some(TextReward {
            scorer: scorer.as_ref(),
            tokenizer: &pre.tokenizer,
            prompts: prompt_ids
                .iter()
                .cloned()
                .zip(prompt_texts.iter().cloned())
                .collect(),
        }),
        PpoReward::Model(_) => None,
    };
    let rm_eos_id = pre.tokenizer.eos_id().map(i64::from).ok_or_else(|| {
        TrainError::Invalid("the policy's tokenizer has no EOS token for the reward model".into())
    })?;
    let rollout_cfg = RolloutConfig {
        temperature: cfg.temperature,
        max_new_tokens: cfg.max_new_tokens,
        stop_ids: pre.eos_ids(),
        pad_id: pre.pad_id(),
        rm_eos_id,
        score_scale: models.score_scale,
        missing_eos_penalty: cfg.missing_eos_penalty,
    };
    let ptx = match (&inputs.ptx_data, cfg.ptx_coef > 0.0) {
        (Some(path), true) => Some(
            CorpusWindows::new(
                Tensor::from_slice(&ptx_stream(&pre.tokenizer, path)?),
                cfg.ptx_batch as i64,
                cfg.ptx_seq_len,
                cfg.seed,
            )?
            .sharded(shard)?,
        ),
        _ => None,
    };
    let mut algo = Ppo::new(models.models(text_reward.as_ref())?, cfg, rollout_cfg, ptx)?;
    algo.engine = engine;
    // Under data parallelism each rank samples its slice of every global batch of prompts.
    let mut order = Epochs::new(prompt_ids.len(), cfg.rollout_batch, cfg.seed, 7).sharded(shard)?;
    let mut log: Vec<IterationLog> = Vec::new();

    // Phase "resume".
    let mut start = 0;
    let mut last_ckpt = None;
    let elapsed_before = match &resume_point {
        Some(point) => {
            let dir = &point.dir;
            checkpoint::load_gpt(algo.models.policy, &dir.join("policy"))?;
            checkpoint::load_gpt(algo.models.value, &dir.join("value"))?;
            run::load_optimizer(&mut algo.opt, dir, point.info.step * optimizer_steps(cfg))?;
            let path = dir.join(STATE_FILE);
            let text =
                std::fs::read_to_string(&path).map_err(|e| TrainError::io("read", &path, e))?;
            let state: PpoState = serde_json::from_str(&text)
                .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
            algo.kl = state.kl;
            log = state.log;
            order.seek(&point.info.data_position);
            if let (Some(p), Some(pos)) = (algo.ptx.as_mut(), &state.ptx_position) {
                p.seek(pos)?;
            }
            start = point.info.step;
            last_ckpt = Some(dir.clone());
            point.info.elapsed_s
        }
        None => 0.0,
    };
    parallel::start_from_rank0(&algo.opt, group)?;
    let writer = rlhf_model::dist::is_writer();
    let mut metrics_log = crate::callbacks::MetricsLog::new(run.dir());
    if writer {
        metrics_log.open(start)?;
    }
    let bar = (progress && writer).then(|| progress_bar(cfg.iterations, start));
    let evaluator = match eval_prompts {
        Some((path, records)) => {
            let ids = tokenize_prompts(pre, path, &records, cfg.max_new_tokens)?;
            let texts = records.into_iter().map(|(_, p)| p).collect();
            Some(Evaluator::new(&models.reference, texts, ids, cfg)?)
        }
        None => None,
    };
    let gold = inputs.gold.as_deref();
    let evaluate = |it: u64| -> Result<Metrics> {
        match &evaluator {
            Some(e) => {
                let reward: &dyn Scorer = match (&models.reward, &inputs.reward) {
                    (Some(rm), _) => rm,
                    (_, PpoReward::Scorer(s)) => s.as_ref(),
                    (None, PpoReward::Model(_)) => unreachable!("a reward model is loaded"),
                };
                e.evaluate(pre, reward, gold, it)
            }
            None => Ok(Metrics::new()),
        }
    };
    let first_eval = if start == 0 {
        evaluate(0)?
    } else {
        Metrics::new()
    };

    for it in start..cfg.iterations {
        // Phases "rollout", "advantages" and "update".
        let t_it = Instant::now();
        let idx = order.next_indices();
        let batch_ids: Vec<Vec<i64>> = idx.iter().map(|&i| prompt_ids[i].clone()).collect();
        let (ro, mut m) = algo.step(&batch_ids, it)?;
        if let Some(g) = gold {
            let texts: Vec<String> = ro
                .response_ids
                .iter()
                .map(|r| {
                    let ids: Vec<u32> = r.iter().map(|&i| i as u32).collect();
                    pre.tokenizer.decode(&ids, true)
                })
                .collect::<rlhf_tokenizer::Result<_>>()?;
            let batch_prompts: Vec<String> = idx.iter().map(|&i| prompt_texts[i].clone()).collect();
            let scores = g.score(&batch_prompts, &texts)?;
            m.insert(format!("{}_score", g.key()), mean(&scores));
        }
        // Phase "evaluate".
        let done = it + 1;
        if cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == cfg.iterations) {
            let e = evaluate(done)?;
            if let Some(b) = &bar {
                let parts: Vec<String> = e.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
                b.println(format!("iteration {done}: {}", parts.join(", ")));
            }
            m.extend(e);
        } else if done == 1 {
            // The start-of-run evaluation goes into the first line.
            m.extend(first_eval.clone());
        }
        m.insert("iteration".into(), done as f64);
        m.insert("step".into(), done as f64);
        m.insert("time/iteration_s".into(), t_it.elapsed().as_secs_f64());
        if let Some(group) = group {
            parallel::mean_over_ranks(&mut m, group, done)?;
        }
        if writer {
            metrics_log.append(&m)?;
        }
        if let Some(b) = &bar {
            b.set_position(done);
            b.set_message(format!(
                "reward {:+.3} kl {:.2} len {:.0}",
                m["reward"], m["kl"], m["response_len"]
            ));
        }
        log.push(m);

        // Phase "checkpoint".
        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.iterations
        {
            let progress = run::Progress {
                step: done,
                tokens_seen: 0,
                elapsed_s: elapsed_before + t0.elapsed().as_secs_f64(),
                metrics: log.last().cloned().unwrap_or_default(),
                data_position: order.position(),
            };
            let state = PpoState {
                kl: algo.kl.clone(),
                log: log.clone(),
                ptx_position: algo.ptx.as_ref().map(|p| p.position()),
            };
            let (opt, policy, value) = (&algo.opt, algo.models.policy, algo.models.value);
            let path = run.save_checkpoint(progress, cfg.keep_checkpoints, |tmp| {
                rlhf_model::checkpoint::save_tensors(&opt.state(), &tmp.join(OPTIMIZER_FILE))?;
                policy.save(&tmp.join("policy"))?;
                value.save(&tmp.join("value"))?;
                let json = serde_json::to_string(&state).expect("state serialises");
                let p = tmp.join(STATE_FILE);
                std::fs::write(&p, json).map_err(|e| TrainError::io("write", &p, e))
            })?;
            last_ckpt = Some(path);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    // Phase "export": the final policy is the run folder itself; the value model next to it.
    let out = run.dir();
    let value = algo.models.value;
    checkpoint::export_with(algo.models.policy, last_ckpt.as_deref(), out, |dir| {
        pre.tokenizer.save(dir)?;
        Ok(value.save(&dir.join("value"))?)
    })?;
    Ok(PpoSummary {
        iterations: cfg.iterations,
        elapsed_s: t0.elapsed().as_secs_f64(),
        log,
        out: out.to_path_buf(),
    })
}

/// AdamW updates per PPO iteration.
fn optimizer_steps(cfg: &PpoConfig) -> u64 {
    cfg.ppo_epochs * cfg.minibatches as u64
}
