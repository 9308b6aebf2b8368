//! What a model says about tokens it is given (teacher forcing): the log-probability of each
//! response token after its prompt, summed per sequence for evaluation, and the scalar a reward
//! model reads at a sequence's last token. PPO, the evaluation library, rank classification,
//! corpus NLL and (next) DPO all call these, so there is one definition of "the log-prob of a
//! response" in the tree.
//!
//! Not here: the tensor layout (`batch.rs`), sampling (`sample.rs`), losses (the train crate).
//!
//! Shapes: B rows, R longest response, C channels, V vocabulary, N sequences.

use tch::{Kind, Tensor};

use crate::batch::{ResponseBatch, Side, pad};
use crate::error::{ModelError, Result};
use crate::gpt::{Batch, Gpt};

/// log softmax(logits / temperature) at `tokens`: (.., V) logits and (..) token ids give (..)
/// log-probabilities, computed as the picked logit minus the log-sum-exp (no (.., V) log-softmax
/// tensor is materialised). Temperature 1 is the model's own distribution; the sampler's
/// log-probs at temperature T are this at T.
pub fn token_logprobs(logits: &Tensor, tokens: &Tensor, temperature: f64) -> Result<Tensor> {
    if !logits.is_floating_point() {
        return Err(ModelError::Invalid(format!(
            "token_logprobs: logits are {:?}, expected a float tensor",
            logits.kind()
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(ModelError::Invalid(format!(
            "token_logprobs: temperature must be > 0, got {temperature}"
        )));
    }
    let size = logits.size();
    if size.is_empty() || tokens.size() != size[..size.len() - 1] {
        return Err(ModelError::Invalid(format!(
            "token_logprobs: tokens have shape {:?}, expected the logits' {size:?} without the \
             last dim",
            tokens.size()
        )));
    }
    let z = if temperature == 1.0 {
        logits.shallow_clone()
    } else {
        logits / temperature
    }; // (.., V)
    let picked = z
        .f_gather(-1, &tokens.unsqueeze(-1), false)?
        .squeeze_dim(-1); // (..)
    Ok(picked - z.logsumexp([-1], false))
}

/// Hidden states (B, R, C) of the positions that predict the response tokens: the window
/// `P − 1 .. P − 1 + R`, whose last layer runs on those rows alone.
pub fn response_hidden(gpt: &Gpt, batch: &ResponseBatch) -> Result<Tensor> {
    let input = Batch {
        input_ids: &batch.seqs,
        attention_mask: batch.left_padded.then_some(&batch.attention),
    };
    gpt.forward_hidden_window(input, batch.prompt_len - 1, batch.response_len())
}

/// Log-probs (B, R) of the response tokens under an LM at `temperature`, and the logits
/// (B, R, V) they came from (PPO's entropy reads them). Padding positions hold values that mean
/// nothing: weigh them with `batch.mask`.
pub fn response_logprobs(
    gpt: &Gpt,
    batch: &ResponseBatch,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    let logits = gpt.lm_logits(&response_hidden(gpt, batch)?)?;
    let logp = token_logprobs(&logits, &batch.responses, temperature)?;
    Ok((logp, logits))
}

/// A scalar-head model's outputs (B, R) before each response token (PPO's values).
pub fn response_scalars(gpt: &Gpt, batch: &ResponseBatch) -> Result<Tensor> {
    gpt.scalar(&response_hidden(gpt, batch)?)
}

/// One sequence's teacher-forced score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceLogprob {
    /// Σ log p(response token | everything before it).
    pub sum: f64,
    /// Response tokens summed over.
    pub tokens: usize,
}

impl SequenceLogprob {
    /// The mean log-prob per token (0 for an empty response).
    pub fn mean(&self) -> f64 {
        self.sum / self.tokens.max(1) as f64
    }
}

/// Summed log-probs of `responses[i]` after `prompts[i]` at `temperature`, without gradients,
/// `rows` sequences per forward pass. Rows are grouped by length to keep padding small; the
/// results come back in the input order.
pub fn sequence_logprobs<P: AsRef<[i64]>, R: AsRef<[i64]>>(
    gpt: &Gpt,
    prompts: &[P],
    responses: &[R],
    pad_id: i64,
    temperature: f64,
    rows: usize,
) -> Result<Vec<SequenceLogprob>> {
    if prompts.len() != responses.len() {
        return Err(ModelError::Invalid(format!(
            "{} prompts but {} responses",
            prompts.len(),
            responses.len()
        )));
    }
    let _guard = tch::no_grad_guard();
    let len = |i: usize| prompts[i].as_ref().len() + responses[i].as_ref().len();
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| len(i));
    let mut out = vec![
        SequenceLogprob {
            sum: 0.0,
            tokens: 0
        };
        prompts.len()
    ];
    for chunk in order.chunks(rows.max(1)) {
        let ps: Vec<&[i64]> = chunk.iter().map(|&i| prompts[i].as_ref()).collect();
        let rs: Vec<&[i64]> = chunk.iter().map(|&i| responses[i].as_ref()).collect();
        let batch = ResponseBatch::new(&ps, &rs, pad_id, gpt.device())?;
        let (logp, _) = response_logprobs(gpt, &batch, temperature)?;
        let logp = (logp.to_kind(Kind::Double) * batch.mask.to_kind(Kind::Double)).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Double,
        );
        let sums = Vec::<f64>::try_from(logp.to_device(tch::Device::Cpu))?;
        for ((&i, s), r) in chunk.iter().zip(sums).zip(&rs) {
            out[i] = SequenceLogprob {
                sum: s,
                tokens: r.len(),
            };
        }
    }
    Ok(out)
}

/// A scalar-head model's output (N,) at each sequence's last token: where a reward model reads
/// its reward (the sequence ends with EOS). Sequences are right-padded with `pad_id`, which is
/// exact for a causal model without a mask: padding only follows real tokens.
pub fn last_token_scalars<S: AsRef<[i64]>>(gpt: &Gpt, seqs: &[S], pad_id: i64) -> Result<Tensor> {
    if seqs.is_empty() || seqs.iter().any(|s| s.as_ref().is_empty()) {
        return Err(ModelError::Invalid(
            "every sequence to score needs at least one token".into(),
        ));
    }
    let dev = gpt.device();
    let (ids, _) = pad(seqs, pad_id, Side::Right);
    let ids = ids.to_device(dev);
    let last: Vec<i64> = seqs.iter().map(|s| s.as_ref().len() as i64 - 1).collect();
    let last = Tensor::from_slice(&last).to_device(dev).unsqueeze(1); // (N, 1)
    let hidden = gpt.forward_hidden(
        Batch {
            input_ids: &ids,
            attention_mask: None,
        },
        None,
    )?; // (N, T, C)
    Ok(gpt.scalar(&hidden)?.gather(1, &last, false).squeeze_dim(1))
}
