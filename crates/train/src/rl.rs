//! PPO's maths as small pure functions on tensors: masked statistics and whitening, GAE, the KL
//! estimators and the KL-penalised reward, the clipped policy and value losses, entropy and
//! log-probs from logits, and the KL coefficient's controller. They follow TRL's `ppo_trainer.py`
//! helpers and "The N Implementation Details of RLHF with PPO" (Huang et al. 2023); each has a
//! hand-computed test in `tests/rl_math.rs`.
//!
//! Not here: rollouts, the PPO step and its phases, anything that holds a model (the PPO stage).
//!
//! Shapes: B batch (episodes), T response tokens, V vocab. A (B, T) tensor comes with a `mask`
//! (B, T) of 0/1 floats marking response tokens. Masked-out entries are dropped with `where`, not
//! multiplied by the mask, so padding holding inf or NaN stays out of every result. Inputs are f32
//! or f64 and outputs keep their kind; the tensors of one call must share shape, kind and device,
//! else [`TrainError::Invalid`] names the function and the mismatch.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};

/// What every function here assumes: `values` share a floating kind, shape and device; `mask`,
/// when given, has their shape and device (any kind: non-zero means "keep").
fn check(op: &str, values: &[(&str, &Tensor)], mask: Option<&Tensor>) -> Result<()> {
    let bad = |msg: String| -> Result<()> { Err(TrainError::Invalid(format!("{op}: {msg}"))) };
    let (first, x) = values[0];
    if !x.is_floating_point() {
        return bad(format!("{first} is {:?}, expected f32 or f64", x.kind()));
    }
    for &(name, t) in &values[1..] {
        if t.kind() != x.kind() {
            return bad(format!(
                "{name} is {:?} but {first} is {:?}",
                t.kind(),
                x.kind()
            ));
        }
    }
    for (name, t) in values[1..].iter().copied().chain(mask.map(|m| ("mask", m))) {
        if t.size() != x.size() {
            return bad(format!(
                "{name} has shape {:?} but {first} has {:?}",
                t.size(),
                x.size()
            ));
        }
        if t.device() != x.device() {
            return bad(format!(
                "{name} is on {:?} but {first} on {:?}",
                t.device(),
                x.device()
            ));
        }
    }
    Ok(())
}

/// Errors unless `value` is finite and at least `min` (`strict`: above it).
fn check_scalar(op: &str, name: &str, value: f64, min: f64, strict: bool) -> Result<()> {
    let ok = value.is_finite() && if strict { value > min } else { value >= min };
    if ok {
        return Ok(());
    }
    let rel = if strict { ">" } else { ">=" };
    Err(TrainError::Invalid(format!(
        "{op}: {name} = {value}, expected a finite value {rel} {min}"
    )))
}

/// `x` where `mask` is non-zero, 0 elsewhere.
fn keep(x: &Tensor, mask: &Tensor) -> Tensor {
    x.where_scalarother(&mask.ne(0.0), 0.0)
}

/// Σ x over the mask: a scalar. `x`, `mask`: (B, T), or any two equal shapes.
pub fn masked_sum(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check("masked_sum", &[("x", x)], Some(mask))?;
    Ok(keep(x, mask).sum(x.kind()))
}

/// Σ x·mask / Σ mask: a scalar. An all-zero mask gives NaN (0/0), which the trainer's NaN stop
/// reports; no check here, as one would cost a device sync per call.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check("masked_mean", &[("x", x)], Some(mask))?;
    Ok(keep(x, mask).sum(x.kind()) / mask.ne(0.0).sum(x.kind()))
}

/// Masked sum over `dim`: `x`, `mask` (B, T) → (B,) for dim 1.
pub fn masked_sum_dim(x: &Tensor, mask: &Tensor, dim: i64) -> Result<Tensor> {
    check("masked_sum_dim", &[("x", x)], Some(mask))?;
    Ok(keep(x, mask).f_sum_dim_intlist(dim, false, x.kind())?)
}

/// The masked mean along `dim`: (B, T) with dim 1 → (B,), one mean per row. A row with nothing
/// masked gives NaN.
pub fn masked_mean_dim(x: &Tensor, mask: &Tensor, dim: i64) -> Result<Tensor> {
    check("masked_mean_dim", &[("x", x)], Some(mask))?;
    let k = x.kind();
    let sum = keep(x, mask).f_sum_dim_intlist(dim, false, k)?;
    Ok(sum / mask.ne(0.0).f_sum_dim_intlist(dim, false, k)?)
}

/// The masked variance, a scalar: the mean of (x − mean)² over the mask, times n/(n−1) when
/// `unbiased` (Bessel's correction, as TRL's `masked_var`). Errors when the mask selects fewer
/// than 1 (2 if unbiased) entries rather than returning NaN or inf.
pub fn masked_var(x: &Tensor, mask: &Tensor, unbiased: bool) -> Result<Tensor> {
    check("masked_var", &[("x", x)], Some(mask))?;
    Ok(mean_var("masked_var", x, mask, unbiased)?.1)
}

/// The masked (mean, variance), both scalars; reads the count back from the device.
fn mean_var(op: &str, x: &Tensor, mask: &Tensor, unbiased: bool) -> Result<(Tensor, Tensor)> {
    let n = mask.ne(0.0).sum(Kind::Double).double_value(&[]);
    let need = if unbiased { 2.0 } else { 1.0 };
    if n < need {
        return Err(TrainError::Invalid(format!(
            "{op}: the mask selects {n} entries; a{} variance needs at least {need}",
            if unbiased { "n unbiased" } else { "" }
        )));
    }
    let k = x.kind();
    let mean = keep(x, mask).sum(k) / n;
    let var = keep(&(x - &mean).square(), mask).sum(k) / n;
    let var = if unbiased { var * (n / (n - 1.0)) } else { var };
    Ok((mean, var))
}

/// `(x − mean) / sqrt(var + 1e-8)` with the unbiased mean and variance of the masked entries
/// (TRL's `masked_whiten`); `shift_mean = false` adds the mean back, keeping the values' sign and
/// offset: the N-details recipe whitens rewards that way and advantages with the shift. Masked-out
/// entries are 0. `x`, `mask`: (B, T) → (B, T).
pub fn masked_whiten(x: &Tensor, mask: &Tensor, shift_mean: bool) -> Result<Tensor> {
    check("masked_whiten", &[("x", x)], Some(mask))?;
    let (mean, var) = mean_var("masked_whiten", x, mask, true)?;
    let whitened = (x - &mean) * (var + 1e-8).rsqrt();
    let whitened = if shift_mean {
        whitened
    } else {
        whitened + mean
    };
    Ok(keep(&whitened, mask))
}

/// Errors unless each row's mask is one contiguous run of ones (a response, then padding): GAE
/// reads "masked out after the run" as "the episode has ended", which a hole would break.
fn check_contiguous(op: &str, mask: &Tensor) -> Result<()> {
    let m = mask.ne(0.0).to_kind(Kind::Int64); // (B, T)
    let (b, t) = m.size2()?;
    if b == 0 || t == 0 {
        return Ok(());
    }
    // Starts of runs: 0 → 1 steps, counting a 1 in column 0 as one.
    let before = Tensor::cat(&[m.zeros_like().narrow(1, 0, 1), m.narrow(1, 0, t - 1)], 1);
    let starts = (&m - before)
        .clamp_min(0)
        .sum_dim_intlist(1, false, Kind::Int64); // (B,)
    let worst = starts.max().int64_value(&[]);
    if worst > 1 {
        return Err(TrainError::Invalid(format!(
            "{op}: a mask row has {worst} separate runs of ones; each row must mark one \
             contiguous response followed by padding"
        )));
    }
    Ok(())
}

/// Generalised advantage estimation (Schulman et al. 2016) on per-token `rewards` and `values`
/// (B, T): δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γλ A_{t+1}, backwards over T with the
/// value after each row's last masked token taken as 0 (the episode ends at EOS). Returns
/// `(advantages, returns)`, both (B, T), with returns = A + V; both are 0 outside the mask.
///
/// `mask` must be one contiguous run of ones per row (right-padded responses); γ, λ in [0, 1].
/// Computed without gradient on detached inputs: advantages and returns are PPO's fixed targets.
pub fn gae(
    rewards: &Tensor,
    values: &Tensor,
    mask: &Tensor,
    gamma: f64,
    lambda: f64,
) -> Result<(Tensor, Tensor)> {
    check(
        "gae",
        &[("rewards", rewards), ("values", values)],
        Some(mask),
    )?;
    check_scalar("gae", "gamma", gamma, 0.0, false)?;
    check_scalar("gae", "lambda", lambda, 0.0, false)?;
    if gamma > 1.0 || lambda > 1.0 {
        return Err(TrainError::Invalid(format!(
            "gae: gamma = {gamma}, lambda = {lambda}; both must lie in [0, 1]"
        )));
    }
    let (b, t) = rewards.size2()?;
    check_contiguous("gae", mask)?;
    let _guard = tch::no_grad_guard();
    // Zero past each response, so V_{t+1} = 0 after the last token and δ = 0 on the padding.
    let r = keep(&rewards.detach(), mask); // (B, T)
    let v = keep(&values.detach(), mask); // (B, T)
    let mut next_value = Tensor::zeros([b], (r.kind(), r.device())); // (B,)
    let mut next_adv = next_value.zeros_like(); // (B,)
    let mut advantages = Vec::with_capacity(t as usize);
    for i in (0..t).rev() {
        let value = v.select(1, i); // (B,)
        let delta = r.select(1, i) + &next_value * gamma - &value;
        next_adv = delta + next_adv * (gamma * lambda);
        advantages.push(next_adv.shallow_clone());
        next_value = value;
    }
    advantages.reverse();
    // Before a row's run (a left offset) the loop leaves γ-discounted values: mask them too.
    let advantages = keep(&Tensor::stack(&advantages, 1), mask); // (B, T)
    let returns = keep(&(&advantages + &v), mask); // (B, T)
    Ok((advantages, returns))
}

/// Per-token estimators of KL(π ‖ π_ref) from the log-probs of tokens sampled from π
/// (Schulman, "Approximating KL Divergence", 2020), with r = π_ref(x) / π(x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// −log r = log π − log π_ref: unbiased, high variance, negative on some tokens. The
    /// penalty of Ziegler et al. and InstructGPT, and TRL's default.
    #[default]
    K1,
    /// ½ (log r)²: biased but low variance and ≥ 0; close to the KL while π ≈ π_ref.
    K2,
    /// (r − 1) − log r: unbiased, ≥ 0 and low variance. Not clamped: r = exp(log π_ref − log π)
    /// overflows only when π gave its own sample a vanishing probability.
    K3,
}

impl fmt::Display for KlEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::K1 => "k1",
            Self::K2 => "k2",
            Self::K3 => "k3",
        })
    }
}

impl FromStr for KlEstimator {
    type Err = TrainError;

    /// `k1`, `k2` or `k3`, any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "k1" => Ok(Self::K1),
            "k2" => Ok(Self::K2),
            "k3" => Ok(Self::K3),
            _ => Err(TrainError::Invalid(format!(
                "unknown KL estimator `{s}`: expected k1, k2 or k3"
            ))),
        }
    }
}

/// The KL estimate of every token: `logp`, `ref_logp` (B, T) → (B, T), differentiable, not
/// masked (see [`rewards_with_kl`] for the masked penalty).
pub fn kl_per_token(logp: &Tensor, ref_logp: &Tensor, est: KlEstimator) -> Result<Tensor> {
    check(
        "kl_per_token",
        &[("logp", logp), ("ref_logp", ref_logp)],
        None,
    )?;
    Ok(match est {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K2 => (logp - ref_logp).square() * 0.5,
        KlEstimator::K3 => {
            let log_r = ref_logp - logp;
            // expm1 keeps (r − 1) exact for r near 1, where the estimate is tiny.
            log_r.expm1() - log_r
        }
    })
}

/// PPO's clipped surrogate objective and its diagnostics.
#[derive(Debug)]
pub struct PolicyLoss {
    /// Scalar, differentiable with respect to `logp`.
    pub loss: Tensor,
    /// Share of masked tokens whose clipped term is strictly the larger (so has zero gradient).
    pub clip_fraction: f64,
    /// Masked mean of ½ (log π − log π_old)², the K2 estimate of KL(π_old ‖ π).
    pub approx_kl: f64,
}

/// The clipped policy loss (Schulman et al. 2017, eq. 7, negated): with ratio = exp(logp −
/// old_logp), the masked mean of max(−A·ratio, −A·clamp(ratio, 1 − clip, 1 + clip)). `logp`,
/// `old_logp`, `advantages`, `mask`: (B, T); `old_logp` and `advantages` are detached; clip > 0.
pub fn policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<PolicyLoss> {
    let values = [
        ("logp", logp),
        ("old_logp", old_logp),
        ("advantages", advantages),
    ];
    check("policy_loss", &values, Some(mask))?;
    check_scalar("policy_loss", "clip", clip, 0.0, true)?;
    let log_ratio = logp - old_logp.detach(); // (B, T)
    let ratio = log_ratio.exp();
    let neg_adv = -advantages.detach();
    let unclipped = &neg_adv * &ratio;
    let clipped = &neg_adv * ratio.clamp(1.0 - clip, 1.0 + clip);
    let loss = masked_mean(&unclipped.maximum(&clipped), mask)?;
    let _guard = tch::no_grad_guard();
    let was_clipped = clipped.gt_tensor(&unclipped).to_kind(logp.kind());
    let clip_fraction = masked_mean(&was_clipped, mask)?.double_value(&[]);
    let approx_kl = masked_mean(&(log_ratio.square() * 0.5), mask)?.double_value(&[]);
    Ok(PolicyLoss {
        loss,
        clip_fraction,
        approx_kl,
    })
}

/// The clipped value loss and how often clipping decided it.
#[derive(Debug)]
pub struct ValueLoss {
    /// Scalar, differentiable with respect to `values`.
    pub loss: Tensor,
    /// Share of masked tokens whose clipped error is strictly the larger.
    pub clip_fraction: f64,
}

/// PPO's clipped value loss (as in OpenAI baselines and TRL): with v_clipped = old_values +
/// clamp(values − old_values, −clip, clip), ½ · masked mean of max((values − returns)²,
/// (v_clipped − returns)²). All tensors (B, T); `old_values` and `returns` detached; clip > 0.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<ValueLoss> {
    let all = [
        ("values", values),
        ("old_values", old_values),
        ("returns", returns),
    ];
    check("value_loss", &all, Some(mask))?;
    check_scalar("value_loss", "clip", clip, 0.0, true)?;
    let (old, ret) = (old_values.detach(), returns.detach());
    let v_clipped = &old + (values - &old).clamp(-clip, clip); // (B, T)
    let unclipped = (values - &ret).square();
    let clipped = (v_clipped - &ret).square();
    let loss = masked_mean(&unclipped.maximum(&clipped), mask)? * 0.5;
    let _guard = tch::no_grad_guard();
    let was_clipped = clipped.gt_tensor(&unclipped).to_kind(values.kind());
    let clip_fraction = masked_mean(&was_clipped, mask)?.double_value(&[]);
    Ok(ValueLoss {
        loss,
        clip_fraction,
    })
}

/// The entropy of each token's distribution: logsumexp(z) − Σ softmax(z)·z over the vocabulary.
/// `logits` (B, T, V) → (B, T).
pub fn entropy_from_logits(logits: &Tensor) -> Result<Tensor> {
    check("entropy_from_logits", &[("logits", logits)], None)?;
    let k = logits.kind();
    let p = logits.f_softmax(-1, k)?; // (B, T, V)
    Ok(logits.f_logsumexp([-1], false)? - (p * logits).sum_dim_intlist(-1, false, k))
}

/// log softmax(logits / temperature) read at `tokens`: `logits` (B, T, V), `tokens` (B, T) int64
/// → (B, T). Rescoring with the sampling temperature makes these the log-probs the samples were
/// drawn with (N-details #3). Computed as z_token − logsumexp(z), which never materialises the
/// (B, T, V) log-softmax.
pub fn logprobs_from_logits(logits: &Tensor, tokens: &Tensor, temperature: f64) -> Result<Tensor> {
    let op = "logprobs_from_logits";
    check(op, &[("logits", logits)], None)?;
    check_scalar(op, "temperature", temperature, 0.0, true)?;
    Ok(rlhf_model::token_logprobs(logits, tokens, temperature)?)
}

/// The adaptive KL coefficient β of Ziegler et al. 2019 (§2.2): after each batch,
/// e = clip(KL / target − 1, −0.2, 0.2) and β ← β (1 + e · n_steps / horizon), so β follows the
/// measured KL towards `target` by at most 20 % of n_steps / horizon per update. Serialisable so
/// a PPO checkpoint can resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveKlController {
    /// The current β.
    pub value: f64,
    /// The KL (nats per episode) β steers towards.
    pub target: f64,
    /// Episodes over which a persistent error changes β by e (Ziegler et al.: 10 000).
    pub horizon: f64,
}

impl AdaptiveKlController {
    /// Errors unless init ≥ 0, target > 0 and horizon > 0, all finite.
    pub fn new(init: f64, target: f64, horizon: f64) -> Result<Self> {
        let op = "AdaptiveKlController::new";
        check_scalar(op, "init", init, 0.0, false)?;
        check_scalar(op, "target", target, 0.0, true)?;
        check_scalar(op, "horizon", horizon, 0.0, true)?;
        Ok(Self {
            value: init,
            target,
            horizon,
        })
    }

    /// One update from the batch's mean KL; `n_steps` counts the episodes since the last update
    /// (TRL passes the batch size). A non-finite KL leaves β unchanged: the NaN stop reports it,
    /// and the checkpointed β stays usable.
    pub fn update(&mut self, current_kl: f64, n_steps: u64) {
        if !current_kl.is_finite() {
            return;
        }
        let error = (current_kl / self.target - 1.0).clamp(-0.2, 0.2);
        self.value *= 1.0 + error * n_steps as f64 / self.horizon;
    }
}

/// The KL coefficient: fixed, or adapted towards a target KL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlControl {
    Fixed(f64),
    Adaptive(AdaptiveKlController),
}

impl KlControl {
    /// `target: None` fixes β at `init` (`horizon` unused); `Some(kl)` adapts it towards kl.
    pub fn new(init: f64, target: Option<f64>, horizon: f64) -> Result<Self> {
        match target {
            None => {
                check_scalar("KlControl::new", "init", init, 0.0, false)?;
                Ok(Self::Fixed(init))
            }
            Some(target) => Ok(Self::Adaptive(AdaptiveKlController::new(
                init, target, horizon,
            )?)),
        }
    }

    /// The current β.
    pub fn value(&self) -> f64 {
        match self {
            Self::Fixed(beta) => *beta,
            Self::Adaptive(c) => c.value,
        }
    }

    /// Adapts β (see [`AdaptiveKlController::update`]); a fixed β ignores it.
    pub fn update(&mut self, current_kl: f64, n_steps: u64) {
        if let Self::Adaptive(c) = self {
            c.update(current_kl, n_steps);
        }
    }
}

/// The per-token reward of RLHF's PPO (Ziegler et al. 2019; InstructGPT): −β · KL on every
/// response token, plus the reward model's `score` (B,) at each row's last masked token (the
/// EOS). `logp`, `ref_logp`, `mask` (B, T). Returns `(rewards, kl)`, both (B, T) and 0 outside
/// the mask, computed without gradient. A row with an all-zero mask has no last token: its score
/// is dropped and its rewards are all 0.
pub fn rewards_with_kl(
    score: &Tensor,
    logp: &Tensor,
    ref_logp: &Tensor,
    mask: &Tensor,
    beta: f64,
    est: KlEstimator,
) -> Result<(Tensor, Tensor)> {
    let op = "rewards_with_kl";
    check(op, &[("logp", logp), ("ref_logp", ref_logp)], Some(mask))?;
    check_scalar(op, "beta", beta, 0.0, false)?;
    let (b, t) = logp.size2()?;
    if score.size() != [b] || score.kind() != logp.kind() || score.device() != logp.device() {
        return Err(TrainError::Invalid(format!(
            "{op}: score is {:?} {:?} on {:?}, expected ({b},) {:?} on {:?} like logp",
            score.size(),
            score.kind(),
            score.device(),
            logp.kind(),
            logp.device()
        )));
    }
    let _guard = tch::no_grad_guard();
    let kl = keep(
        &kl_per_token(&logp.detach(), &ref_logp.detach(), est)?,
        mask,
    ); // (B, T)
    let kept = mask.ne(0.0); // (B, T)
    // The last masked column of each row (-1 marks the rest); 0 for an empty row.
    let cols = Tensor::arange(t, (Kind::Int64, logp.device())); // (T,)
    let last = cols.where_scalarother(&kept, -1).f_argmax(1, true)?; // (B, 1)
    let score = score
        .detach()
        .where_scalarother(&kept.any_dim(1, false), 0.0); // (B,)
    let rewards = (&kl * -beta).scatter_add(1, &last, &score.unsqueeze(1)); // (B, T)
    Ok((rewards, kl))
}
