//! A preallocated key/value cache for incremental decoding.
//!
//! Capacity is fixed at creation (prompt length + new tokens), so decoding never reallocates or
//! concatenates: each step writes its keys and values into the next slice. The cache also tracks
//! which key slots are padding and the next position id of each row, so left-padded batches
//! decode correctly.
//!
//! Shapes: B batch, S capacity, nkv key/value heads, hs head size.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

#[derive(Debug)]
pub struct KvCache {
    pub(crate) k: Vec<Tensor>, // per layer (B, nkv, S, hs)
    pub(crate) v: Vec<Tensor>, // per layer (B, nkv, S, hs)
    /// (B, S) bool: which filled slots hold real (non-padding) tokens.
    pub(crate) key_mask: Tensor,
    /// (B,) i64: the position id the next real token of each row gets.
    pub(crate) next_pos: Tensor,
    /// Whether any slot so far is padding (when not, decoding can skip the explicit mask).
    pub(crate) has_padding: bool,
    pub(crate) len: i64,
    capacity: i64,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, cfg.num_kv_heads, capacity, cfg.head_dim];
        let layers = cfg.num_layers as usize;
        Self {
            k: (0..layers)
                .map(|_| Tensor::zeros(shape, (kind, device)))
                .collect(),
            v: (0..layers)
                .map(|_| Tensor::zeros(shape, (kind, device)))
                .collect(),
            key_mask: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            next_pos: Tensor::zeros([batch], (Kind::Int64, device)),
            has_padding: false,
            len: 0,
            capacity,
        }
    }

    /// Slots filled so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    pub fn batch_size(&self) -> i64 {
        self.key_mask.size()[0]
    }

    /// Checks that `t` more tokens for `b` rows fit.
    pub(crate) fn check_room(&self, b: i64, t: i64) -> Result<()> {
        if b != self.batch_size() {
            return Err(ModelError::Invalid(format!(
                "KV cache holds {} rows but the input has {b}",
                self.batch_size()
            )));
        }
        if self.len + t > self.capacity {
            return Err(ModelError::Invalid(format!(
                "KV cache full: {} + {t} tokens exceed its capacity of {}",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Writes one layer's new keys/values (B, nkv, T, hs) and returns the filled prefix.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        self.k[layer].narrow(2, self.len, t).copy_(k);
        self.v[layer].narrow(2, self.len, t).copy_(v);
        let end = self.len + t;
        (
            self.k[layer].narrow(2, 0, end),
            self.v[layer].narrow(2, 0, end),
        )
    }

    /// Records the new tokens' mask (B, T) once every layer has appended.
    pub(crate) fn advance(&mut self, mask: &Tensor) {
        let t = mask.size()[1];
        self.key_mask.narrow(1, self.len, t).copy_(mask);
        self.next_pos += mask
            .to_kind(Kind::Int64)
            .sum_dim_intlist(1, false, Kind::Int64);
        self.len += t;
    }

    /// Stacks the rows of `a` and `b` into one cache of `capacity` slots, right-aligning what
    /// each holds (the shorter one's rows get padding slots in front), so that sequences started
    /// at different times decode together (continuous batching). Position ids stay per row.
    pub fn concat_rows(a: &KvCache, b: &KvCache, capacity: i64) -> Result<KvCache> {
        let len = a.len.max(b.len);
        if capacity < len || a.k.len() != b.k.len() {
            return Err(ModelError::Invalid(format!(
                "cannot join KV caches of {} and {} slots ({} and {} layers) into {capacity} slots",
                a.len,
                b.len,
                a.k.len(),
                b.k.len()
            )));
        }
        let place = |x: &Tensor, y: &Tensor, dim: i64| {
            // x: a's tensor, y: b's; slots along `dim`. Filled slots go to the right end of len.
            let (bx, by) = (x.size()[0], y.size()[0]);
            let mut shape = x.size();
            shape[0] = bx + by;
            shape[dim as usize] = capacity;
            let out = Tensor::zeros(shape.as_slice(), (x.kind(), x.device()));
            out.narrow(0, 0, bx)
                .narrow(dim, len - a.len, a.len)
                .copy_(&x.narrow(dim, 0, a.len));
            out.narrow(0, bx, by)
                .narrow(dim, len - b.len, b.len)
                .copy_(&y.narrow(dim, 0, b.len));
            out
        };
        Ok(KvCache {
            k: a.k.iter().zip(&b.k).map(|(x, y)| place(x, y, 2)).collect(),
            v: a.v.iter().zip(&b.v).map(|(x, y)| place(x, y, 2)).collect(),
            key_mask: place(&a.key_mask, &b.key_mask, 1),
            next_pos: Tensor::cat(&[&a.next_pos, &b.next_pos], 0),
            has_padding: a.has_padding || b.has_padding || a.len != b.len,
            len,
            capacity,
        })
    }

    /// Drops the leading slots that are padding in every row (after the rows that needed them
    /// left), so that a long-running batch does not keep growing.
    pub fn trim_left(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let any = self.key_mask.narrow(1, 0, self.len).any_dim(0, false); // (len,)
        let first = Vec::<bool>::try_from(&any)?
            .iter()
            .position(|&x| x)
            .unwrap_or(self.len as usize) as i64;
        if first == 0 {
            return Ok(());
        }
        let keep = self.capacity - first;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.narrow(2, first, keep);
        }
        self.key_mask = self.key_mask.narrow(1, first, keep);
        (self.len, self.capacity) = (self.len - first, keep);
        Ok(())
    }

    /// Keeps only the rows in `index` (1-D i64), e.g. after some sequences finished.
    pub fn select_rows(&mut self, index: &Tensor) {
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(0, index);
        }
        self.key_mask = self.key_mask.index_select(0, index);
        self.next_pos = self.next_pos.index_select(0, index);
    }
}
