//! Token rows into tensors: the one padding routine ([`pad`]) and the one layout for scoring
//! responses after prompts ([`ResponseBatch`]), which sampling, PPO, DPO-style losses,
//! evaluation and rank classification all read.
//!
//! Not here: what is computed on a batch (`score.rs`), the tokenizer's padding id
//! (`Tokenizer::padding_id`).
//!
//! Shapes: B rows, T longest row, P longest prompt, R longest response.

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// Which end of a row receives the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Padding first: rows end together (prompts before generation).
    Left,
    /// Padding last: rows start together (training examples, responses).
    Right,
}

/// Rows of ids padded with `value` to the longest row: ids (B, T) and the mask (B, T) of real
/// positions (1) and padding (0), both int64 on the CPU. No rows gives (0, 0) tensors.
pub fn pad<R: AsRef<[i64]>>(rows: &[R], value: i64, side: Side) -> (Tensor, Tensor) {
    let t = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let (mut ids, mut mask) = (Vec::with_capacity(rows.len() * t), Vec::new());
    mask.reserve(rows.len() * t);
    for row in rows {
        let row = row.as_ref();
        let fill = t - row.len();
        if side == Side::Left {
            ids.extend(std::iter::repeat_n(value, fill));
            mask.extend(std::iter::repeat_n(0i64, fill));
        }
        ids.extend_from_slice(row);
        mask.extend(std::iter::repeat_n(1i64, row.len()));
        if side == Side::Right {
            ids.extend(std::iter::repeat_n(value, fill));
            mask.extend(std::iter::repeat_n(0i64, fill));
        }
    }
    let shape = [rows.len() as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

/// Prompts and their responses in one tensor layout, each row `[pad.. prompt | response | pad..]`:
/// prompts left-padded to end together at column P, responses right-padded after them. Every
/// response token t of a row then sits at column P + t, and is predicted by the hidden state at
/// column P + t − 1, the same for every row, so the positions that score responses are one
/// window `P − 1 .. P − 1 + R` (see `Gpt::forward_hidden_window`).
#[derive(Debug)]
pub struct ResponseBatch {
    /// Prompt + response ids (B, P + R) and their attention mask (B, P + R, int64).
    pub seqs: Tensor,
    pub attention: Tensor,
    /// Response tokens (B, R) and their mask (B, R, float: 1.0 on real tokens).
    pub responses: Tensor,
    pub mask: Tensor,
    /// P: the longest prompt, where every response starts.
    pub prompt_len: i64,
    /// Whether some prompt is shorter than P. Without left padding the causal model needs no
    /// attention mask (right padding only follows real tokens), and the forward takes the
    /// faster unmasked path.
    pub left_padded: bool,
}

impl ResponseBatch {
    /// Lays out `prompts[i]` followed by `responses[i]`, padding with `pad`. Every prompt needs
    /// at least one token (its last one predicts the first response token); a response may be
    /// empty (it then scores nothing).
    pub fn new<P: AsRef<[i64]>, R: AsRef<[i64]>>(
        prompts: &[P],
        responses: &[R],
        pad_id: i64,
        device: Device,
    ) -> Result<Self> {
        if prompts.len() != responses.len() {
            return Err(ModelError::Invalid(format!(
                "{} prompts but {} responses: each prompt needs one response",
                prompts.len(),
                responses.len()
            )));
        }
        if prompts.is_empty() || prompts.iter().any(|p| p.as_ref().is_empty()) {
            return Err(ModelError::Invalid(
                "every prompt needs at least one token".into(),
            ));
        }
        let (q, q_mask) = pad(prompts, pad_id, Side::Left);
        let (r_ids, r_mask) = pad(responses, pad_id, Side::Right);
        // A batch of empty responses still gets one (masked) column, so shapes stay non-empty.
        let (r_ids, r_mask) = if r_ids.size()[1] == 0 {
            let b = responses.len() as i64;
            (
                Tensor::full([b, 1], pad_id, (Kind::Int64, Device::Cpu)),
                Tensor::zeros([b, 1], (Kind::Int64, Device::Cpu)),
            )
        } else {
            (r_ids, r_mask)
        };
        let p = q.size()[1];
        let shortest = prompts.iter().map(|p| p.as_ref().len()).min().unwrap_or(0);
        Ok(Self {
            seqs: Tensor::cat(&[&q, &r_ids], 1).to_device(device),
            attention: Tensor::cat(&[&q_mask, &r_mask], 1).to_device(device),
            responses: r_ids.to_device(device),
            mask: r_mask.to_kind(Kind::Float).to_device(device),
            prompt_len: p,
            left_padded: (shortest as i64) < p,
        })
    }

    /// B, the number of rows.
    pub fn rows(&self) -> i64 {
        self.seqs.size()[0]
    }

    /// R, the longest response.
    pub fn response_len(&self) -> i64 {
        self.responses.size()[1]
    }

    /// The rows `idx` (a 1-D int64 tensor on the batch's device), e.g. one PPO minibatch.
    pub fn select(&self, idx: &Tensor) -> Self {
        Self {
            seqs: self.seqs.index_select(0, idx),
            attention: self.attention.index_select(0, idx),
            responses: self.responses.index_select(0, idx),
            mask: self.mask.index_select(0, idx),
            prompt_len: self.prompt_len,
            left_padded: self.left_padded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<Vec<i64>> {
        Vec::<Vec<i64>>::try_from(t).unwrap()
    }

    #[test]
    fn pads_on_either_side_with_a_mask_of_real_positions() {
        let r = [vec![5, 6, 7], vec![8]];
        let (ids, mask) = pad(&r, 0, Side::Right);
        assert_eq!(rows(&ids), [vec![5, 6, 7], vec![8, 0, 0]]);
        assert_eq!(rows(&mask), [vec![1, 1, 1], vec![1, 0, 0]]);
        let (ids, mask) = pad(&r, -1, Side::Left);
        assert_eq!(rows(&ids), [vec![5, 6, 7], vec![-1, -1, 8]]);
        assert_eq!(rows(&mask), [vec![1, 1, 1], vec![0, 0, 1]]);
        let (ids, _) = pad::<Vec<i64>>(&[], 0, Side::Left);
        assert_eq!(ids.size(), [0, 0]);
    }

    #[test]
    fn responses_start_where_the_longest_prompt_ends() {
        let b = ResponseBatch::new(
            &[vec![1, 2, 3], vec![4]],
            &[vec![9], vec![7, 8]],
            0,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(b.prompt_len, 3);
        assert!(b.left_padded);
        assert_eq!(rows(&b.seqs), [vec![1, 2, 3, 9, 0], vec![0, 0, 4, 7, 8]]);
        assert_eq!(
            rows(&b.attention),
            [vec![1, 1, 1, 1, 0], vec![0, 0, 1, 1, 1]]
        );
        assert_eq!(rows(&b.responses), [vec![9, 0], vec![7, 8]]);
        assert_eq!(
            Vec::<Vec<f32>>::try_from(&b.mask).unwrap(),
            [vec![1.0, 0.0], vec![1.0, 1.0]]
        );
        let same = ResponseBatch::new(&[vec![1], vec![2]], &[vec![3], vec![]], 0, Device::Cpu);
        let same = same.unwrap();
        assert!(!same.left_padded);
        assert_eq!(rows(&same.responses), [vec![3], vec![0]]);
        assert!(
            ResponseBatch::new(&[vec![1], vec![]], &[vec![3], vec![4]], 0, Device::Cpu).is_err()
        );
        assert!(ResponseBatch::new(&[vec![1]], &[vec![3], vec![4]], 0, Device::Cpu).is_err());
    }
}
