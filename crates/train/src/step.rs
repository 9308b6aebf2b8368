//! What an algorithm gives the trainer: the [`TrainStep`] trait (parameters, a loss per
//! micro-batch, an evaluation, saving and loading its models) and what a step returns.
//!
//! The trainer knows nothing else about the algorithm: pretraining, SFT, the reward model and PPO
//! are each one `TrainStep` (burn's `TrainStep`, minGPT's trainer/model split).

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use crate::error::Result;

/// Named scalar metrics, sorted by name so logs and checkpoints are stable.
pub type Metrics = BTreeMap<String, f64>;

/// One micro-batch's result.
#[derive(Debug)]
pub struct StepOutput {
    /// Scalar loss, still attached to the graph: the mean over the `tokens` items it covers.
    pub loss: Tensor,
    /// How many items (tokens for LM losses, pairs for a ranking loss) the loss averages over:
    /// the micro-batch's weight under `LossWeighting::Tokens`, and the tokens/s count.
    pub tokens: i64,
    /// Extra scalars to log (accuracy, KL, ...), any device; averaged over the step's
    /// micro-batches with the same weights as the loss. Read on the host once per step.
    pub metrics: Vec<(String, Tensor)>,
}

impl StepOutput {
    pub fn new(loss: Tensor, tokens: i64) -> Self {
        Self {
            loss,
            tokens,
            metrics: Vec::new(),
        }
    }

    /// Adds a scalar metric (detached here, so callers need not).
    pub fn metric(mut self, name: impl Into<String>, value: &Tensor) -> Self {
        self.metrics.push((name.into(), value.detach()));
        self
    }
}

/// One training algorithm, as the generic loop sees it.
pub trait TrainStep {
    /// What the data source yields for one micro-batch.
    type Batch;

    /// The trainable parameters with unique names (tied weights once). Names decide weight decay
    /// (`optim::decays`) and key the optimizer state in checkpoints. Called once, before the
    /// first step; the parameters then live in the optimizer's flat buffer.
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// The precision of the model's products. bf16 lets the trainer gather, measure and clip the
    /// gradient in one pass ([`crate::AdamW::set_one_pass_clip`]); fp32 (the default) keeps the
    /// op-by-op arithmetic that seeded fp32 results reproduce to the bit.
    fn compute(&self) -> rlhf_model::Compute {
        rlhf_model::Compute::Fp32
    }

    /// Forward pass on one micro-batch. The trainer runs backward, accumulation and the update.
    fn loss(&mut self, batch: &Self::Batch) -> Result<StepOutput>;

    /// Held-out evaluation, run under `no_grad` every `eval_every` steps. Keys are logged with an
    /// `eval/` prefix. Default: nothing to evaluate.
    fn eval(&mut self) -> Result<Metrics> {
        Ok(Metrics::new())
    }

    /// Writes the model(s) into a checkpoint directory (e.g. `Gpt::save`, a loadable Hugging Face
    /// layout). The trainer adds the optimizer state and `rlhf.json` beside them.
    fn save(&self, dir: &Path) -> Result<()>;

    /// Loads what `save` wrote, in place (the parameters stay in the optimizer's buffer, so copy
    /// into them, as `rlhf_model::load_weights` does). A checkpoint of another model must be an
    /// error (see `checkpoint::load_gpt`).
    fn load(&mut self, dir: &Path) -> Result<()>;
}
