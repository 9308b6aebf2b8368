//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019), written out here because tch's
//! `nn::Optimizer` hides its state (so it cannot be checkpointed), and gradient clipping by
//! global norm.
//!
//! Speed: every parameter lives in one flat buffer (Megatron/apex's contiguous-buffer trick):
//! each variable's data is a view into it, so an update costs the same few kernels whatever the
//! number of tensors. The update itself is libtorch's fused AdamW kernel (`_fused_adamw_`, which
//! tch does not bind; reached through `rlhf_model::fused`): one pass over parameters, gradient
//! and both moments, called once on the decayed prefix and once on the rest. `set_fused(false)`
//! gives PyTorch's single-tensor AdamW op for op instead (~10 whole-buffer passes; 2.3× slower
//! for gather + clip + update at 0.85M parameters).
//!
//! Not here: the LR schedule (`schedule.rs`), the loop (`trainer.rs`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};

/// AdamW's hyper-parameters other than the LR (which the schedule supplies per step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// (beta1, beta2). (0.9, 0.95): GPT-3.
    pub betas: [f64; 2],
    /// 1e-8: PyTorch's default.
    pub eps: f64,
    /// Decoupled decay for matrices (see [`decays`]). 0.1: GPT-3, nanoGPT.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Whether a parameter gets weight decay: matrices do; biases, norm gains (all 1-D) and the
/// token/position embeddings do not (nanoGPT's `configure_optimizers`, minGPT's blacklist).
pub fn decays(name: &str, shape: &[i64]) -> bool {
    let embedding = name
        .split('.')
        .any(|part| matches!(part, "wte" | "wpe" | "embed_tokens"));
    shape.len() >= 2 && !embedding
}

/// One parameter's place in the flat buffer.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Tensor,
    shape: Vec<i64>,
    offset: i64,
    numel: i64,
}

/// AdamW over a fixed set of named parameters.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    flat: Tensor,       // (N,) every parameter, decayed ones first
    n_decay: i64,       // length of the decayed prefix
    exp_avg: Tensor,    // (N,)
    exp_avg_sq: Tensor, // (N,)
    /// Gathered gradients, and scratch for the update: persistent because on CPU every fresh
    /// N-element temporary is an mmap plus page faults (~20% of the step at 1M parameters).
    grad: Tensor, // (N,)
    scratch: Tensor,    // (N,)
    step: u64,
    /// Update with libtorch's fused kernel (the default) rather than op by op.
    fused: bool,
    /// Gather, norm and clip in one pass (see [`AdamW::set_one_pass_clip`]).
    one_pass_clip: bool,
}

/// The step's gradient from [`AdamW::clipped_gradients`]: gathered, scaled and clipped (or, on
/// the one-pass path, with the clipping left to the update).
pub struct ClippedGradients {
    /// The flat gradient (the optimizer's own buffer, valid until the next `step`).
    pub grad: Tensor,
    /// The global L2 norm before clipping, as a one-element tensor.
    pub norm: Tensor,
    /// `1 / coefficient` when the one-pass path must still clip: the fused update divides the
    /// gradient by it.
    unscale: Option<Tensor>,
}

impl ClippedGradients {
    /// A gradient already clipped (e.g. by [`clip_grad_norm`] after an all-reduce).
    pub fn clipped(grad: Tensor, norm: Tensor) -> Self {
        Self {
            grad,
            norm,
            unscale: None,
        }
    }
}

impl AdamW {
    /// Takes over `params` (e.g. `vs.variables()`): their data moves into one flat buffer, so
    /// cast the model (`Gpt::set_kind`) before, not after. All must share one float kind and
    /// device, require grad and be distinct tensors (pass tied weights once).
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Result<Self> {
        let mut params = check_params(params)?;
        // Decayed first, then by name: a fixed order whatever the caller's map iteration order.
        params.sort_by(|(a, ta), (b, tb)| {
            let key = |n: &String, t: &Tensor| (!decays(n, &t.size()), n.clone());
            key(a, ta).cmp(&key(b, tb))
        });
        let flat = tch::no_grad(|| {
            let parts: Vec<Tensor> = params
                .iter()
                .map(|(_, t)| t.detach().reshape([-1]))
                .collect();
            Tensor::f_cat(&parts, 0)
        })?;
        let (mut slots, mut offset, mut n_decay) = (Vec::new(), 0, 0);
        for (name, mut var) in params {
            let (shape, numel) = (var.size(), var.numel() as i64);
            if decays(&name, &shape) {
                n_decay += numel;
            }
            var.f_set_data(&flat.f_narrow(0, offset, numel)?.f_view(shape.as_slice())?)?;
            slots.push(Slot {
                name,
                var,
                shape,
                offset,
                numel,
            });
            offset += numel;
        }
        Ok(Self {
            cfg,
            slots,
            exp_avg: flat.f_zeros_like()?,
            exp_avg_sq: flat.f_zeros_like()?,
            grad: flat.f_zeros_like()?,
            scratch: flat.f_zeros_like()?,
            flat,
            n_decay,
            step: 0,
            fused: true,
            one_pass_clip: false,
        })
    }

    /// Gathers the gradients and measures their norm in one pass, and leaves the clipping to the
    /// fused update (`true`; off by default), instead of a gather, a norm and a multiply over
    /// the whole buffer before the update. Taken only on a CPU with the fused update; its norm
    /// sums in another order and the update divides by `1 / coefficient` where the op-by-op clip
    /// multiplies by it, so results differ in the last bits: commands turn it on for bf16
    /// training only, whose results no fp32 reference pins.
    pub fn set_one_pass_clip(&mut self, on: bool) {
        self.one_pass_clip = on;
    }

    /// [`AdamW::gradients`] with `scale`, then [`clip_grad_norm`] to `max_norm` (0: no clipping),
    /// for [`AdamW::step_clipped`]; in one pass over memory when [`AdamW::set_one_pass_clip`]
    /// is on and the buffer is an fp32 CPU one. Not for data parallelism (the all-reduce goes
    /// between the gather and the norm).
    pub fn clipped_gradients(&mut self, scale: f64, max_norm: f64) -> Result<ClippedGradients> {
        let one_pass = self.one_pass_clip
            && self.fused
            && self.grad.device() == tch::Device::Cpu
            && self.grad.kind() == Kind::Float;
        if !one_pass {
            let mut grad = self.gradients(scale)?;
            let norm = clip_grad_norm(&mut grad, max_norm)?;
            return Ok(ClippedGradients {
                grad,
                norm,
                unscale: None,
            });
        }
        self.check_in_place()?;
        let grads: Vec<Option<Tensor>> = self
            .slots
            .iter()
            .map(|s| {
                let g = s.var.grad();
                g.defined().then_some(g)
            })
            .collect();
        let numels: Vec<i64> = self.slots.iter().map(|s| s.numel).collect();
        let sumsq = rlhf_model::fused::gather_grads(&grads, &numels, &self.grad, scale)?;
        let norm = sumsq.sqrt();
        // torch.nn.utils.clip_grad_norm_'s coefficient, in f32 as it computes it.
        let coef = (max_norm as f32 / (norm as f32 + 1e-6)).min(1.0);
        let unscale = (max_norm > 0.0 && coef < 1.0).then(|| Tensor::from(1.0f32 / coef));
        Ok(ClippedGradients {
            grad: self.grad.shallow_clone(),
            norm: Tensor::from(norm as f32),
            unscale,
        })
    }

    /// One AdamW update with the gradient of [`AdamW::clipped_gradients`].
    pub fn step_clipped(&mut self, g: &ClippedGradients, lr: f64) -> Result<()> {
        self.update(&g.grad, lr, g.unscale.as_ref())
    }

    /// Chooses the update's kernels: libtorch's fused AdamW (`true`, the default: one pass over
    /// parameters, gradient and moments, as `torch.optim.AdamW(fused=True)`) or PyTorch's
    /// single-tensor AdamW op by op (`false`, ~10 passes). Both compute the same update, up to
    /// rounding; the benches compare them.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Every optimised parameter as one flat buffer (the parameters are views into it): what
    /// data parallelism broadcasts from rank 0 so that all ranks start from the same weights.
    pub fn flat_parameters(&self) -> &Tensor {
        &self.flat
    }

    /// Number of parameters (elements) optimised, and how many of them get weight decay.
    pub fn numel(&self) -> (i64, i64) {
        (self.flat.numel() as i64, self.n_decay)
    }

    /// The accumulated gradients as one flat tensor, multiplied by `scale` (1 / the total loss
    /// weight of the step). A parameter that received no gradient counts as zero; unlike
    /// PyTorch, which skips it, it is still decayed. The tensor is the optimizer's own buffer:
    /// valid until the next `step`, which reuses it as scratch.
    pub fn gradients(&mut self, scale: f64) -> Result<Tensor> {
        self.check_in_place()?;
        let parts = self
            .slots
            .iter()
            .map(|s| {
                let g = s.var.grad();
                if g.defined() {
                    g.f_reshape([-1])
                } else {
                    Tensor::f_zeros([s.numel], (self.flat.kind(), self.flat.device()))
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut flat = Tensor::f_cat_out(&self.grad, &parts, 0)?;
        if scale != 1.0 {
            let _ = flat.f_mul_scalar_(scale)?;
        }
        Ok(flat)
    }

    /// Drops every parameter's gradient, as PyTorch's `zero_grad(set_to_none=True)` does: the
    /// next backward stores its gradient instead of adding it to zeros, which saves a fill and
    /// an add over every parameter. The values are the same (0 + g = g); `gradients` reads a
    /// parameter without one as zero.
    pub fn zero_grad(&mut self) {
        for slot in &self.slots {
            rlhf_model::fused::clear_grad(&slot.var);
        }
    }

    /// One AdamW update with the (already scaled and clipped) flat gradient from
    /// [`AdamW::gradients`]; PyTorch's `_single_tensor_adamw`, op for op.
    pub fn step(&mut self, grad: &Tensor, lr: f64) -> Result<()> {
        self.update(grad, lr, None)
    }

    /// The update, with the fused kernel dividing the gradient by `unscale` when given.
    fn update(&mut self, grad: &Tensor, lr: f64, unscale: Option<&Tensor>) -> Result<()> {
        if unscale.is_some() && !self.fused {
            return Err(TrainError::Invalid(
                "an unscaled update needs the fused AdamW kernel".into(),
            ));
        }
        self.step += 1;
        let [b1, b2] = self.cfg.betas;
        if self.fused {
            let h = rlhf_model::fused::AdamWStep {
                lr,
                beta1: b1,
                beta2: b2,
                weight_decay: self.cfg.weight_decay,
                eps: self.cfg.eps,
                step: self.step,
            };
            // Two calls: the decayed prefix, then the rest without decay.
            let n = self.flat.size()[0];
            let no_decay = rlhf_model::fused::AdamWStep {
                weight_decay: 0.0,
                ..h
            };
            let spans = [
                (0, self.n_decay, h),
                (self.n_decay, n - self.n_decay, no_decay),
            ];
            for (start, len, h) in spans.into_iter().filter(|s| s.1 > 0) {
                let part = |t: &Tensor| t.f_narrow(0, start, len);
                tch::no_grad(|| {
                    rlhf_model::fused::adamw_(
                        &part(&self.flat)?,
                        &part(grad)?,
                        &part(&self.exp_avg)?,
                        &part(&self.exp_avg_sq)?,
                        h,
                        unscale,
                    )
                    .map_err(TrainError::from)
                })?;
            }
            return Ok(());
        }
        let t = self.step as f64;
        let (bc1, bc2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
        tch::no_grad(|| -> Result<()> {
            if self.cfg.weight_decay > 0.0 && self.n_decay > 0 {
                let mut decayed = self.flat.f_narrow(0, 0, self.n_decay)?;
                let _ = decayed.f_mul_scalar_(1.0 - lr * self.cfg.weight_decay)?;
            }
            let _ = self.exp_avg.f_lerp_(grad, 1.0 - b1)?;
            // addcmul_(g, g, value=1-b2) computes ((1-b2) * g) * g: pre-scaling one factor is
            // the same arithmetic.
            let _ = self.exp_avg_sq.f_mul_scalar_(b2)?;
            let g2 = grad.f_mul_scalar_out(&self.scratch, 1.0 - b2)?;
            let _ = self.exp_avg_sq.f_addcmul_(&g2, grad)?;
            let mut denom = self.exp_avg_sq.f_sqrt_out(&self.scratch)?;
            let _ = denom.f_div_scalar_(bc2.sqrt())?;
            let _ = denom.f_add_scalar_(self.cfg.eps)?;
            // addcdiv_(m, d, value=-lr/bc1) computes (value * m) / d, likewise. The gradient is
            // no longer needed: its buffer takes the scaled moment.
            let scaled = self.exp_avg.f_mul_scalar_out(&self.grad, -lr / bc1)?;
            let _ = self.flat.f_addcdiv_(&scaled, &denom)?;
            Ok(())
        })
    }

    /// The state to checkpoint: `exp_avg.<name>`, `exp_avg_sq.<name>` per parameter (in the
    /// parameter's shape, so a mismatch names the tensor) and a scalar `step`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            let view = |t: &Tensor| t.narrow(0, s.offset, s.numel).view(s.shape.as_slice());
            out.push((format!("exp_avg.{}", s.name), view(&self.exp_avg)));
            out.push((format!("exp_avg_sq.{}", s.name), view(&self.exp_avg_sq)));
        }
        out.push(("step".into(), Tensor::from(self.step as f64)));
        out
    }

    /// Restores [`AdamW::state`]; `origin` (the file) is named in errors. Every tensor must be
    /// present with this model's shape, and nothing else may be there.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>, origin: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = state.into_iter().collect();
        let err = |msg: String| TrainError::checkpoint(origin, msg);
        let step = map
            .remove("step")
            .ok_or_else(|| err("no 'step' tensor".into()))?;
        let step = f64::try_from(&step)?;
        tch::no_grad(|| -> Result<()> {
            for s in &self.slots {
                for (prefix, buf) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
                {
                    let key = format!("{prefix}.{}", s.name);
                    let t = map.remove(&key).ok_or_else(|| {
                        err(format!(
                            "no optimizer state for parameter '{}': the checkpoint belongs to a \
                             different model",
                            s.name
                        ))
                    })?;
                    if t.size() != s.shape {
                        return Err(err(format!(
                            "optimizer state '{key}' has shape {:?}, this model's parameter has \
                             {:?}: the checkpoint belongs to a different model",
                            t.size(),
                            s.shape
                        )));
                    }
                    let mut dst = buf.f_narrow(0, s.offset, s.numel)?;
                    dst.f_copy_(&t.f_reshape([-1])?)?;
                }
            }
            Ok(())
        })?;
        if let Some(extra) = map.keys().min() {
            return Err(err(format!(
                "optimizer state '{extra}' matches no parameter of this model: the checkpoint \
                 belongs to a different model"
            )));
        }
        self.step = step as u64;
        Ok(())
    }

    /// Every parameter must still be a view into `flat`: `set_data` (e.g. `Gpt::set_kind`) after
    /// construction would silently detach it from the optimizer.
    fn check_in_place(&self) -> Result<()> {
        let base = self.flat.data_ptr() as usize;
        let elt = self.flat.kind().elt_size_in_bytes();
        for s in &self.slots {
            if s.var.data_ptr() as usize != base + s.offset as usize * elt {
                return Err(TrainError::Invalid(format!(
                    "parameter '{}' was replaced after the optimizer took it over (cast or load \
                     the model before creating the trainer)",
                    s.name
                )));
            }
        }
        Ok(())
    }
}

/// Rejects what the flat buffer cannot hold: nothing to train, mixed kinds or devices, integer
/// tensors, tensors without grad, duplicate names or shared storage.
fn check_params(params: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let invalid = |msg: String| Err(TrainError::Invalid(msg));
    let Some((first_name, first)) = params.first() else {
        return invalid("no trainable parameters".into());
    };
    let (kind, device) = (first.kind(), first.device());
    if !matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    ) {
        return invalid(format!(
            "parameter '{first_name}' has non-float kind {kind:?}"
        ));
    }
    let (mut names, mut ptrs) = (HashSet::new(), HashMap::new());
    for (name, t) in &params {
        if t.kind() != kind || t.device() != device {
            return invalid(format!(
                "parameters must share one kind and device: '{first_name}' is {kind:?} on \
                 {device:?}, '{name}' is {:?} on {:?}",
                t.kind(),
                t.device()
            ));
        }
        if !t.requires_grad() {
            return invalid(format!("parameter '{name}' does not require grad"));
        }
        if !names.insert(name.clone()) {
            return invalid(format!("parameter '{name}' is listed twice"));
        }
        if let Some(other) = ptrs.insert(t.data_ptr() as usize, name.clone()) {
            return invalid(format!(
                "parameters '{other}' and '{name}' share storage (tied weights): pass it once"
            ));
        }
    }
    Ok(params)
}

/// Scales `grad` in place so that its global L2 norm is at most `max_norm` (0 disables) and
/// returns the pre-clip norm as a device scalar: no host sync. Same arithmetic as
/// `torch.nn.utils.clip_grad_norm_` (coefficient `max_norm / (norm + 1e-6)`, clamped to 1).
pub fn clip_grad_norm(grad: &mut Tensor, max_norm: f64) -> Result<Tensor> {
    let norm = grad.f_norm()?;
    if max_norm > 0.0 {
        let denom = norm.f_add_scalar(1e-6)?;
        let coef = norm
            .f_ones_like()?
            .f_mul_scalar(max_norm)?
            .f_div(&denom)?
            .f_clamp_max(1.0)?;
        let _ = grad.f_mul_(&coef)?;
    }
    Ok(norm)
}
