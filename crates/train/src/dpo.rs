//! Direct preference optimisation (Rafailov et al., 2023) and two relatives, trained on the same
//! rankings as the reward model, with no reward model and no sampling.
//!
//! A response's implicit reward is `β (log π(y|x) − log π_ref(y|x))`, the reference being the
//! policy before training; its log-probs are computed once, up front, so no second model stays in
//! memory. Per prompt, over the ranking's untied (winner, loser) pairs:
//! - `sigmoid` (DPO): `−(1−ε) log σ(β m) − ε log σ(−β m)` with `m` the pair's log-ratio margin
//!   and `ε` the label smoothing (conservative DPO; 0 is plain DPO);
//! - `ipo` (Azar et al., 2023): `(m − 1/(2β))²`, `m` from length-averaged log-probs as TRL does;
//! - `listwise`: the Plackett–Luce likelihood of the whole ranking under the implicit rewards
//!   `s`: `−1/T Σ_g Σ_{i∈g} [s_i − log(e^{s_i} + Σ_{j below g} e^{s_j})]` over every group g but
//!   the last, T terms in all. A tied response is ranked above everything below its group and
//!   against none of its group, as ties are in the reward model's pairs; with K = 2 this is DPO.
//!
//! Pair losses are averaged within a prompt, then over prompts (each prompt weighs the same, as
//! in the reward model's loss). Logged under TRL's names: `rewards/chosen`, `rewards/rejected`,
//! `rewards/margins`, `rewards/accuracies` (over the batch's pairs), and the held-out preference
//! accuracy (against the labels, and against the noise-free oracle for task-world prompts).
//!
//! Shapes: N responses in a micro-batch, M pairs.

use std::path::{Path, PathBuf};

use rlhf_data::{PreferenceRecord, Role, SimulatedLabeler, read_jsonl_within};
use rlhf_model::score::response_logprobs;
use rlhf_model::{Gpt, Head, LoraConfig, Pretrained, ResponseBatch, sequence_logprobs};
use rlhf_tokenizer::Message;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::config::{LossWeighting, TrainerConfig};
use crate::data::{DataPosition, DataSource, Epochs, Shard};
use crate::error::{Result, TrainError};
use crate::run::{Resume, RunOptions};
use crate::step::{Metrics, StepOutput, TrainStep};
use crate::trainer::Trainer;

/// Which preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    /// DPO's logistic loss on each pair (with optional label smoothing).
    #[default]
    Sigmoid,
    /// IPO's squared loss on each pair.
    Ipo,
    /// Plackett–Luce over the whole ranking.
    Listwise,
}

/// `rlhf dpo`'s configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    /// `sigmoid` (DPO), `ipo` or `listwise` (Plackett–Luce).
    pub loss: DpoLoss,
    /// β: the KL penalty's strength, the implicit reward's scale. 0.1, the paper's and TRL's.
    pub beta: f64,
    /// ε of conservative DPO (labels flipped with probability ε); `sigmoid` only. 0.
    pub label_smoothing: f64,
    /// Passes over the training prompts. 1.
    pub epochs: u64,
    /// Share of prompts held out for preference accuracy. 0.1.
    pub eval_fraction: f64,
    /// Sequences per forward pass when computing log-probs without gradients. 32.
    pub rows: usize,
    /// `max_steps` comes from `epochs`; `batch_size` counts prompts (each with its K responses).
    pub trainer: TrainerConfig,
    /// LoRA instead of every weight (`--lora`; off by default).
    pub lora: LoraConfig,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            loss: DpoLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            epochs: 1,
            eval_fraction: 0.1,
            rows: 32,
            trainer: TrainerConfig {
                lr: 1e-5,
                warmup_steps: 10,
                batch_size: 8,
                weight_decay: 0.0,
                eval_every: 0,
                checkpoint_every: 0,
                loss_weighting: LossWeighting::MicroBatch,
                ..Default::default()
            },
            lora: LoraConfig::default(),
        }
    }
}

impl DpoConfig {
    /// Checks every value before a model is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("dpo config: {m}")));
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return bad(format!("beta must be a positive number, got {}", self.beta));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing must be in [0, 0.5), got {}",
                self.label_smoothing
            ));
        }
        if self.label_smoothing > 0.0 && self.loss != DpoLoss::Sigmoid {
            return bad("label_smoothing applies to loss = \"sigmoid\" only".into());
        }
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return bad(format!(
                "eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            ));
        }
        if self.rows == 0 {
            return bad("rows must be at least 1".into());
        }
        crate::adapter::validate(&self.lora)?;
        self.trainer.validate()
    }
}

// ---------------------------------------------------------------------------------------------
// The losses, as pure functions.

/// DPO's loss per pair: `margin` (M,) holds `(log π_w − log ref_w) − (log π_l − log ref_l)`.
pub fn sigmoid_loss(margin: &Tensor, beta: f64, label_smoothing: f64) -> Tensor {
    let z = margin * beta;
    -(z.log_sigmoid() * (1.0 - label_smoothing)) - (-&z).log_sigmoid() * label_smoothing
}

/// IPO's loss per pair: `(margin − 1/(2β))²`, `margin` from length-averaged log-probs.
pub fn ipo_loss(margin: &Tensor, beta: f64) -> Tensor {
    (margin - 1.0 / (2.0 * beta)).square()
}

/// The Plackett–Luce loss of one prompt's ranking: `scores` (K,) are the implicit rewards
/// `β (log π − log ref)`, `groups` the ranking best first (a group of several is a tie). The mean
/// over the terms of every group but the last (see the module doc); an error if there is no
/// term (a single group: everything tied).
pub fn listwise_loss(scores: &Tensor, groups: &[Vec<usize>]) -> Result<Tensor> {
    let mut terms = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let below: Vec<i64> = groups[g + 1..]
            .iter()
            .flatten()
            .map(|&j| j as i64)
            .collect();
        if below.is_empty() {
            break;
        }
        let below = scores.index_select(0, &Tensor::from_slice(&below).to_device(scores.device()));
        for &i in group {
            let s = scores.get(i as i64);
            let all = Tensor::cat(&[&s.unsqueeze(0), &below], 0);
            terms.push(&s - all.logsumexp([0i64].as_slice(), false));
        }
    }
    if terms.is_empty() {
        return Err(TrainError::Invalid(
            "a ranking with every response tied has nothing to learn from".into(),
        ));
    }
    Ok(-Tensor::stack(&terms, 0).mean(scores.kind()))
}

// ---------------------------------------------------------------------------------------------
// Data.

/// One prompt's encoded responses with the reference's log-probs.
#[derive(Debug, Clone)]
pub struct PrefItem {
    pub prompt: Vec<i64>,
    /// Response tokens (EOS included), one per response.
    pub responses: Vec<Vec<i64>>,
    /// The ranking, best first.
    pub groups: Vec<Vec<usize>>,
    /// Its untied (winner, loser) pairs.
    pub pairs: Vec<(usize, usize)>,
    /// The noise-free oracle's untied pairs, for task-world prompts.
    pub oracle_pairs: Option<Vec<(usize, usize)>>,
    /// Σ log π_ref(response) per response (filled by [`reference_logprobs`]).
    pub ref_logps: Vec<f64>,
}

fn to_message(m: &rlhf_data::Message) -> Message {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    Message::new(role, m.content.clone())
}

/// Reads and encodes every preference record (rankings or TRL's preference shapes); errors name
/// the file, the line and the field: a missing or ill-typed field, an empty or identical pair, a
/// prompt that leaves no room in the context, a prompt + response beyond it.
pub fn encode_items(pre: &Pretrained, data: &Path) -> Result<Vec<PrefItem>> {
    let budget = crate::data::text_budget(pre);
    let records: Vec<(usize, PreferenceRecord)> = read_jsonl_within(data, budget.as_ref())?;
    let max = pre.model.cfg.max_positions as usize;
    let oracle = SimulatedLabeler::noise_free();
    let mut out = Vec::with_capacity(records.len());
    for (line, r) in &records {
        let at = |field: &str, e: TrainError| e.at(data, *line, field);
        let msgs: Vec<Message> = r.prompt.iter().map(to_message).collect();
        let prompt: Vec<i64> = pre
            .tokenizer
            .apply_chat(&msgs, true)
            .map_err(|e| at("prompt", TrainError::Invalid(e.to_string())))?
            .into_iter()
            .map(i64::from)
            .collect();
        if prompt.len() >= max {
            let e = TrainError::Invalid(format!(
                "the prompt is {} tokens, leaving no room for a response in the model's context \
                 of {max}",
                prompt.len()
            ));
            return Err(at("prompt", e));
        }
        let mut responses = Vec::with_capacity(r.responses.len());
        for (i, text) in r.responses.iter().enumerate() {
            let full = pre
                .encode_response(&prompt, text)
                .map_err(|e| at(&r.fields[i], e.into()))?;
            if full.len() > max {
                let e = TrainError::Invalid(format!(
                    "prompt + response are {} tokens, longer than the model's context of {max}",
                    full.len()
                ));
                return Err(at(&r.fields[i], e));
            }
            responses.push(full[prompt.len()..].to_vec());
        }
        // The oracle knows task-world prompts: a single user message.
        let oracle_pairs = match r.prompt.as_slice() {
            [m] if m.role == Role::User => oracle
                .rank_prompt(&m.content, &r.responses)
                .ok()
                .map(|o| o.pairs()),
            _ => None,
        };
        out.push(PrefItem {
            prompt,
            responses,
            groups: r.ranking.groups().to_vec(),
            pairs: r.ranking.pairs(),
            oracle_pairs,
            ref_logps: vec![],
        });
    }
    Ok(out)
}

/// Fills every item's `ref_logps` with `gpt`'s summed log-probs (no gradients).
pub fn reference_logprobs(gpt: &Gpt, items: &mut [PrefItem], pad: i64, rows: usize) -> Result<()> {
    let (prompts, responses) = flat(items);
    let lps = sequence_logprobs(gpt, &prompts, &responses, pad, 1.0, rows)?;
    let mut it = lps.into_iter();
    for item in items.iter_mut() {
        item.ref_logps = (&mut it)
            .take(item.responses.len())
            .map(|l| l.sum)
            .collect();
    }
    Ok(())
}

/// Every response of `items` with its prompt, in order.
fn flat(items: &[PrefItem]) -> (Vec<&[i64]>, Vec<&[i64]>) {
    let mut prompts = Vec::new();
    let mut responses = Vec::new();
    for it in items {
        for r in &it.responses {
            prompts.push(it.prompt.as_slice());
            responses.push(r.as_slice());
        }
    }
    (prompts, responses)
}

/// Shuffled epochs over prompts; a batch is a list of item indices.
pub struct PrefData {
    epochs: Epochs,
}

impl PrefData {
    pub fn new(n: usize, batch: usize, seed: u64) -> Self {
        Self {
            epochs: Epochs::new(n, batch, seed, 5),
        }
    }

    /// Yields only `shard`'s slice of every global batch (data parallelism; see [`Shard`]).
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        self.epochs = self.epochs.sharded(shard)?;
        Ok(self)
    }
}

impl DataSource for PrefData {
    type Batch = Vec<usize>;

    fn next_batch(&mut self) -> Result<Option<Vec<usize>>> {
        Ok(Some(self.epochs.next_indices()))
    }

    fn position(&self) -> DataPosition {
        self.epochs.position()
    }

    fn seek(&mut self, pos: &DataPosition) -> Result<()> {
        self.epochs.seek(pos);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The step.

/// The policy, the training and held-out items.
pub struct DpoStep<'a> {
    pub gpt: &'a Gpt,
    pub items: Vec<PrefItem>,
    pub eval: Vec<PrefItem>,
    pub pad: i64,
    pub cfg: DpoConfig,
}

/// What a batch's loss and metrics are computed from.
struct Scored {
    /// Σ log π − Σ log ref per response (N,), attached to the graph.
    logratio: Tensor,
    /// Response lengths (N,), for IPO's averages.
    lengths: Tensor,
}

fn policy_scores(gpt: &Gpt, items: &[&PrefItem], pad: i64) -> Result<Scored> {
    let mut prompts = Vec::new();
    let mut responses = Vec::new();
    let mut refs = Vec::new();
    for it in items {
        for (r, lp) in it.responses.iter().zip(&it.ref_logps) {
            prompts.push(it.prompt.as_slice());
            responses.push(r.as_slice());
            refs.push(*lp);
        }
    }
    let batch = ResponseBatch::new(&prompts, &responses, pad, gpt.device())?;
    let (logp, _) = response_logprobs(gpt, &batch, 1.0)?;
    let sum = (logp * &batch.mask).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let refs = Tensor::from_slice(&refs)
        .to_kind(Kind::Float)
        .to_device(sum.device());
    Ok(Scored {
        logratio: sum - refs,
        lengths: batch
            .mask
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float),
    })
}

/// The batch's loss (per-prompt means, averaged over prompts) and TRL's reward metrics.
fn batch_loss(
    items: &[&PrefItem],
    s: &Scored,
    cfg: &DpoConfig,
) -> Result<(Tensor, Vec<(String, Tensor)>)> {
    let dev = s.logratio.device();
    let (mut w, mut l, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    let mut base = 0usize;
    let prompts = items
        .iter()
        .filter(|it| !it.pairs.is_empty())
        .count()
        .max(1);
    let mut listwise = Vec::new();
    for it in items {
        for &(a, b) in &it.pairs {
            w.push((base + a) as i64);
            l.push((base + b) as i64);
            weight.push(1.0 / (it.pairs.len() * prompts) as f32);
        }
        if cfg.loss == DpoLoss::Listwise && !it.pairs.is_empty() {
            let scores = s.logratio.narrow(0, base as i64, it.responses.len() as i64) * cfg.beta;
            listwise.push(listwise_loss(&scores, &it.groups)?);
        }
        base += it.responses.len();
    }
    if w.is_empty() {
        return Err(TrainError::Invalid(
            "no untied pair to learn from in this batch".into(),
        ));
    }
    let (w, l) = (
        Tensor::from_slice(&w).to_device(dev),
        Tensor::from_slice(&l).to_device(dev),
    );
    let weight = Tensor::from_slice(&weight).to_device(dev);
    let (rw, rl) = (
        s.logratio.index_select(0, &w),
        s.logratio.index_select(0, &l),
    );
    let loss = match cfg.loss {
        DpoLoss::Sigmoid => {
            (sigmoid_loss(&(&rw - &rl), cfg.beta, cfg.label_smoothing) * &weight).sum(Kind::Float)
        }
        DpoLoss::Ipo => {
            let avg = |r: &Tensor, idx: &Tensor| r / s.lengths.index_select(0, idx).clamp_min(1.0);
            (ipo_loss(&(avg(&rw, &w) - avg(&rl, &l)), cfg.beta) * &weight).sum(Kind::Float)
        }
        DpoLoss::Listwise => Tensor::stack(&listwise, 0).mean(Kind::Float),
    };
    let (cw, cl) = ((&rw * cfg.beta).detach(), (&rl * cfg.beta).detach());
    let metrics = vec![
        ("rewards/chosen".to_string(), cw.mean(Kind::Float)),
        ("rewards/rejected".to_string(), cl.mean(Kind::Float)),
        ("rewards/margins".to_string(), (&cw - &cl).mean(Kind::Float)),
        (
            "rewards/accuracies".to_string(),
            cw.gt_tensor(&cl).to_kind(Kind::Float).mean(Kind::Float),
        ),
    ];
    Ok((loss, metrics))
}

/// Held-out preference accuracy: the share of untied pairs whose implicit rewards order them like
/// the labels (and like the noise-free oracle, for task-world prompts); an exact tie counts half
/// (before training every margin is 0: 50%).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PrefAccuracy {
    pub labels: f64,
    pub label_pairs: usize,
    pub oracle: Option<f64>,
    pub oracle_pairs: usize,
    /// Mean implicit-reward margin (winner − loser) over the label pairs.
    pub margin: f64,
}

/// [`PrefAccuracy`] of `gpt` on `items` (no gradients).
pub fn preference_accuracy(
    gpt: &Gpt,
    items: &[PrefItem],
    pad: i64,
    beta: f64,
    rows: usize,
) -> Result<PrefAccuracy> {
    let (prompts, responses) = flat(items);
    let lps = sequence_logprobs(gpt, &prompts, &responses, pad, 1.0, rows)?;
    let (mut right, mut total, mut o_right, mut o_total, mut margin) = (0.0, 0, 0.0, 0, 0.0);
    let mut base = 0;
    for it in items {
        let r = |i: usize| beta * (lps[base + i].sum - it.ref_logps[i]);
        let score = |w: usize, l: usize| {
            let d = r(w) - r(l);
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        };
        for &(w, l) in &it.pairs {
            right += score(w, l);
            margin += r(w) - r(l);
            total += 1;
        }
        for &(w, l) in it.oracle_pairs.iter().flatten() {
            o_right += score(w, l);
            o_total += 1;
        }
        base += it.responses.len();
    }
    Ok(PrefAccuracy {
        labels: right / total.max(1) as f64,
        label_pairs: total,
        oracle: (o_total > 0).then(|| o_right / o_total as f64),
        oracle_pairs: o_total,
        margin: margin / total.max(1) as f64,
    })
}

impl TrainStep for DpoStep<'_> {
    type Batch = Vec<usize>;

    fn compute(&self) -> rlhf_model::Compute {
        self.gpt.compute()
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.gpt.trainable_parameters()
    }

    fn loss(&mut self, batch: &Vec<usize>) -> Result<StepOutput> {
        let items: Vec<&PrefItem> = batch.iter().map(|&i| &self.items[i]).collect();
        let scored = policy_scores(self.gpt, &items, self.pad)?;
        let (loss, metrics) = batch_loss(&items, &scored, &self.cfg)?;
        let mut out = StepOutput::new(loss, items.len() as i64);
        for (name, value) in metrics {
            out = out.metric(name, &value);
        }
        Ok(out)
    }

    fn eval(&mut self) -> Result<Metrics> {
        let acc =
            preference_accuracy(self.gpt, &self.eval, self.pad, self.cfg.beta, self.cfg.rows)?;
        let mut m = Metrics::from([
            ("preference_accuracy".to_string(), acc.labels),
            ("rewards/margins".to_string(), acc.margin),
        ]);
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

/// What a finished DPO run reports (also written as `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DpoSummary {
    pub loss: DpoLoss,
    pub train_prompts: usize,
    pub eval_prompts: usize,
    pub eval_accuracy_start: PrefAccuracy,
    pub eval_accuracy_end: PrefAccuracy,
    pub steps: u64,
    pub elapsed_s: f64,
    /// Seconds spent on the reference's log-probs, up front.
    pub reference_s: f64,
    pub out: PathBuf,
}

/// Trains the checkpoint in `model` on the preferences in `data`; `out` becomes the policy's
/// checkpoint (or adapter) directory and run folder.
pub fn dpo(
    model: &Path,
    data: &Path,
    out: &Path,
    cfg: &DpoConfig,
    resume: Resume,
    device: Device,
) -> Result<DpoSummary> {
    cfg.validate()?;
    let mut pre = Pretrained::load(model, Head::Lm, device)?;
    crate::adapter::prepare(&mut pre.model, &cfg.lora, model, cfg.trainer.seed)?;
    let mut items = encode_items(&pre, data)?;
    items.retain(|it| !it.pairs.is_empty());
    let n_eval = ((items.len() as f64) * cfg.eval_fraction).ceil() as usize;
    let batch = cfg.trainer.batch_size;
    if items.len() < n_eval + batch {
        return Err(TrainError::Invalid(format!(
            "{}: {} prompts with untied pairs are too few for {n_eval} held out plus a batch of \
             {batch}",
            data.display(),
            items.len()
        )));
    }
    let pad = pre.pad_id();
    let mut eval = items.split_off(items.len() - n_eval);
    let t0 = std::time::Instant::now();
    // The reference is the policy as loaded (with a fresh adapter, B = 0 makes it the base).
    // Each split is scored in the batches its evaluation uses, so that before training every
    // held-out margin is exactly 0.
    reference_logprobs(&pre.model, &mut items, pad, cfg.rows)?;
    reference_logprobs(&pre.model, &mut eval, pad, cfg.rows)?;
    let reference_s = t0.elapsed().as_secs_f64();
    let train_prompts = items.len();
    let mut trainer_cfg = cfg.trainer.clone();
    trainer_cfg.max_steps = cfg.epochs * (items.len() / batch) as u64;
    trainer_cfg.validate()?;
    let run = RunOptions::stage(out, "dpo", cfg, &[("model", model), ("data", data)], resume)?;
    let mut trainer = Trainer::new(trainer_cfg.clone(), run)?;
    let mut step = DpoStep {
        gpt: &pre.model,
        items,
        eval,
        pad,
        cfg: cfg.clone(),
    };
    let start = preference_accuracy(step.gpt, &step.eval, pad, cfg.beta, cfg.rows)?;
    let mut source =
        PrefData::new(step.items.len(), batch, trainer_cfg.seed).sharded(Shard::of_process())?;
    let summary = trainer.fit(&mut step, &mut source)?;
    let end = preference_accuracy(step.gpt, &step.eval, pad, cfg.beta, cfg.rows)?;
    checkpoint::export_with(&pre.model, summary.checkpoint.as_deref(), out, |dir| {
        Ok(pre.tokenizer.save(dir)?)
    })?;
    let s = DpoSummary {
        loss: cfg.loss,
        train_prompts,
        eval_prompts: n_eval,
        eval_accuracy_start: start,
        eval_accuracy_end: end,
        steps: summary.step,
        elapsed_s: summary.elapsed_s,
        reference_s,
        out: out.to_path_buf(),
    };
    if rlhf_model::dist::is_writer() {
        let path = out.join("summary.json");
        let json = serde_json::to_string_pretty(&s).expect("plain values serialise");
        std::fs::write(&path, json + "\n").map_err(|e| TrainError::io("write", &path, e))?;
    }
    Ok(s)
}
