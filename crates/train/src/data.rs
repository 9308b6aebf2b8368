//! Where batches come from: the [`DataSource`] trait with a serialisable, resumable position, a
//! Rust RNG for data order whose state serialises ([`DataRng`]), and a synthetic token source for
//! tests and benchmarks ([`RandomTokens`]).
//!
//! All data-order randomness is ChaCha8 in Rust rather than libtorch's generator, because tch
//! cannot read or restore libtorch's generator state; a ChaCha state is three integers.
//!
//! Not here: real datasets (tokenized corpora, SFT and preference pairs live in the stage crates).

use rand::RngCore;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// What a record read for `pre` may hold: its context in tokens and what one of its tokens can
/// cover, so a reader refuses text that cannot fit from its byte length, before tokenizing
/// (`rlhf_data::read_jsonl_within`). `None` when the tokenizer can drop text, so that no length
/// implies a token count.
pub fn text_budget(pre: &rlhf_model::Pretrained) -> Option<rlhf_data::TextBudget> {
    let bound = rlhf_tokenizer::token_bound(&pre.tokenizer)?;
    let context = usize::try_from(pre.model.cfg.max_positions).unwrap_or(0);
    Some(rlhf_data::TextBudget::new(
        context,
        bound.max_bytes,
        &bound.dropped,
    ))
}

/// A stream of micro-batches that can say where it stands and go back there.
pub trait DataSource {
    type Batch;

    /// The next micro-batch, or `None` when the data is exhausted (training then stops; a source
    /// that wants epochs wraps around itself and counts them in its position).
    fn next_batch(&mut self) -> Result<Option<Self::Batch>>;

    /// Where the source stands; `seek` to it replays exactly the batches that followed.
    fn position(&self) -> DataPosition;

    /// Returns to a position taken by `position` (possibly in another process).
    fn seek(&mut self, pos: &DataPosition) -> Result<()>;
}

/// A data source's position, stored in each checkpoint's `rlhf.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Batches (or examples: the source decides) consumed in the current epoch.
    pub offset: u64,
    /// The source's RNG, when it draws randomness as it goes (random windows, shuffles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngState>,
}

/// A [`DataRng`]'s complete state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub stream: u64,
    /// 32-bit words consumed; u64 because JSON readers lose u128 (2^64 words is never reached).
    pub word_pos: u64,
}

/// ChaCha8 seeded from a `u64`, whose state round-trips through [`RngState`].
#[derive(Debug, Clone)]
pub struct DataRng {
    seed: u64,
    inner: ChaCha8Rng,
}

impl DataRng {
    /// `stream` separates independent sequences from one seed (e.g. one per epoch or per rank).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Self { seed, inner }
    }

    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            stream: self.inner.get_stream(),
            word_pos: self.inner.get_word_pos() as u64,
        }
    }

    pub fn from_state(state: RngState) -> Self {
        let mut rng = Self::new(state.seed, state.stream);
        rng.inner.set_word_pos(u128::from(state.word_pos));
        rng
    }

    /// A uniformly shuffled `0..n`: an epoch's order, e.g. `DataRng::new(seed, epoch)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(self);
        order
    }
}

impl RngCore for DataRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst)
    }
}

/// Synthetic LM batches `(batch_size, seq_len)` of token ids: each row counts up from a random
/// start by a random stride (1 to 3) modulo `vocab`, so they are cheap, reproducible and
/// learnable (a training test can also check that the loss falls).
#[derive(Debug, Clone)]
pub struct RandomTokens {
    pub vocab: i64,
    pub batch_size: i64,
    pub seq_len: i64,
    /// Where the batches are created. CPU by default.
    pub device: Device,
    /// Stop after this many batches (`None`: endless).
    pub limit: Option<u64>,
    rng: DataRng,
    drawn: u64,
}

impl RandomTokens {
    pub fn new(vocab: i64, batch_size: i64, seq_len: i64, seed: u64) -> Self {
        Self {
            vocab,
            batch_size,
            seq_len,
            device: Device::Cpu,
            limit: None,
            rng: DataRng::new(seed, 0),
            drawn: 0,
        }
    }
}

impl DataSource for RandomTokens {
    type Batch = Tensor;

    fn next_batch(&mut self) -> Result<Option<Tensor>> {
        if self.limit.is_some_and(|l| self.drawn >= l) {
            return Ok(None);
        }
        self.drawn += 1;
        let vocab = self.vocab.max(1) as u64;
        let mut ids = Vec::with_capacity((self.batch_size * self.seq_len).max(0) as usize);
        for _ in 0..self.batch_size {
            let start = self.rng.next_u64() % vocab;
            let stride = 1 + self.rng.next_u64() % 3;
            ids.extend((0..self.seq_len as u64).map(|t| ((start + t * stride) % vocab) as i64));
        }
        let ids = Tensor::f_from_slice(&ids)?
            .f_view([self.batch_size, self.seq_len])?
            .f_to_device(self.device)?;
        Ok(Some(ids.f_to_kind(Kind::Int64)?))
    }

    fn position(&self) -> DataPosition {
        stream_position(self.drawn, &self.rng)
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        stream_seek(pos, &mut self.drawn, &mut self.rng);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_state_round_trips_mid_block() {
        let mut a = DataRng::new(7, 3);
        for _ in 0..5 {
            a.next_u32(); // leave the generator inside a ChaCha block
        }
        let mut b = DataRng::from_state(a.state());
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let json = serde_json::to_string(&a.state()).unwrap_or_default();
        let back: RngState = serde_json::from_str(&json).unwrap_or(RngState {
            seed: 0,
            stream: 0,
            word_pos: 0,
        });
        assert_eq!(back, a.state());
    }

    #[test]
    fn epochs_resume_replays_the_same_batches_across_epoch_boundaries() {
        // 10 items, batches of 3: 3 batches per epoch, the 10th item skipped each epoch.
        let mut a = Epochs::new(10, 3, 5, 2);
        let first: Vec<Vec<usize>> = (0..4).map(|_| a.next_indices()).collect();
        let pos = a.position();
        let rest: Vec<Vec<usize>> = (0..5).map(|_| a.next_indices()).collect();
        let mut b = Epochs::new(10, 3, 5, 2);
        b.seek(&pos);
        let again: Vec<Vec<usize>> = (0..5).map(|_| b.next_indices()).collect();
        assert_eq!(rest, again);
        // Within an epoch no index repeats; epochs are different permutations.
        let epoch0: Vec<usize> = first[..3].concat();
        let mut sorted = epoch0.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9);
        assert_ne!(
            epoch0,
            [first[3].clone(), rest[0].clone(), rest[1].clone()].concat()
        );
    }

    #[test]
    fn shards_split_every_global_batch_in_rank_order() {
        // 3 ranks over batches of 6 from 20 items, across epoch boundaries and a resume.
        let mut whole = Epochs::new(20, 6, 4, 2);
        let mut ranks: Vec<Epochs> = (0..3)
            .map(|rank| {
                Epochs::new(20, 6, 4, 2)
                    .sharded(Shard { rank, world: 3 })
                    .unwrap()
            })
            .collect();
        for step in 0..10 {
            let global = whole.next_indices();
            let joined: Vec<usize> = ranks.iter_mut().flat_map(|r| r.next_indices()).collect();
            assert_eq!(joined, global, "step {step}");
            assert!(ranks.iter().all(|r| r.position() == whole.position()));
        }
        let mut resumed = Epochs::new(20, 6, 4, 2)
            .sharded(Shard { rank: 1, world: 3 })
            .unwrap();
        resumed.seek(&whole.position());
        assert_eq!(resumed.next_indices(), whole.next_indices()[2..4].to_vec());
        let odd = Epochs::new(20, 5, 4, 2).sharded(Shard { rank: 0, world: 2 });
        let err = odd.expect_err("5 rows over 2 ranks").to_string();
        assert!(
            err.contains("a batch of 5 does not split evenly over 2"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_larger_than_the_data_is_one_whole_epoch() {
        let mut e = Epochs::new(4, 10, 1, 0);
        for _ in 0..3 {
            let mut b = e.next_indices();
            b.sort_unstable();
            assert_eq!(b, vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn random_tokens_resume_replays_the_same_batches() {
        let mut a = RandomTokens::new(64, 2, 8, 1);
        let _ = a.next_batch();
        let pos = a.position();
        let next = a.next_batch().ok().flatten();
        let mut b = RandomTokens::new(64, 2, 8, 99);
        b.seek(&pos).ok();
        let again = b.next_batch().ok().flatten();
        match (next, again) {
            (Some(x), Some(y)) => assert!(x.equal(&y)),
            _ => panic!("both sources should yield a batch"),
        }
    }
}

/// The position of an endless random stream: batches drawn so far and the generator's state.
pub fn stream_position(drawn: u64, rng: &DataRng) -> DataPosition {
    DataPosition {
        epoch: 0,
        offset: drawn,
        rng: Some(rng.state()),
    }
}

/// Restores what [`stream_position`] recorded.
pub fn stream_seek(pos: &DataPosition, drawn: &mut u64, rng: &mut DataRng) {
    *drawn = pos.offset;
    if let Some(state) = pos.rng {
        *rng = DataRng::from_state(state);
    }
}

/// Which part of every global batch this process trains on: under data parallelism each of the
/// `world` ranks takes the `rank`-th of `world` equal slices, so the ranks together see exactly
/// the batch one process would, and every rank's data position is the same (global) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole batch (one process).
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// This process's shard in the launch it joined (`rlhf_model::dist`), else the whole batch.
    pub fn of_process() -> Shard {
        Shard {
            rank: rlhf_model::dist::rank(),
            world: rlhf_model::dist::world(),
        }
    }

    /// The rows of a global batch of `n` this shard takes; `n` must split evenly, so that every
    /// rank's loss weighs the same as its share of the global one.
    pub fn range(&self, n: usize) -> Result<std::ops::Range<usize>> {
        if n % self.world != 0 {
            return Err(crate::error::TrainError::Config(format!(
                "a batch of {n} does not split evenly over {} data-parallel ranks; make the \
                 batch size a multiple of the number of processes",
                self.world
            )));
        }
        let per = n / self.world;
        Ok(self.rank * per..(self.rank + 1) * per)
    }
}

/// Shuffled passes over `n` items in fixed-size batches of indices, resumable: the order of
/// each epoch is a fresh permutation from a seeded ChaCha stream, and a position is (epoch,
/// offset, RNG state). Stages wrap it with their own collation (SFT examples, RM comparisons).
#[derive(Debug, Clone)]
pub struct Epochs {
    n: usize,
    batch: usize,
    shard: Shard,
    rng: DataRng,
    order: Vec<usize>,
    epoch: u64,
    offset: u64,
}

impl Epochs {
    /// A `batch` larger than `n` is clamped to `n`: each batch is then one whole epoch.
    pub fn new(n: usize, batch: usize, seed: u64, stream: u64) -> Self {
        let mut rng = DataRng::new(seed, stream);
        let order = rng.permutation(n);
        Self {
            n,
            batch: batch.min(n),
            shard: Shard::WHOLE,
            rng,
            order,
            epoch: 0,
            offset: 0,
        }
    }

    /// Draws the same global batches but yields only `shard`'s slice of each (data
    /// parallelism); the position stays the global one. Errors when a batch does not split evenly.
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        shard.range(self.batch)?;
        self.shard = shard;
        Ok(self)
    }

    /// The next batch of item indices (this shard's slice of it); a batch never straddles two
    /// epochs (the remainder of an epoch that does not fill a batch is skipped, as with
    /// `drop_last`).
    pub fn next_indices(&mut self) -> Vec<usize> {
        let mut all = self.next_global();
        if self.shard.world > 1 {
            let range = self.shard.range(all.len()).expect("checked by `sharded`");
            all = all[range].to_vec();
        }
        all
    }

    fn next_global(&mut self) -> Vec<usize> {
        if self.offset as usize + self.batch > self.order.len() {
            self.epoch += 1;
            self.offset = 0;
            self.order = self.rng.permutation(self.n);
        }
        let start = self.offset as usize;
        self.offset += self.batch as u64;
        self.order[start..start + self.batch].to_vec()
    }

    pub fn position(&self) -> DataPosition {
        DataPosition {
            epoch: self.epoch,
            offset: self.offset,
            rng: Some(self.rng.state()),
        }
    }

    /// The stored RNG state is the one after drawing the current epoch's order, so the order is
    /// re-drawn by replaying `epoch + 1` permutations from the seed.
    pub fn seek(&mut self, pos: &DataPosition) {
        let Some(state) = pos.rng else { return };
        let mut rng = DataRng::new(state.seed, state.stream);
        let mut order = rng.permutation(self.n);
        for _ in 0..pos.epoch {
            order = rng.permutation(self.n);
        }
        (self.rng, self.order, self.epoch, self.offset) = (rng, order, pos.epoch, pos.offset);
    }
}
