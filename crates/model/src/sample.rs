//! Batched generation with the KV cache: greedy or temperature sampling with optional top-k and
//! top-p, stopping at EOS or at a caller-supplied stop condition (e.g. stop strings), seeded and
//! reproducible, returning each token's log-probability (PPO needs them).
//!
//! Not here: text decoding and stop *strings* (the caller decodes and answers `stop`), chat
//! templates (the tokenizer crate).
//!
//! Shapes: B batch, P prompt length (padded), V vocab.

use tch::{Kind, Tensor};

use crate::batch;
use crate::error::{ModelError, Result};
use crate::gpt::{Batch, Gpt};

/// How the next token is chosen. Temperature 0 is `Greedy`; there is no way to ask for top-k
/// with greedy decoding, because it would mean nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    Random {
        temperature: f64,
        top_k: Option<i64>,
        top_p: Option<f64>,
    },
}

impl Sampling {
    /// Validates user-facing flags: temperature 0 means greedy.
    pub fn new(temperature: f64, top_k: Option<i64>, top_p: Option<f64>) -> Result<Self> {
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ModelError::Invalid(format!(
                "temperature must be >= 0, got {temperature}"
            )));
        }
        if let Some(k) = top_k.filter(|&k| k < 1) {
            return Err(ModelError::Invalid(format!("top-k must be >= 1, got {k}")));
        }
        if let Some(p) = top_p.filter(|&p| !(p > 0.0 && p <= 1.0)) {
            return Err(ModelError::Invalid(format!(
                "top-p must be in (0, 1], got {p}"
            )));
        }
        if temperature == 0.0 {
            return Ok(Sampling::Greedy);
        }
        Ok(Sampling::Random {
            temperature,
            top_k,
            top_p: top_p.filter(|&p| p < 1.0),
        })
    }

    /// The temperature the returned log-probabilities are computed at.
    pub fn temperature(&self) -> f64 {
        match self {
            Sampling::Greedy => 1.0,
            Sampling::Random { temperature, .. } => *temperature,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seeds libtorch's generator before sampling; `None` leaves it as it is.
    pub seed: Option<u64>,
    /// Tokens that end a sequence (kept in the output, like transformers).
    pub eos_token_ids: Vec<i64>,
    /// Token used to left-pad prompts; never attended to.
    pub pad_token_id: i64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            // Enough for the task world's answers; long generations are asked for explicitly.
            max_new_tokens: 64,
            sampling: Sampling::Greedy,
            seed: None,
            eos_token_ids: Vec::new(),
            pad_token_id: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Eos,
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(&self) -> &'static str {
        match self {
            Finish::Eos | Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// One sampled continuation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// New tokens only (EOS included when it ended the sequence).
    pub token_ids: Vec<i64>,
    /// log p(token) under the softmax of logits / temperature (before top-k/top-p filtering).
    pub logprobs: Vec<f32>,
    pub finish: Finish,
}

/// Left-pads prompts into ids (B, P) and mask (B, P) on `device` (`batch::pad`), refusing an
/// empty batch or an empty prompt (the last prompt token predicts the first new one).
pub fn left_pad(prompts: &[Vec<i64>], pad: i64, device: tch::Device) -> Result<(Tensor, Tensor)> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Invalid(
            "every prompt needs at least one token".into(),
        ));
    }
    let (ids, mask) = batch::pad(prompts, pad, batch::Side::Left);
    Ok((ids.to_device(device), mask.to_device(device)))
}

/// Applies temperature, top-k and top-p (in transformers' order) to logits (B, V).
fn filter_logits(
    logits: &Tensor,
    temperature: f64,
    top_k: Option<i64>,
    top_p: Option<f64>,
) -> Tensor {
    let mut logits = logits / temperature;
    let v = logits.size()[1];
    if let Some(k) = top_k.filter(|&k| k < v) {
        let (kth, _) = logits.topk(k, -1, true, true);
        let threshold = kth.narrow(1, k - 1, 1); // (B, 1)
        logits = logits.masked_fill(&logits.lt_tensor(&threshold), f64::NEG_INFINITY);
    }
    if let Some(p) = top_p {
        let (sorted, idx) = logits.sort(-1, true);
        let probs = sorted.softmax(-1, Kind::Float);
        // Drop a token once the mass *before* it already exceeds p: the token that crosses the
        // threshold is kept, so at least one token always survives.
        let remove_sorted = (probs.cumsum(-1, Kind::Float) - &probs).gt(p);
        let remove = remove_sorted.scatter(1, &idx, &remove_sorted);
        logits = logits.masked_fill(&remove, f64::NEG_INFINITY);
    }
    logits
}

/// Chooses the next token (B,) and its log-probability (B,) from last-position logits (B, V).
///
/// The log-probability is `x[token] − logsumexp(x)` for the scaled logits x, with the
/// log-sum-exp built from the row maximum and the sum of `exp(x − max)`, which are also the
/// unnormalised probabilities drawn from: a full `log_softmax` over the vocabulary cost twice as
/// much.
fn choose(logits: &Tensor, sampling: &Sampling) -> (Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    let scaled = match sampling.temperature() {
        t if t > 0.0 && t != 1.0 => &logits / t,
        _ => logits.shallow_clone(),
    };
    let max = scaled.amax([-1].as_slice(), true); // (B, 1)
    let weights = (&scaled - &max).exp(); // (B, V), the largest is 1
    let log_total = &max
        + weights
            .sum_dim_intlist([-1].as_slice(), true, Kind::Float)
            .log();
    let tok = match *sampling {
        Sampling::Greedy => scaled.argmax(-1, false),
        Sampling::Random {
            temperature,
            top_k,
            top_p,
        } => {
            if top_k.is_none() && top_p.is_none() {
                draw(&weights)
            } else {
                draw(&filter_logits(&logits, temperature, top_k, top_p).softmax(-1, Kind::Float))
            }
        }
    };
    let lp = scaled.gather(1, &tok.unsqueeze(1), false) - log_total;
    (tok, lp.squeeze_dim(1))
}

/// One token per row of `probs` (B, V), drawn with libtorch's generator (seeded by `generate`).
///
/// libtorch's `multinomial` draws one sample by the exponential race (an exponential per
/// vocabulary entry, then an argmax), with or without replacement: ~24 ms for 16 × 49152
/// probabilities on 2 cores, a fifth of a SmolLM2 decoding step. Inverting the CDF takes ~1 ms.
fn draw(probs: &Tensor) -> Tensor {
    let u = Tensor::rand([probs.size()[0]], (Kind::Double, probs.device()));
    inverse_cdf(probs, &u)
}

/// Inverse-CDF sampling: for each row of `probs` (B, V), non-negative and not necessarily
/// normalised, the token whose cumulative interval holds `u · total`, for uniforms `u` (B,) in
/// [0, 1). The sums run in f64, so `u · total` stays below the last sum and a token of
/// probability 0 (top-k or top-p removed it) is never drawn: it repeats the sum before it, and
/// the search finds the first index whose sum exceeds `u · total`.
pub fn inverse_cdf(probs: &Tensor, u: &Tensor) -> Tensor {
    let v = probs.size()[1];
    let cdf = probs.to_kind(Kind::Double).cumsum(-1, Kind::Double); // (B, V)
    let target = u.to_kind(Kind::Double).reshape([-1, 1]) * cdf.narrow(1, v - 1, 1); // (B, 1)
    target
        .searchsorted(&cdf, false, true, "right", None::<Tensor>)
        .squeeze_dim(1)
        .clamp_max(v - 1)
}

/// Generates a continuation for every prompt. `stop(row, tokens_so_far)` may end a row early
/// (the caller decodes and looks for stop strings there).
pub fn generate(
    model: &Gpt,
    prompts: &[Vec<i64>],
    cfg: &GenerateConfig,
    mut stop: impl FnMut(usize, &[i64]) -> bool,
) -> Result<Vec<Generation>> {
    let device = model.device();
    let (ids, mask) = left_pad(prompts, cfg.pad_token_id, device)?;
    let (b, p) = ids.size2()?;
    let capacity = p + cfg.max_new_tokens as i64;
    if capacity > model.cfg.max_positions {
        return Err(ModelError::Invalid(format!(
            "prompt ({p} tokens) + max_new_tokens ({}) exceeds the model's context of {} tokens",
            cfg.max_new_tokens, model.cfg.max_positions
        )));
    }
    if let Some(seed) = cfg.seed {
        tch::manual_seed(seed as i64);
    }
    let _guard = tch::no_grad_guard();
    // bf16 runs decode from bf16 copies of the weights: half the bytes per token step.
    let _mirrors = model.decode_mirrors();
    let mut cache = model.new_cache(b, capacity);
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            token_ids: vec![],
            logprobs: vec![],
            finish: Finish::Length,
        })
        .collect();
    let mut done = vec![false; b as usize];
    let batch = Batch {
        input_ids: &ids,
        attention_mask: Some(&mask),
    };
    // Only the last position's logits are needed: projecting every prompt position onto the
    // vocabulary would cost more than a whole decoding step for large vocabularies.
    let hidden = model
        .forward_hidden(batch, Some(&mut cache))?
        .select(1, p - 1); // (B, C)
    let mut logits = model.lm_logits(&hidden)?; // (B, V)
    for _ in 0..cfg.max_new_tokens {
        let (tok, lp) = choose(&logits, &cfg.sampling);
        let toks = Vec::<i64>::try_from(&tok.to_device(tch::Device::Cpu))?;
        let lps = Vec::<f32>::try_from(&lp.to_device(tch::Device::Cpu))?;
        for (row, g) in out.iter_mut().enumerate() {
            if done[row] {
                continue;
            }
            g.token_ids.push(toks[row]);
            g.logprobs.push(lps[row]);
            if cfg.eos_token_ids.contains(&toks[row]) {
                (done[row], g.finish) = (true, Finish::Eos);
            } else if stop(row, &g.token_ids) {
                (done[row], g.finish) = (true, Finish::Stop);
            }
        }
        if done.iter().all(|&d| d) || cache.len() == capacity {
            break;
        }
        let next = tok.unsqueeze(1); // (B, 1)
        let batch = Batch {
            input_ids: &next,
            attention_mask: None,
        };
        logits = model.forward(batch, Some(&mut cache))?.select(1, 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(probs: &[f64], u: f64) -> i64 {
        let p = Tensor::from_slice(probs).view([1, -1]).to_kind(Kind::Float);
        i64::try_from(inverse_cdf(&p, &Tensor::from_slice(&[u]))).unwrap()
    }

    #[test]
    fn inverse_cdf_picks_the_interval_holding_u_and_never_a_zero_probability_token() {
        // Cumulative sums 0.1, 0.1, 0.7, 1.0: token 1 has no interval of its own.
        let p = [0.1, 0.0, 0.6, 0.3];
        assert_eq!(pick(&p, 0.0), 0);
        assert_eq!(pick(&p, 0.05), 0);
        assert_eq!(pick(&p, 0.1), 2);
        assert_eq!(pick(&p, 0.69), 2);
        assert_eq!(pick(&p, 0.71), 3);
        assert_eq!(pick(&p, 1.0 - 1e-12), 3);
        // Unnormalised weights, and zeros at the end (removed by top-k / top-p).
        assert_eq!(pick(&[2.0, 0.0, 0.0], 1.0 - 1e-12), 0);
        assert_eq!(pick(&[0.5, 0.5, 0.0, 0.0], 1.0 - 1e-12), 1);
        assert_eq!(pick(&[0.0, 0.0, 3.0], 0.0), 2);
    }

    #[test]
    fn draw_follows_the_probabilities() {
        // Seeded reproducibility is checked end to end by the CLI tests, in their own processes:
        // here libtorch's global generator is shared with tests running on other threads.
        let p = [0.05f32, 0.0, 0.5, 0.25, 0.2];
        let rows = 40_000;
        let probs = Tensor::from_slice(&p).view([1, -1]).repeat([rows, 1]);
        let a = draw(&probs);
        let counts = Vec::<i64>::try_from(a.bincount(None::<Tensor>, 5)).unwrap();
        for (i, (&c, &q)) in counts.iter().zip(&p).enumerate() {
            let q = q as f64;
            let sd = (rows as f64 * q * (1.0 - q)).sqrt();
            assert!(
                (c as f64 - rows as f64 * q).abs() <= 5.0 * sd,
                "token {i}: {c} draws, expected {:.0} ± {sd:.0}",
                rows as f64 * q
            );
        }
        assert_eq!(counts[1], 0, "a zero-probability token was drawn");
    }
}
