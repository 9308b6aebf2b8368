//! Per-row sampling for the engine's batches: each row's temperature, top-p and presence and
//! frequency penalties as (B, 1) tensors kept aligned with the active rows, greedy rows by argmax,
//! sampled rows by inverse-CDF draws from each row's own seeded stream (so a row's tokens do not
//! depend on its neighbours), and the log-probabilities the API reports.
//!
//! Shapes: B active rows, V vocab, K top log-probs.

use rand::Rng;
use rlhf_model::Pretrained;
use rlhf_model::sample::inverse_cdf;
use tch::{Device, Kind, Tensor};

use crate::engine::{Params, Row, TokenInfo};
use crate::error::{Result, ServeError};

/// Per-row sampling settings as (B, 1) tensors, kept aligned with the active rows.
pub(crate) struct Knobs {
    temperature: Tensor,
    top_p: Tensor,
    greedy: Tensor,
    all_greedy: bool,
    any_top_p: bool,
    /// (B, V) token counts, only when some row has a presence or frequency penalty.
    counts: Option<Tensor>,
    presence: Tensor,
    frequency: Tensor,
    /// (B, V) logit biases, only when some row has one.
    bias: Option<Tensor>,
    top_k: i64,
}

/// The tokens picked at one step with their log-probabilities, on the CPU.
pub(crate) struct Picked {
    tokens: Vec<i64>,
    logprob: Vec<f32>,
    /// (B, K) alternatives.
    top_ids: Vec<i64>,
    top_lp: Vec<f32>,
    k: usize,
}

impl Picked {
    /// Row `slot`'s token with its `want` most likely alternatives.
    pub(crate) fn info(&self, slot: usize, want: usize, pre: &Pretrained) -> Result<TokenInfo> {
        let text = |id: i64| {
            pre.tokenizer
                .decode(&[id as u32], false)
                .map_err(ServeError::from)
        };
        let top = (0..want.min(self.k))
            .map(|i| {
                let j = slot * self.k + i;
                Ok((text(self.top_ids[j])?, self.top_lp[j]))
            })
            .collect::<Result<_>>()?;
        Ok(TokenInfo {
            id: self.tokens[slot],
            text: text(self.tokens[slot])?,
            logprob: self.logprob[slot],
            top,
        })
    }
}

impl Knobs {
    pub(crate) fn new(params: &[&Params], vocab: i64, dev: Device) -> Self {
        let col = |f: &dyn Fn(&Params) -> f64| {
            let v: Vec<f32> = params.iter().map(|p| f(p) as f32).collect();
            Tensor::from_slice(&v).unsqueeze(1).to_device(dev) // (B, 1)
        };
        let greedy: Vec<bool> = params.iter().map(|p| p.temperature == 0.0).collect();
        let penalised = params
            .iter()
            .any(|p| p.presence_penalty != 0.0 || p.frequency_penalty != 0.0);
        let bias = params.iter().any(|p| !p.logit_bias.is_empty()).then(|| {
            let mut b = vec![0f32; params.len() * vocab as usize];
            for (row, p) in params.iter().enumerate() {
                for &(id, v) in &p.logit_bias {
                    if (0..vocab).contains(&id) {
                        b[row * vocab as usize + id as usize] += v;
                    }
                }
            }
            Tensor::from_slice(&b)
                .reshape([params.len() as i64, vocab])
                .to_device(dev)
        });
        Self {
            // Greedy rows divide by 1: their logits are only used through the argmax.
            temperature: col(&|p| {
                if p.temperature == 0.0 {
                    1.0
                } else {
                    p.temperature
                }
            }),
            top_p: col(&|p| p.top_p),
            greedy: Tensor::from_slice(&greedy).to_device(dev),
            all_greedy: greedy.iter().all(|&g| g),
            any_top_p: params.iter().any(|p| p.top_p < 1.0),
            counts: penalised
                .then(|| Tensor::zeros([params.len() as i64, vocab], (Kind::Float, dev))),
            presence: col(&|p| p.presence_penalty),
            frequency: col(&|p| p.frequency_penalty),
            bias,
            top_k: params
                .iter()
                .filter_map(|p| p.logprobs)
                .max()
                .map_or(-1, |k| k as i64),
        }
    }

    /// Adds the rows of `other` after these.
    pub(crate) fn append(&mut self, other: Knobs) {
        let cat = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 0);
        let (n, m) = (self.greedy.size()[0], other.greedy.size()[0]);
        // (B, V) tables that only exist when some row needs them: a missing side is zeros.
        let dev = self.greedy.device();
        let stack = |a: Option<Tensor>, b: Option<Tensor>| match (a, b) {
            (None, None) => None,
            (a, b) => {
                let vocab = a.as_ref().or(b.as_ref()).map_or(0, |t| t.size()[1]);
                let zeros = |rows| Tensor::zeros([rows, vocab], (Kind::Float, dev));
                Some(cat(
                    &a.unwrap_or_else(|| zeros(n)),
                    &b.unwrap_or_else(|| zeros(m)),
                ))
            }
        };
        self.counts = stack(self.counts.take(), other.counts);
        self.bias = stack(self.bias.take(), other.bias);
        self.temperature = cat(&self.temperature, &other.temperature);
        self.top_p = cat(&self.top_p, &other.top_p);
        self.greedy = cat(&self.greedy, &other.greedy);
        self.presence = cat(&self.presence, &other.presence);
        self.frequency = cat(&self.frequency, &other.frequency);
        self.all_greedy &= other.all_greedy;
        self.any_top_p |= other.any_top_p;
        self.top_k = self.top_k.max(other.top_k);
    }

    pub(crate) fn select(&mut self, index: &Tensor) {
        for t in [
            &mut self.temperature,
            &mut self.top_p,
            &mut self.greedy,
            &mut self.presence,
            &mut self.frequency,
        ] {
            *t = t.index_select(0, index);
        }
        for t in [&mut self.counts, &mut self.bias].into_iter().flatten() {
            *t = t.index_select(0, index);
        }
    }

    /// Counts the tokens just chosen (B, 1) for the penalties.
    pub(crate) fn count(&mut self, next: &Tensor) {
        if let Some(c) = &mut self.counts {
            let ones = Tensor::ones(next.size(), (Kind::Float, next.device()));
            let _ = c.scatter_add_(1, next, &ones);
        }
    }

    /// The next token of every active row (B,), and log-probabilities when any row wants them.
    pub(crate) fn choose(
        &self,
        logits: &Tensor,
        rows: &mut [Row],
        active: &[usize],
    ) -> Result<(Tensor, Option<Picked>)> {
        let mut x = logits.shallow_clone(); // (B, V)
        if let Some(bias) = &self.bias {
            x = &x + bias; // not `+=`: x shares storage with the raw logits
        }
        if let Some(counts) = &self.counts {
            // OpenAI's definition: subtract frequency × count and presence × [count > 0].
            x = x - &self.frequency * counts - &self.presence * counts.gt(0.0).to_kind(Kind::Float);
        }
        let greedy_tok = x.argmax(-1, false);
        let tok = if self.all_greedy {
            greedy_tok
        } else {
            let mut scaled = &x / &self.temperature;
            if self.any_top_p {
                let (sorted, idx) = scaled.sort(-1, true);
                let probs = sorted.softmax(-1, Kind::Float);
                // Keep the token that crosses top_p: drop one once the mass before it exceeds p.
                let remove_sorted = (probs.cumsum(-1, Kind::Float) - &probs).gt_tensor(&self.top_p);
                let remove = remove_sorted.scatter(1, &idx, &remove_sorted);
                scaled = scaled.masked_fill(&remove, f64::NEG_INFINITY);
            }
            let u: Vec<f32> = active
                .iter()
                .map(|&r| rows[r].rng.random::<f32>())
                .collect();
            let u = Tensor::from_slice(&u).to_device(x.device());
            let sampled = inverse_cdf(&scaled.softmax(-1, Kind::Float), &u);
            greedy_tok.where_self(&self.greedy, &sampled)
        };
        if self.top_k < 0 {
            return Ok((tok, None));
        }
        let logp = logits.log_softmax(-1, Kind::Float);
        let lp = logp.gather(1, &tok.unsqueeze(1), false).squeeze_dim(1);
        let k = self.top_k.min(logp.size()[1]);
        let (top_lp, top_ids) = logp.topk(k.max(1), -1, true, true);
        let cpu = |t: &Tensor| t.to_device(Device::Cpu).reshape([-1]);
        let picked = Picked {
            tokens: Vec::<i64>::try_from(&cpu(&tok))?,
            logprob: Vec::<f32>::try_from(&cpu(&lp))?,
            top_ids: Vec::<i64>::try_from(&cpu(&top_ids))?,
            top_lp: Vec::<f32>::try_from(&cpu(&top_lp))?,
            k: k.max(1) as usize,
        };
        Ok((tok, Some(picked)))
    }
}
