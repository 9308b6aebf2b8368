//! PPO rollouts: sample responses from the policy with the KV cache, then score them in one
//! no-grad pass each through the policy (log-probs recomputed at the sampling temperature), the
//! frozen reference, the value model and the reward model.
//!
//! Not here: advantages and the update (`ppo.rs`), the maths (`rl.rs`), the batch layout and
//! the teacher-forced scores (`rlhf_model::batch`, `rlhf_model::score`).
//!
//! Shapes: B rollouts, R longest response (right-padded). A row of the batch is
//! `[pad.. prompt | response | pad..]` (`ResponseBatch`).

use rlhf_model::sample::{Finish, Generation, generate};
use rlhf_model::{
    GenerateConfig, Gpt, ResponseBatch, Sampling, last_token_scalars, response_logprobs,
    score::response_scalars,
};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};

/// Sampled responses and everything PPO needs about them.
pub struct Rollout {
    /// Prompts + responses (`ResponseBatch`): every response token, the stop token included,
    /// is trained on; `batch.mask` is 1.0 on real tokens.
    pub batch: ResponseBatch,
    /// Log-probs of the sampled tokens under the policy and the reference (B, R), recomputed
    /// in a full forward pass at the sampling temperature.
    pub logprobs: Tensor,
    pub ref_logprobs: Tensor,
    /// The log-probs the sampler reported while decoding with the KV cache (B, R; 0 on
    /// padding): they should equal `logprobs`, and their gap is logged as a health check.
    pub sampler_logprobs: Tensor,
    /// Value estimates before each response token (B, R).
    pub values: Tensor,
    /// Rewards (B,): raw, and normalised with the EOS penalty (what PPO optimises).
    pub raw_scores: Vec<f64>,
    pub scores: Tensor,
    /// Per row: response token ids without the stop token, and whether a stop token ended it.
    pub response_ids: Vec<Vec<i64>>,
    pub ended: Vec<bool>,
}

impl Rollout {
    /// Rows `idx` of the rollout, e.g. one rank's share of a data-parallel batch.
    pub fn select(&self, idx: &[i64]) -> Rollout {
        let device = self.logprobs.device();
        let rows = Tensor::from_slice(idx).to_device(device);
        let pick = |t: &Tensor| t.index_select(0, &rows);
        let at = |i: &i64| *i as usize;
        Rollout {
            batch: self.batch.select(&rows),
            logprobs: pick(&self.logprobs),
            ref_logprobs: pick(&self.ref_logprobs),
            sampler_logprobs: pick(&self.sampler_logprobs),
            values: pick(&self.values),
            raw_scores: idx.iter().map(|i| self.raw_scores[at(i)]).collect(),
            scores: pick(&self.scores),
            response_ids: idx
                .iter()
                .map(|i| self.response_ids[at(i)].clone())
                .collect(),
            ended: idx.iter().map(|i| self.ended[at(i)]).collect(),
        }
    }

    /// The largest |sampler log-prob − recomputed log-prob| over real tokens.
    pub fn logprob_mismatch(&self) -> f64 {
        let gap = (&self.sampler_logprobs - &self.logprobs).abs() * &self.batch.mask;
        f64::try_from(gap.max().to_kind(Kind::Double)).unwrap_or(f64::NAN)
    }
}

/// How rollouts are sampled and scored.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// Tokens that end a response (EOS, `<|im_end|>`).
    pub stop_ids: Vec<i64>,
    pub pad_id: i64,
    /// Appended to the response for the reward model, which reads its reward there.
    pub rm_eos_id: i64,
    /// Divides the raw reward (a reward model's std on the SFT samples; 1 for other rewards).
    pub score_scale: f64,
    /// Subtracted (in normalised units) from the score of a response that never ended.
    pub missing_eos_penalty: f64,
}

/// The models a rollout touches.
pub struct Models<'a> {
    pub policy: &'a Gpt,
    pub reference: &'a Gpt,
    pub value: &'a Gpt,
    pub reward: Reward<'a>,
}

/// Where a rollout's reward comes from.
#[derive(Clone, Copy)]
pub enum Reward<'a> {
    /// A reward model (scalar head): its score at an EOS appended to prompt + response.
    Model(&'a Gpt),
    /// A reward computed from the tokens themselves: a verifiable check or the task world's
    /// oracle on the decoded text ([`TokenReward`]).
    Tokens(&'a dyn TokenReward),
}

impl<'a> Reward<'a> {
    /// The reward model, when the reward is one.
    pub fn model(&self) -> Option<&'a Gpt> {
        match self {
            Reward::Model(m) => Some(m),
            Reward::Tokens(_) => None,
        }
    }
}

/// A reward of each (prompt, response) pair given as token ids (the prompt as the policy saw
/// it, the response without its stop token).
pub trait TokenReward {
    fn score(&self, prompts: &[Vec<i64>], responses: &[Vec<i64>]) -> Result<Vec<f64>>;
}

/// Samples one response per prompt and scores it.
pub fn rollout(
    models: &Models<'_>,
    prompts: &[Vec<i64>],
    cfg: &RolloutConfig,
    seed: u64,
) -> Result<Rollout> {
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::new(cfg.temperature, None, None)?,
        seed: Some(seed),
        eos_token_ids: cfg.stop_ids.clone(),
        pad_token_id: cfg.pad_id,
    };
    let gens = generate(models.policy, prompts, &gen_cfg, |_, _| false)?;
    score(models, prompts, &gens, cfg)
}

/// Scores sampled responses (from the policy here, or from an external engine): the policy's
/// and the reference's log-probs recomputed in one teacher-forced pass each, the values and the
/// reward model's scores. A generation may report fewer log-probs than tokens (an engine that
/// does not report its stop token's); the missing ones count as equal to the recomputed ones.
pub fn score(
    models: &Models<'_>,
    prompts: &[Vec<i64>],
    gens: &[Generation],
    cfg: &RolloutConfig,
) -> Result<Rollout> {
    let device = models.policy.device();
    if gens.len() != prompts.len() || gens.iter().any(|g| g.token_ids.is_empty()) {
        return Err(TrainError::Invalid(format!(
            "{} generations for {} prompts, or an empty one: every prompt needs a response of \
             at least one token",
            gens.len(),
            prompts.len()
        )));
    }
    let _guard = tch::no_grad_guard();
    // The policy is trained on every sampled token, the stop token included: it must learn to
    // end. The reward model reads prompt + response (without the stop token) + its EOS.
    let full: Vec<&[i64]> = gens.iter().map(|g| g.token_ids.as_slice()).collect();
    let ended: Vec<bool> = gens
        .iter()
        .map(|g| matches!(g.finish, Finish::Eos))
        .collect();
    let response_ids: Vec<Vec<i64>> = gens
        .iter()
        .zip(&ended)
        .map(|(g, &e)| g.token_ids[..g.token_ids.len() - usize::from(e)].to_vec())
        .collect();
    let batch = ResponseBatch::new(prompts, &full, cfg.pad_id, device)?;
    let (logprobs, _) = response_logprobs(models.policy, &batch, cfg.temperature)?;
    let (ref_logprobs, _) = response_logprobs(models.reference, &batch, cfg.temperature)?;
    let values = response_scalars(models.value, &batch)?;
    let r = batch.response_len() as usize;
    let (mut sampled, mut reported) = (Vec::with_capacity(gens.len() * r), Vec::new());
    for g in gens {
        let n = g.logprobs.len().min(r);
        sampled.extend(g.logprobs[..n].iter().copied());
        sampled.extend(std::iter::repeat_n(0f32, r - n));
        reported.extend(std::iter::repeat_n(true, n));
        reported.extend(std::iter::repeat_n(false, r - n));
    }
    let shape = [gens.len() as i64, r as i64];
    let sampled = Tensor::from_slice(&sampled).view(shape).to_device(device);
    let reported = Tensor::from_slice(&reported).view(shape).to_device(device);
    let sampler_logprobs = sampled.where_self(&reported, &logprobs);
    let raw_scores: Vec<f64> = match models.reward {
        Reward::Model(rm) => {
            let rm_seqs: Vec<Vec<i64>> = prompts
                .iter()
                .zip(&response_ids)
                .map(|(q, a)| {
                    q.iter()
                        .chain(a)
                        .copied()
                        .chain(std::iter::once(cfg.rm_eos_id))
                        .collect()
                })
                .collect();
            let raw = last_token_scalars(rm, &rm_seqs, cfg.pad_id)?.to_device(Device::Cpu);
            Vec::<f32>::try_from(&raw)?
                .into_iter()
                .map(f64::from)
                .collect()
        }
        Reward::Tokens(r) => r.score(prompts, &response_ids)?,
    };
    if raw_scores.len() != gens.len() {
        return Err(TrainError::Invalid(format!(
            "the reward gave {} scores for {} rollouts",
            raw_scores.len(),
            gens.len()
        )));
    }
    if let Some(i) = raw_scores.iter().position(|s| !s.is_finite()) {
        return Err(TrainError::Invalid(format!(
            "the reward returned {} for rollout {i}; a reward model giving this is broken (NaN \
             weights?)",
            raw_scores[i]
        )));
    }
    let scores: Vec<f32> = raw_scores
        .iter()
        .zip(&ended)
        .map(|(&s, &e)| {
            (s / cfg.score_scale - if e { 0.0 } else { cfg.missing_eos_penalty }) as f32
        })
        .collect();
    Ok(Rollout {
        batch,
        logprobs,
        ref_logprobs,
        sampler_logprobs,
        values,
        raw_scores,
        scores: Tensor::from_slice(&scores).to_device(device),
        response_ids,
        ended,
    })
}
