//! PPO rollouts: sample responses from the policy with the KV cache, then score them in one
//! no-grad pass each through the policy (log-probs recomputed at the sampling temperature), the
//! frozen reference, the value model and the reward model.
//!
//! Not here: advantages and the update (`ppo.rs`), the maths (`rl.rs`).
//!
//! Shapes: B rollouts, P longest prompt (left-padded), R longest response (right-padded), C
//! hidden size, V vocabulary. A row of `seqs` is `[pad.. prompt | response | pad..]`; the
//! log-prob of response token t is read from the logits at column P + t − 1.

use rlhf_model::sample::{Finish, generate, left_pad};
use rlhf_model::{Batch, GenerateConfig, Gpt, Sampling};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::rl;

/// Sampled responses and everything PPO needs about them.
pub struct Rollout {
    /// Prompt + response ids (B, P + R) and their attention mask (B, P + R).
    pub seqs: Tensor,
    pub attention: Tensor,
    /// Response tokens (B, R) and their mask (B, R), 1.0 on real tokens (EOS included).
    pub responses: Tensor,
    pub mask: Tensor,
    pub prompt_len: i64,
    /// Log-probs of the sampled tokens under the policy and the reference (B, R).
    pub logprobs: Tensor,
    pub ref_logprobs: Tensor,
    /// Value estimates before each response token (B, R).
    pub values: Tensor,
    /// Reward-model scores (B,): raw, and normalised with the EOS penalty (what PPO optimises).
    pub raw_scores: Vec<f64>,
    pub scores: Tensor,
    /// Per row: response token ids without the stop token, and whether a stop token ended it.
    pub response_ids: Vec<Vec<i64>>,
    pub ended: Vec<bool>,
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
    /// Divides the reward model's score (its std on the SFT samples).
    pub score_scale: f64,
    /// Subtracted (in normalised units) from the score of a response that never ended.
    pub missing_eos_penalty: f64,
}

/// Right-pads token lists into (B, R) ids and a float mask.
fn right_pad(rows: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    let r = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (mut ids, mut mask) = (Vec::with_capacity(rows.len() * r), Vec::new());
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, r - row.len())),
        );
        mask.extend(
            std::iter::repeat_n(1f32, row.len()).chain(std::iter::repeat_n(0f32, r - row.len())),
        );
    }
    let shape = [rows.len() as i64, r as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// Hidden states (B, R, C) of the positions that predict the response tokens.
pub fn response_hidden(
    gpt: &Gpt,
    seqs: &Tensor,
    attention: &Tensor,
    p: i64,
    r: i64,
) -> Result<Tensor> {
    // The last layer runs on these R rows only (`forward_hidden_window`).
    let batch = Batch {
        input_ids: seqs,
        attention_mask: Some(attention),
    };
    Ok(gpt.forward_hidden_window(batch, p - 1, r)?)
}

/// Log-probs (B, R) of `responses` under an LM at `temperature`, and the logits (B, R, V).
pub fn response_logprobs(
    gpt: &Gpt,
    seqs: &Tensor,
    attention: &Tensor,
    responses: &Tensor,
    p: i64,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    let r = responses.size()[1];
    let logits = gpt.lm_logits(&response_hidden(gpt, seqs, attention, p, r)?)?;
    let logp = rl::logprobs_from_logits(&logits, responses, temperature)?;
    Ok((logp, logits))
}

/// Values (B, R) before each response token.
pub fn response_values(
    gpt: &Gpt,
    seqs: &Tensor,
    attention: &Tensor,
    p: i64,
    r: i64,
) -> Result<Tensor> {
    Ok(gpt.scalar(&response_hidden(gpt, seqs, attention, p, r)?)?)
}

/// The models a rollout touches.
pub struct Models<'a> {
    pub policy: &'a Gpt,
    pub reference: &'a Gpt,
    pub value: &'a Gpt,
    pub reward: &'a Gpt,
}

/// Samples one response per prompt and scores it.
pub fn rollout(
    models: &Models<'_>,
    prompts: &[Vec<i64>],
    cfg: &RolloutConfig,
    seed: u64,
) -> Result<Rollout> {
    let device = models.policy.device();
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::new(cfg.temperature, None, None)?,
        seed: Some(seed),
        eos_token_ids: cfg.stop_ids.clone(),
        pad_token_id: cfg.pad_id,
    };
    let gens = generate(models.policy, prompts, &gen_cfg, |_, _| false)?;
    let _guard = tch::no_grad_guard();
    // The policy is trained on every sampled token, the stop token included: it must learn to
    // end. The reward model reads prompt + response (without the stop token) + its EOS.
    let full: Vec<Vec<i64>> = gens.iter().map(|g| g.token_ids.clone()).collect();
    let ended: Vec<bool> = gens
        .iter()
        .map(|g| matches!(g.finish, Finish::Eos))
        .collect();
    let response_ids: Vec<Vec<i64>> = gens
        .iter()
        .zip(&ended)
        .map(|(g, &e)| g.token_ids[..g.token_ids.len() - usize::from(e)].to_vec())
        .collect();
    let (q, q_mask) = left_pad(prompts, cfg.pad_id, device)?;
    let (responses, mask) = right_pad(&full, cfg.pad_id, device);
    let p = q.size()[1];
    let r = responses.size()[1];
    let seqs = Tensor::cat(&[&q, &responses], 1);
    let attention = Tensor::cat(&[q_mask, mask.to_kind(Kind::Int64)], 1);
    let (logprobs, _) = response_logprobs(
        models.policy,
        &seqs,
        &attention,
        &responses,
        p,
        cfg.temperature,
    )?;
    let (ref_logprobs, _) = response_logprobs(
        models.reference,
        &seqs,
        &attention,
        &responses,
        p,
        cfg.temperature,
    )?;
    let values = response_values(models.value, &seqs, &attention, p, r)?;
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
    let raw = crate::reward::rewards(models.reward, &rm_seqs, cfg.pad_id)?.to_device(Device::Cpu);
    let raw_scores: Vec<f64> = Vec::<f32>::try_from(&raw)?
        .into_iter()
        .map(f64::from)
        .collect();
    if let Some(i) = raw_scores.iter().position(|s| !s.is_finite()) {
        return Err(TrainError::Invalid(format!(
            "the reward model returned {} for rollout {i}; it is broken (NaN weights?)",
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
        seqs,
        attention,
        responses,
        mask,
        prompt_len: p,
        logprobs,
        ref_logprobs,
        values,
        raw_scores,
        scores: Tensor::from_slice(&scores).to_device(device),
        response_ids,
        ended,
    })
}
