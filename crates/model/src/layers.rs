//! Building blocks shared by both families: linear maps in either weight layout, the two norms,
//! and the rotary position table. Each owns its tensors, registered in a `VarStore` under the
//! exact Hugging Face name so checkpoints load and save without a renaming table.
//!
//! Shapes: B batch, T time, C channels, nh heads, nkv key/value heads, hs head size.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Std of the normal init for fresh weights (GPT-2's and Llama's `initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// How the weight matrix is stored on disk (and therefore in the var store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `nn.Linear`: weight (out, in).
    OutIn,
    /// GPT-2's `Conv1D`: weight (in, out).
    InOut,
}

/// A dense map `y = x W (+ b)` with HF tensor names `{name}.weight` / `{name}.bias`, plus an
/// optional LoRA update `scale · B A x` (`crate::lora`).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    layout: Layout,
    /// The module's transformers name (e.g. `model.layers.0.self_attn.q_proj`).
    pub module: String,
    pub lora: Option<LoraLinear>,
}

/// A LoRA update on one linear map: `A` (r, in), `B` (out, r) under PEFT's shapes whatever the
/// base weight's layout, and the scale `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
#[derive(Debug)]
pub struct LoraLinear {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// Dropout on the adapter's input, applied only while gradients are recorded (training).
    pub dropout: f64,
}

impl LoraLinear {
    /// The update `scale · B A x` for x (..., in).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let train = self.dropout > 0.0 && crate::skinny::grad_enabled();
        let x = if train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear(&self.a, None::<&Tensor>)
            .linear(&self.b, None::<&Tensor>)
            * self.scale
    }

    /// The update as a dense matrix in the base weight's layout: (out, in) or (in, out).
    pub fn delta(&self, layout: Layout) -> Tensor {
        let d = self.b.matmul(&self.a) * self.scale; // (out, in)
        match layout {
            Layout::OutIn => d,
            Layout::InOut => d.tr(),
        }
    }

    fn share(&self) -> Self {
        Self {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            scale: self.scale,
            dropout: self.dropout,
        }
    }
}

impl Linear {
    /// Registers the weight (normal, std `init_std`) and optionally a zero bias.
    pub fn new(p: &Path, dims: (i64, i64), layout: Layout, bias: bool, init_std: f64) -> Self {
        let (d_in, d_out) = dims;
        let shape = match layout {
            Layout::OutIn => [d_out, d_in],
            Layout::InOut => [d_in, d_out],
        };
        let weight = p.var(
            "weight",
            &shape,
            Init::Randn {
                mean: 0.0,
                stdev: init_std,
            },
        );
        let bias = bias.then(|| p.var("bias", &[d_out], Init::Const(0.0)));
        Self {
            weight,
            bias,
            layout,
            module: p.components().collect::<Vec<_>>().join("."),
            lora: None,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// (in, out) of the map, whatever the layout.
    pub fn dims(&self) -> (i64, i64) {
        let s = self.weight.size();
        match self.layout {
            Layout::OutIn => (s[1], s[0]),
            Layout::InOut => (s[0], s[1]),
        }
    }

    /// The same map over the same tensors (no copy), with or without its LoRA update.
    pub fn share(&self, with_lora: bool) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
            layout: self.layout,
            module: self.module.clone(),
            lora: self
                .lora
                .as_ref()
                .filter(|_| with_lora)
                .map(LoraLinear::share),
        }
    }

    /// Several maps of the same input, `[l.forward(x) for l in linears]`: on AMX or vdpbf16ps
    /// decode copies in one pass ([`crate::skinny::linear_many`], the same values to the bit),
    /// else one by one.
    pub fn forward_many<const N: usize>(linears: [&Linear; N], x: &Tensor) -> [Tensor; N] {
        let fused = linears
            .iter()
            .all(|l| l.layout == Layout::OutIn)
            .then(|| {
                let ws = linears.map(|l| (&l.weight, l.bias.as_ref()));
                crate::skinny::linear_many(x, &ws)
            })
            .flatten();
        match fused {
            Some(ys) => {
                let mut ys = ys.into_iter();
                linears.map(|l| {
                    let y = ys.next().expect("one output per map");
                    match &l.lora {
                        Some(lora) => y + lora.forward(x),
                        None => y,
                    }
                })
            }
            None => linears.map(|l| l.forward(x)),
        }
    }

    /// (..., in) -> (..., out)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.forward_base(x);
        match &self.lora {
            Some(l) => y + l.forward(x),
            None => y,
        }
    }

    fn forward_base(&self, x: &Tensor) -> Tensor {
        let in_out = self.layout == Layout::InOut;
        if let Some(y) = crate::fused::linear_bf16(x, &self.weight, self.bias.as_ref(), in_out) {
            return y;
        }
        match self.layout {
            Layout::OutIn => crate::skinny::linear(x, &self.weight, self.bias.as_ref())
                .unwrap_or_else(|| x.linear(&self.weight, self.bias.as_ref())),
            Layout::InOut => match &self.bias {
                // addmm on the flattened input is one fused BLAS call (Conv1D's own trick).
                Some(b) => {
                    let mut out_shape = x.size();
                    let d_in = out_shape.pop().unwrap_or(0);
                    out_shape.push(self.weight.size()[1]);
                    b.addmm(&x.reshape([-1, d_in]), &self.weight)
                        .reshape(out_shape)
                }
                None => x.matmul(&self.weight),
            },
        }
    }
}

/// LayerNorm (GPT-2) or RMSNorm (Llama family), names `{name}.weight` (+ `{name}.bias`).
#[derive(Debug)]
pub enum Norm {
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
        dim: i64,
    },
    Rms {
        weight: Tensor,
        eps: f64,
        dim: i64,
    },
}

impl Norm {
    /// The same norm over the same tensors (no copy).
    pub fn share(&self) -> Self {
        match self {
            Norm::Layer {
                weight,
                bias,
                eps,
                dim,
            } => Norm::Layer {
                weight: weight.shallow_clone(),
                bias: bias.shallow_clone(),
                eps: *eps,
                dim: *dim,
            },
            Norm::Rms { weight, eps, dim } => Norm::Rms {
                weight: weight.shallow_clone(),
                eps: *eps,
                dim: *dim,
            },
        }
    }

    pub fn layer(p: &Path, dim: i64, eps: f64) -> Self {
        let weight = p.var("weight", &[dim], Init::Const(1.0));
        let bias = p.var("bias", &[dim], Init::Const(0.0));
        Norm::Layer {
            weight,
            bias,
            eps,
            dim,
        }
    }

    pub fn rms(p: &Path, dim: i64, eps: f64) -> Self {
        Norm::Rms {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            eps,
            dim,
        }
    }

    /// (..., C) -> (..., C)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Norm::Layer {
                weight,
                bias,
                eps,
                dim,
            } => x.layer_norm([*dim], Some(weight), Some(bias), *eps, true),
            Norm::Rms { weight, eps, dim } => crate::skinny::rms_norm(x, weight, *eps)
                .unwrap_or_else(|| x.rms_norm([*dim], Some(weight), *eps)),
        }
    }
}

/// Precomputed cos/sin tables for RoPE in transformers' "rotate_half" convention: the first half
/// of each head's channels pairs with the second half.
#[derive(Debug)]
pub struct Rope {
    cos: Tensor, // (P, hs)
    sin: Tensor, // (P, hs)
}

impl Rope {
    pub fn share(&self) -> Self {
        Self {
            cos: self.cos.shallow_clone(),
            sin: self.sin.shallow_clone(),
        }
    }

    pub fn new(head_dim: i64, max_positions: i64, theta: f64, device: tch::Device) -> Self {
        let opts = (Kind::Float, device);
        let exponents = Tensor::arange_start_step(0, head_dim, 2, opts) / head_dim as f64;
        let inv_freq = Tensor::from(theta)
            .to_device(device)
            .pow(&exponents)
            .reciprocal(); // (hs/2)
        let pos = Tensor::arange(max_positions, opts); // (P)
        let freqs = pos.outer(&inv_freq); // (P, hs/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // (P, hs)
        Self {
            cos: emb.cos(),
            sin: emb.sin(),
        }
    }

    /// The cos and sin rows (B, 1, T, hs) for integer positions `pos` (B, T), computed once per
    /// forward pass and shared by every layer.
    pub fn tables(&self, pos: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let (b, t) = pos.size2().unwrap_or((0, 0));
        let hs = self.cos.size()[1];
        let flat = pos.reshape([-1]);
        let pick = |table: &Tensor| {
            table
                .index_select(0, &flat)
                .reshape([b, 1, t, hs])
                .to_kind(kind)
        };
        (pick(&self.cos), pick(&self.sin))
    }

    /// Rotates `x` (B, n, T, hs) with tables from [`Rope::tables`].
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        // Decoding-sized and no graph: one pass on the CPU (the same result to the bit).
        if let Some(y) = crate::skinny::rope(x, cos, sin) {
            return y;
        }
        let half = x.size()[3] / 2;
        let x1 = x.narrow(-1, 0, half);
        let x2 = x.narrow(-1, half, half);
        let rotated = Tensor::cat(&[&x2.neg(), &x1], -1);
        x * cos + rotated * sin
    }
}
