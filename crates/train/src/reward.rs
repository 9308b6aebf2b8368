//! The reward model (InstructGPT step 2): the SFT model with its LM head replaced by a scalar
//! head, trained on rankings of K responses per prompt with
//! `loss = -1/C(K,2) Σ log σ(r_w − r_l)` over every untied pair of the prompt. The K responses of
//! one prompt form one batch element: one forward of K sequences yields every pair (InstructGPT's
//! fix for the overfitting that shuffled pairs cause).
//!
//! Not here: labeling (the data crate), scoring files (`score_responses` is the library side of
//! `rlhf score`).
//!
//! Shapes: N sequences in a micro-batch (all responses of its prompts), T longest sequence.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use rlhf_data::{
    JsonlRecord, PairwiseRecord, RankingRecord, RecordError, SimulatedLabeler, read_jsonl_within,
};
use rlhf_model::{Gpt, Head, Pretrained, PromptFormat, last_token_scalars};
use rlhf_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::callbacks::StepRecord;
use crate::checkpoint;
use crate::config::TrainerConfig;
use crate::data::{DataPosition, DataSource, Epochs, Shard};
use crate::error::{Result, TrainError};
use crate::run::{Resume, RunOptions};
use crate::sft::FitStats;
use crate::step::{Metrics, StepOutput, TrainStep};
use crate::trainer::{Trainer, run_steps_with};

/// `-Σ_prompts 1/P · 1/|pairs_p| Σ_(w,l) log σ(r_w − r_l)`: each prompt's pairs averaged (the
/// 1/C(K,2) of InstructGPT when nothing is tied), then prompts averaged. `rewards` (N,) holds
/// every response of the batch; `groups[p]` lists prompt p's pairs as indices into it.
pub fn ranking_loss(rewards: &Tensor, groups: &[Vec<(usize, usize)>]) -> Result<Tensor> {
    let (mut w, mut l, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    let prompts = groups.iter().filter(|g| !g.is_empty()).count();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        for &(a, b) in g {
            w.push(a as i64);
            l.push(b as i64);
            weight.push(1.0 / (g.len() * prompts) as f32);
        }
    }
    if w.is_empty() {
        return Err(TrainError::Invalid(
            "no untied pair to learn from in this batch".into(),
        ));
    }
    let dev = rewards.device();
    let (w, l) = (
        Tensor::from_slice(&w).to_device(dev),
        Tensor::from_slice(&l).to_device(dev),
    );
    let margin = rewards.index_select(0, &w) - rewards.index_select(0, &l);
    let weight = Tensor::from_slice(&weight).to_device(dev);
    Ok(-(margin.log_sigmoid() * weight).sum(Kind::Float))
}

/// A training record: a ranking of K responses or one chosen/rejected pair (K = 2).
#[derive(Debug, Clone)]
pub struct Comparison {
    pub prompt: String,
    pub responses: Vec<String>,
    /// Untied (winner, loser) pairs, indices into `responses`.
    pub pairs: Vec<(usize, usize)>,
    /// Read from `{"chosen","rejected"}` rather than a ranking.
    pub pairwise: bool,
}

impl Comparison {
    /// The JSON field that holds response `i`, for error messages.
    pub fn field(&self, i: usize) -> String {
        match (self.pairwise, i) {
            (true, 0) => "chosen".into(),
            (true, _) => "rejected".into(),
            (false, i) => format!("responses[{i}]"),
        }
    }
}

impl JsonlRecord for Comparison {
    /// The prompt with each response: the sequences the reward model scores.
    fn sequences(&self) -> Vec<(String, Vec<&str>)> {
        (self.responses.iter().enumerate())
            .map(|(i, r)| {
                let field = match self.prompt.len() > r.len() {
                    true => "prompt".to_string(),
                    false => self.field(i),
                };
                (field, vec![self.prompt.as_str(), r.as_str()])
            })
            .collect()
    }

    fn from_json(value: &serde_json::Value) -> std::result::Result<Self, RecordError> {
        if value.get("chosen").is_some() {
            let p = PairwiseRecord::from_json(value)?;
            return Ok(Self {
                prompt: p.prompt,
                responses: vec![p.chosen, p.rejected],
                pairs: vec![(0, 1)],
                pairwise: true,
            });
        }
        let r = RankingRecord::from_json(value)?;
        Ok(Self {
            prompt: r.prompt().to_string(),
            responses: r.responses().to_vec(),
            pairs: r.ranking().pairs(),
            pairwise: false,
        })
    }
}

/// Encoded comparisons: each prompt's sequences and pairs.
pub struct EncodedComparison {
    pub seqs: Vec<Vec<i64>>,
    pub pairs: Vec<(usize, usize)>,
    /// The noise-free oracle's untied pairs, when the prompt is a task-world prompt.
    pub oracle_pairs: Option<Vec<(usize, usize)>>,
}

/// Each prompt's (winner, loser) pairs, as indices into a flattened micro-batch.
pub type PairGroups = Vec<Vec<(usize, usize)>>;

/// A micro-batch of prompts, flattened: sequences and per-prompt pairs with global indices.
fn flatten(items: &[&EncodedComparison]) -> (Vec<Vec<i64>>, PairGroups) {
    let (mut seqs, mut groups) = (Vec::new(), Vec::new());
    for it in items {
        let base = seqs.len();
        seqs.extend(it.seqs.iter().cloned());
        groups.push(
            it.pairs
                .iter()
                .map(|&(w, l)| (base + w, base + l))
                .collect(),
        );
    }
    (seqs, groups)
}

/// How comparisons are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// InstructGPT: a prompt's K responses are one batch element and every pair of it is used
    /// from one forward pass; each response is seen once per epoch.
    #[default]
    Grouped,
    /// The ablation: every pair is an independent, shuffled example (each response is then
    /// seen K−1 times per epoch). A batch holds as many pairs as a grouped batch on average.
    Shuffled,
}

/// `rlhf reward`'s configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// Passes over the comparisons. 1: InstructGPT found more epochs overfit the RM.
    pub epochs: u64,
    /// Share of prompts held out for pairwise accuracy. 0.1.
    pub eval_fraction: f64,
    /// `grouped` (InstructGPT, the default) or `shuffled` independent pairs (the ablation).
    pub pairing: Pairing,
    /// `max_steps` is derived from `epochs`; `batch_size` counts prompts (each with K responses).
    pub trainer: TrainerConfig,
    /// LoRA instead of every weight (`--lora`; off by default): an adapter plus the scalar head.
    pub lora: rlhf_model::LoraConfig,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            eval_fraction: 0.1,
            pairing: Pairing::Grouped,
            trainer: TrainerConfig {
                // InstructGPT's RM used a small LR (9e-6 for 6B); a tiny model needs more.
                lr: 3e-4,
                warmup_steps: 10,
                batch_size: 8,
                weight_decay: 0.0,
                eval_every: 0,
                checkpoint_every: 0,
                loss_weighting: crate::config::LossWeighting::MicroBatch,
                ..Default::default()
            },
            lora: Default::default(),
        }
    }
}

/// Shuffled epochs over prompts.
pub struct ComparisonData {
    items: Vec<EncodedComparison>,
    pad: i64,
    epochs: Epochs,
    /// Token positions of every batch drawn, padding included: FLOPs counts.
    pub tokens: u64,
}

impl ComparisonData {
    pub fn new(items: Vec<EncodedComparison>, batch: usize, pad: i64, seed: u64) -> Self {
        let epochs = Epochs::new(items.len(), batch, seed, 3);
        Self {
            items,
            pad,
            epochs,
            tokens: 0,
        }
    }

    /// Yields only `shard`'s slice of every global batch (data parallelism; see [`Shard`]).
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        self.epochs = self.epochs.sharded(shard)?;
        Ok(self)
    }
}

impl DataSource for ComparisonData {
    type Batch = (Vec<Vec<i64>>, PairGroups, i64);

    fn next_batch(&mut self) -> Result<Option<Self::Batch>> {
        let rows: Vec<&EncodedComparison> = self
            .epochs
            .next_indices()
            .into_iter()
            .map(|i| &self.items[i])
            .collect();
        let (seqs, groups) = flatten(&rows);
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
        self.tokens += (seqs.len() * longest) as u64;
        Ok(Some((seqs, groups, self.pad)))
    }

    fn position(&self) -> DataPosition {
        self.epochs.position()
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        self.epochs.seek(pos);
        Ok(())
    }
}

/// The reward model plus held-out comparisons.
pub struct RewardStep<'a> {
    pub gpt: &'a Gpt,
    pub eval: Vec<EncodedComparison>,
    pub pad: i64,
}

/// Held-out accuracy: the share of untied pairs the model orders like the labels, and (for
/// task-world prompts) like the noise-free oracle.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accuracy {
    pub labels: f64,
    pub label_pairs: usize,
    /// `None` when no prompt is a task-world prompt.
    pub oracle: Option<f64>,
    pub oracle_pairs: usize,
}

/// Share of untied pairs the model orders like the labels (and like the oracle).
pub fn pairwise_accuracy(gpt: &Gpt, items: &[EncodedComparison], pad: i64) -> Result<Accuracy> {
    let _guard = tch::no_grad_guard();
    let (mut right, mut total, mut o_right, mut o_total) = (0usize, 0usize, 0usize, 0usize);
    for chunk in items.chunks(8) {
        let (seqs, groups) = flatten(&chunk.iter().collect::<Vec<_>>());
        let r = Vec::<f32>::try_from(&last_token_scalars(gpt, &seqs, pad)?.to_device(Device::Cpu))?;
        for &(w, l) in groups.iter().flatten() {
            right += usize::from(r[w] > r[l]);
            total += 1;
        }
        let mut base = 0;
        for it in chunk {
            for &(w, l) in it.oracle_pairs.iter().flatten() {
                o_right += usize::from(r[base + w] > r[base + l]);
                o_total += 1;
            }
            base += it.seqs.len();
        }
    }
    Ok(Accuracy {
        labels: right as f64 / total.max(1) as f64,
        label_pairs: total,
        oracle: (o_total > 0).then(|| o_right as f64 / o_total as f64),
        oracle_pairs: o_total,
    })
}

impl TrainStep for RewardStep<'_> {
    type Batch = (Vec<Vec<i64>>, PairGroups, i64);

    fn compute(&self) -> rlhf_model::Compute {
        self.gpt.compute()
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        // All but the scalar head's bias, which is fixed during training (see `Gpt::new`) and
        // set afterwards to centre the rewards; with LoRA, the adapter and the head's weight.
        self.gpt.trainable_parameters()
    }

    fn loss(&mut self, (seqs, groups, pad): &Self::Batch) -> Result<StepOutput> {
        let r = last_token_scalars(self.gpt, seqs, *pad)?;
        let loss = ranking_loss(&r, groups)?;
        Ok(StepOutput::new(loss, groups.len() as i64))
    }

    fn eval(&mut self) -> Result<Metrics> {
        let acc = pairwise_accuracy(self.gpt, &self.eval, self.pad)?;
        let mut m = Metrics::from([("pairwise_accuracy".to_string(), acc.labels)]);
        if let Some(o) = acc.oracle {
            m.insert("oracle_accuracy".to_string(), o);
        }
        Ok(m)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Ok(self.gpt.save(dir)?)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_gpt(self.gpt, dir)
    }
}

/// Encodes comparisons; errors name the file, line and field. Records of the same prompt with
/// the same responses in the same order (several labelers' rankings of one sample, as `rlhf
/// label export` and `rlhf label --oracle --keep-overlap` write them) are pooled into one
/// item holding every labeler's pairs: one forward pass learns from all of them, a pair two
/// labelers ordered oppositely pulls both ways, and the held-out split cannot separate them.
pub fn encode_all(pre: &Pretrained, data: &Path) -> Result<Vec<EncodedComparison>> {
    Ok(encode_pooled(pre, data)?.0)
}

/// [`encode_all`], and how many records were pooled into an earlier one.
pub fn encode_pooled(pre: &Pretrained, data: &Path) -> Result<(Vec<EncodedComparison>, usize)> {
    let budget = crate::data::text_budget(pre);
    let read: Vec<(usize, Comparison)> = read_jsonl_within(data, budget.as_ref())?;
    let n_read = read.len();
    let records = pool_rankings(read);
    let pooled = n_read - records.len();
    let max = pre.model.cfg.max_positions as usize;
    let oracle = SimulatedLabeler::noise_free();
    let mut out = Vec::with_capacity(records.len());
    for (line, c) in &records {
        let at = |field: &str, e: TrainError| e.at(data, *line, field);
        let prompt = pre
            .encode_prompt(&c.prompt, PromptFormat::Chat)
            .map_err(|e| at("prompt", e.into()))?;
        if prompt.len() >= max {
            let e = TrainError::Invalid(format!(
                "the prompt is {} tokens, leaving no room for a response in the model's context \
                 of {max}",
                prompt.len()
            ));
            return Err(at("prompt", e));
        }
        let seqs = c
            .responses
            .iter()
            .enumerate()
            .map(|(i, r)| {
                pre.encode_response(&prompt, r)
                    .map_err(|e| at(&c.field(i), e.into()))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some((i, s)) = seqs.iter().enumerate().find(|(_, s)| s.len() > max) {
            let e = TrainError::Invalid(format!(
                "prompt + response are {} tokens, longer than the model's context of {max}",
                s.len()
            ));
            return Err(at(&c.field(i), e));
        }
        let oracle_pairs = oracle
            .rank_prompt(&c.prompt, &c.responses)
            .ok()
            .map(|r| r.pairs());
        out.push(EncodedComparison {
            seqs,
            pairs: c.pairs.clone(),
            oracle_pairs,
        });
    }
    Ok((out, pooled))
}

/// Merges records of the same prompt and responses into the first one's (its line names the
/// pooled item in errors), concatenating their pairs; the order of first appearance is kept.
fn pool_rankings(records: Vec<(usize, Comparison)>) -> Vec<(usize, Comparison)> {
    let mut first: HashMap<(String, Vec<String>), usize> = HashMap::new();
    let mut out: Vec<(usize, Comparison)> = Vec::with_capacity(records.len());
    for (line, c) in records {
        match first.entry((c.prompt.clone(), c.responses.clone())) {
            Entry::Occupied(at) => {
                out[*at.get()].1.pairs.extend(c.pairs);
            }
            Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push((line, c));
            }
        }
    }
    out
}

/// `reward.json` in a reward-model dir: how its rewards were centred, and their spread on the
/// SFT samples, which PPO divides by to get unit-scale rewards.
pub const REWARD_STATS_FILE: &str = "reward.json";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RewardStats {
    /// The training responses' mean reward before centring (removed from the head's bias).
    pub centred_mean: f64,
    /// Their standard deviation after centring.
    pub std: f64,
}

impl RewardStats {
    /// Reads `dir/reward.json`; `None` when the dir has none (a reward model from elsewhere).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(REWARD_STATS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io("read", &path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TrainError::Config(format!("{}: not a reward.json: {e}", path.display())))
    }
}

/// What a finished reward-model run reports.
#[derive(Debug, Clone)]
pub struct RewardSummary {
    pub train_prompts: usize,
    pub eval_prompts: usize,
    /// Records pooled into an earlier record of the same prompt and responses (another
    /// labeler's ranking of the same sample).
    pub pooled: usize,
    pub eval_accuracy_start: Accuracy,
    pub eval_accuracy_end: Accuracy,
    /// Training examples per epoch: prompts (grouped) or pairs (shuffled).
    pub train_examples: usize,
    /// Mean reward of the training responses before centring (subtracted from the bias) and std.
    pub centred_mean: f64,
    pub reward_std: f64,
    pub steps: u64,
    pub elapsed_s: f64,
    pub out: PathBuf,
}

/// The reward-model core, in memory: trains `gpt` (a scalar-head model) on `items` with the
/// grouped ranking loss for `cfg.max_steps` steps of `cfg.batch_size` prompts (shuffled epochs
/// seeded by `cfg.seed`), writing nothing to disk. [`reward`] is the same step over a run
/// folder, with held-out accuracy and the reward statistics.
pub fn fit(
    gpt: &Gpt,
    items: Vec<EncodedComparison>,
    pad_id: i64,
    cfg: &TrainerConfig,
    on_step: impl FnMut(&StepRecord),
) -> Result<FitStats> {
    if items.len() < cfg.batch_size {
        return Err(TrainError::Invalid(format!(
            "{} ranked prompts are fewer than one batch of {}",
            items.len(),
            cfg.batch_size
        )));
    }
    let mut data = ComparisonData::new(items, cfg.batch_size, pad_id, cfg.seed);
    let mut step = RewardStep {
        gpt,
        eval: vec![],
        pad: pad_id,
    };
    let records = run_steps_with(cfg, &mut step, &mut data, cfg.max_steps, on_step)?;
    Ok(FitStats {
        records,
        tokens: data.tokens,
    })
}

impl RewardConfig {
    /// Checks every value before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(TrainError::Config(
                "reward config: epochs must be at least 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(TrainError::Config(format!(
                "reward config: eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            )));
        }
        crate::adapter::validate(&self.lora)?;
        self.trainer.validate()
    }
}

/// Trains a reward model from the SFT checkpoint `model` on `data` (rankings or pairs); `out`
/// becomes a reward-model dir (with `reward.json`) and the run folder, resumable like every
/// stage's.
pub fn reward(
    model: &Path,
    data: &Path,
    out: &Path,
    cfg: &RewardConfig,
    resume: Resume,
    device: Device,
) -> Result<RewardSummary> {
    cfg.validate()?;
    // The fresh scalar head's initialisation comes from this seed.
    tch::manual_seed(cfg.trainer.seed as i64);
    let mut gpt = Gpt::load_with_head(model, Head::Scalar, device)?;
    crate::adapter::prepare(&mut gpt, &cfg.lora, model, cfg.trainer.seed)?;
    let tokenizer = Tokenizer::from_dir(&rlhf_model::lora::tokenizer_dir(model)?)?;
    let pre = Pretrained {
        model: gpt,
        tokenizer,
    };
    let (mut items, pooled) = encode_pooled(&pre, data)?;
    items.retain(|c| !c.pairs.is_empty());
    let n_eval = ((items.len() as f64) * cfg.eval_fraction).ceil() as usize;
    let batch = cfg.trainer.batch_size;
    if items.len() < n_eval + batch {
        return Err(TrainError::Invalid(format!(
            "{}: {} prompts with untied pairs are too few for {n_eval} held out plus a batch of {batch}",
            data.display(),
            items.len()
        )));
    }
    let eval = items.split_off(items.len() - n_eval);
    let train_prompts = items.len();
    let (items, batch) = match cfg.pairing {
        Pairing::Grouped => (items, batch),
        Pairing::Shuffled => {
            let pairs: usize = items.iter().map(|c| c.pairs.len()).sum();
            let per_batch = (batch as f64 * pairs as f64 / items.len() as f64).round() as usize;
            (split_pairs(items), per_batch.max(1))
        }
    };
    let pad = pre.pad_id();
    let mut trainer_cfg = cfg.trainer.clone();
    trainer_cfg.batch_size = batch;
    trainer_cfg.max_steps = cfg.epochs * (items.len() / batch) as u64;
    trainer_cfg.validate()?;
    let mut step = RewardStep {
        gpt: &pre.model,
        eval,
        pad,
    };
    let eval_accuracy_start = pairwise_accuracy(step.gpt, &step.eval, pad)?;
    let mut source =
        ComparisonData::new(items, batch, pad, trainer_cfg.seed).sharded(Shard::of_process())?;
    let run = RunOptions::stage(
        out,
        "reward",
        cfg,
        &[("model", model), ("data", data)],
        resume,
    )?;
    let summary = Trainer::new(trainer_cfg, run)?.fit(&mut step, &mut source)?;
    let eval_accuracy_end = pairwise_accuracy(step.gpt, &step.eval, pad)?;
    let (mean, std) = reward_stats(step.gpt, &source.items, pad)?;
    let eval_prompts = step.eval.len();
    let mut gpt = pre.model;
    gpt.shift_scalar_bias(-mean)?;
    let stats = RewardStats {
        centred_mean: mean,
        std,
    };
    // `reward.json` is part of the export: a reward model without it would load and give PPO
    // unscaled scores.
    checkpoint::export_with(&gpt, summary.checkpoint.as_deref(), out, |dir| {
        pre.tokenizer.save(dir)?;
        let path = dir.join(REWARD_STATS_FILE);
        let json = serde_json::to_string_pretty(&stats).expect("plain numbers serialise");
        std::fs::write(&path, json + "\n").map_err(|e| TrainError::io("write", &path, e))
    })?;
    Ok(RewardSummary {
        train_prompts,
        pooled,
        train_examples: source.items.len(),
        eval_prompts,
        eval_accuracy_start,
        eval_accuracy_end,
        centred_mean: mean,
        reward_std: std,
        steps: summary.step,
        elapsed_s: summary.elapsed_s,
        out: out.to_path_buf(),
    })
}

/// Every pair of every prompt as its own two-sequence comparison (the shuffled-pairs ablation).
fn split_pairs(items: Vec<EncodedComparison>) -> Vec<EncodedComparison> {
    items
        .into_iter()
        .flat_map(|c| {
            c.pairs
                .iter()
                .map(|&(w, l)| EncodedComparison {
                    seqs: vec![c.seqs[w].clone(), c.seqs[l].clone()],
                    pairs: vec![(0, 1)],
                    oracle_pairs: None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Mean and std of the rewards of every training response (the SFT samples).
fn reward_stats(gpt: &Gpt, items: &[EncodedComparison], pad: i64) -> Result<(f64, f64)> {
    let _guard = tch::no_grad_guard();
    let mut all = Vec::new();
    for chunk in items.chunks(8) {
        let (seqs, _) = flatten(&chunk.iter().collect::<Vec<_>>());
        all.extend(Vec::<f32>::try_from(
            &last_token_scalars(gpt, &seqs, pad)?.to_device(Device::Cpu),
        )?);
    }
    let n = all.len().max(1) as f64;
    let mean = all.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = all.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    Ok((mean, var.sqrt()))
}
