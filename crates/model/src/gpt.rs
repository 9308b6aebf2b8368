//! The decoder: one implementation for GPT-2 and the Llama/Qwen2 family, read top to bottom as
//! embedding -> attention -> MLP -> block -> model. Every tensor lives in the model's `VarStore`
//! under its transformers name, so `model.safetensors` loads and saves round-trip.
//!
//! Not here: tokenization, sampling loops (`sample.rs`), training (the train crate).
//!
//! Shapes: B batch, T new tokens, L keys attended (past + T), C channels, V vocab,
//! nh heads, nkv key/value heads, hs head size.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::{self, Init, Path as VsPath};
use tch::{Device, Kind, Tensor};

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::layers::{INIT_STD, Layout, Linear, LoraLinear, Norm, Rope};
use crate::lora::{self, ADAPTER_WEIGHTS, LoraConfig, PEFT_PREFIX};
use crate::precision::Compute;
use crate::{checkpoint, footprint};

/// Which output head the model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Next-token logits (tied to the embedding when the config says so).
    Lm,
    /// One scalar per position (`score.weight`, `score.bias`): reward and value models.
    Scalar,
}

/// Token ids plus an optional padding mask (1 = real token, 0 = padding; left padding expected).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub input_ids: &'a Tensor,
    pub attention_mask: Option<&'a Tensor>,
}

/// Query, key and value projections: fused for GPT-2 (`c_attn`), separate for Llama.
#[derive(Debug)]
enum Qkv {
    Fused(Linear),
    Split { q: Linear, k: Linear, v: Linear },
}

#[derive(Debug)]
struct Attention {
    qkv: Qkv,
    out: Linear,
    nh: i64,
    nkv: i64,
    hs: i64,
}

impl Attention {
    fn new(p: &VsPath, cfg: &ModelConfig, resid_std: f64) -> Self {
        let (c, hs) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
        let (qkv, out) = match cfg.family {
            Family::Gpt2 => (
                Qkv::Fused(Linear::new(
                    &(p / "c_attn"),
                    (c, 3 * c),
                    Layout::InOut,
                    true,
                    INIT_STD,
                )),
                Linear::new(&(p / "c_proj"), (c, c), Layout::InOut, true, resid_std),
            ),
            Family::Llama | Family::Qwen2 => {
                let bias = cfg.attention_bias;
                let lin = |name: &str, d_out| {
                    Linear::new(&(p / name), (c, d_out), Layout::OutIn, bias, INIT_STD)
                };
                let split = Qkv::Split {
                    q: lin("q_proj", nh * hs),
                    k: lin("k_proj", nkv * hs),
                    v: lin("v_proj", nkv * hs),
                };
                let out = Linear::new(
                    &(p / "o_proj"),
                    (nh * hs, c),
                    Layout::OutIn,
                    false,
                    resid_std,
                );
                (split, out)
            }
        };
        Self {
            qkv,
            out,
            nh,
            nkv,
            hs,
        }
    }

    fn share(&self, lora: bool) -> Self {
        Self {
            qkv: match &self.qkv {
                Qkv::Fused(l) => Qkv::Fused(l.share(lora)),
                Qkv::Split { q, k, v } => Qkv::Split {
                    q: q.share(lora),
                    k: k.share(lora),
                    v: v.share(lora),
                },
            },
            out: self.out.share(lora),
            nh: self.nh,
            nkv: self.nkv,
            hs: self.hs,
        }
    }

    fn linears(&self) -> Vec<&Linear> {
        let mut all = match &self.qkv {
            Qkv::Fused(l) => vec![l],
            Qkv::Split { q, k, v } => vec![q, k, v],
        };
        all.push(&self.out);
        all
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = match &mut self.qkv {
            Qkv::Fused(l) => vec![l],
            Qkv::Split { q, k, v } => vec![q, k, v],
        };
        all.push(&mut self.out);
        all
    }

    /// x (B, T, C) -> q (B, nh, T, hs), k and v (B, nkv, T, hs)
    fn project(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, t, _) = x.size3().unwrap_or_default();
        let heads = |y: Tensor, n: i64| y.view([b, t, n, self.hs]).transpose(1, 2);
        match &self.qkv {
            Qkv::Fused(lin) => {
                let c = self.nh * self.hs;
                let y = lin.forward(x); // (B, T, 3C)
                let parts = y.split(c, 2);
                let [q, k, v] = <[Tensor; 3]>::try_from(parts).expect("split of 3C by C");
                (heads(q, self.nh), heads(k, self.nkv), heads(v, self.nkv))
            }
            Qkv::Split { q, k, v } => {
                let [q, k, v] = Linear::forward_many([q, k, v], x);
                (heads(q, self.nh), heads(k, self.nkv), heads(v, self.nkv))
            }
        }
    }

    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx<'_>, layer: usize) -> Tensor {
        let (b, t, _) = x.size3().unwrap_or_default();
        let (mut q, mut k, v) = self.project(x);
        if let Some((cos, sin)) = ctx.rope {
            q = Rope::apply(&q, cos, sin);
            k = Rope::apply(&k, cos, sin);
        }
        let (k, v) = match ctx.cache.as_deref_mut() {
            Some(cache) => cache.append(layer, &k, &v), // (B, nkv, L, hs)
            None => (k, v),
        };
        // One new token per row (decoding): the CPU kernel, when it applies.
        let one = (t == 1).then(|| crate::skinny::attend_one(&q, &k, &v, ctx.mask));
        let y = one
            .flatten()
            .unwrap_or_else(|| self.sdpa(&q, &k, &v, ctx.mask, ctx.is_causal)); // (B, nh, T, hs)
        self.merge_heads(&y, b, t)
    }

    /// libtorch's attention, q (B, nh, n, hs) against k, v (B, nkv, L, hs).
    fn sdpa(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
    ) -> Tensor {
        if let Some(y) = self.attend_small(q, k, v, mask, causal) {
            return y;
        }
        let gqa = self.nkv != self.nh;
        Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None, gqa)
    }

    /// Attention as plain products for short bf16 sequences on the CPU:
    /// scores q·kᵀ in bf16, then scale, mask and softmax in fp32, then the bf16 product with v.
    /// libtorch's CPU flash kernel, which SDPA picks here, is slow in backward at these sizes:
    /// 16 vs 7 ms forward + backward for (8, 9, 128, 64) in bf16 on 2 threads. Runs in every
    /// pass under CPU autocast (fp32 inputs are rounded as SDPA would round them) and in bf16
    /// passes with a graph. `None` (SDPA instead) outside that case: fp32 without autocast
    /// (which keeps its results to the bit), bf16 weights without a graph, another device, or
    /// scores over `SMALL_SCORES` elements.
    fn attend_small(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
    ) -> Option<Tensor> {
        const SMALL_SCORES: i64 = 1 << 24;
        let (b, nh, t, hs) = q.size4().ok()?;
        let l = k.size().get(2).copied()?;
        // Every pass under CPU autocast, with or without a graph, so that PPO's no-graph pass
        // for the old log-probs computes what its first minibatch recomputes (ratio exactly 1).
        let autocast = crate::precision::Autocast::is_enabled(Device::Cpu);
        let bf16 = (q.kind() == Kind::Float && autocast)
            || (q.kind() == Kind::BFloat16 && (autocast || crate::skinny::grad_enabled()));
        let fits = bf16
            && q.device() == Device::Cpu
            && b * nh * t * l <= SMALL_SCORES
            && (!causal || t == l);
        if !fits {
            return None;
        }
        let half = |x: &Tensor| x.to_kind(Kind::BFloat16);
        let (q, k, v) = (half(q), half(k), half(v));
        // Grouped-query heads: head h reads key/value head h / (nh / nkv).
        let widen = |x: &Tensor| {
            if self.nkv == self.nh {
                return x.shallow_clone();
            }
            let g = self.nh / self.nkv;
            x.unsqueeze(2)
                .expand([b, self.nkv, g, l, hs], false)
                .reshape([b, nh, l, hs])
        };
        let (k, v) = (widen(&k), widen(&v));
        let mut s = q.matmul(&k.transpose(-1, -2)).to_kind(Kind::Float); // (B, nh, T, L)
        s *= 1.0 / (hs as f64).sqrt();
        let dev = q.device();
        match mask {
            Some(m) => {
                let _ = s.masked_fill_(&m.logical_not(), f64::NEG_INFINITY);
            }
            None if causal => {
                let above = Tensor::ones([t, l], (Kind::Bool, dev)).triu(1);
                let _ = s.masked_fill_(&above, f64::NEG_INFINITY);
            }
            None => {}
        }
        let p = s.softmax(-1, Kind::Float).to_kind(Kind::BFloat16);
        Some(p.matmul(&v))
    }

    /// y (B, nh, n, hs) -> the output projection of the merged heads (B, n, C).
    fn merge_heads(&self, y: &Tensor, b: i64, n: i64) -> Tensor {
        self.out
            .forward(&y.transpose(1, 2).reshape([b, n, self.nh * self.hs]))
    }

    /// Attention for the queries at positions `from..from + n` only, against the keys and values
    /// of all T positions: x (B, T, C) -> (B, n, C). No cache (a full forward pass).
    fn forward_window(&self, x: &Tensor, ctx: &LayerCtx<'_>, from: i64, n: i64) -> Tensor {
        let (b, t, _) = x.size3().unwrap_or_default();
        let heads = |y: Tensor, rows: i64, h: i64| y.view([b, rows, h, self.hs]).transpose(1, 2);
        let (mut q, mut k, v) = match &self.qkv {
            // Separate projections: the query one runs on the window's rows only.
            Qkv::Split { q, k, v } => (
                heads(q.forward(&x.narrow(1, from, n)), n, self.nh),
                heads(k.forward(x), t, self.nkv),
                heads(v.forward(x), t, self.nkv),
            ),
            Qkv::Fused(_) => {
                let (q, k, v) = self.project(x);
                (q.narrow(2, from, n), k, v)
            }
        };
        if let Some((cos, sin)) = ctx.rope {
            q = Rope::apply(&q, &cos.narrow(2, from, n), &sin.narrow(2, from, n));
            k = Rope::apply(&k, cos, sin);
        }
        // The window's rows of the (B, 1, T, T) mask; SDPA's `is_causal` would align a shorter
        // query block to the first keys, so plain causal attention gets an explicit mask too.
        let mask = match ctx.mask {
            Some(m) => m.narrow(2, from, n),
            None => {
                let dev = x.device();
                let q_pos = Tensor::arange_start(from, from + n, (Kind::Int64, dev)).unsqueeze(1);
                let k_pos = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0);
                k_pos.le_tensor(&q_pos).view([1, 1, n, t])
            }
        };
        let y = self.sdpa(&q, &k, &v, Some(&mask), false); // (B, nh, n, hs)
        self.merge_heads(&y, b, n)
    }
}

#[derive(Debug)]
enum Mlp {
    /// GPT-2: c_proj(gelu_tanh(c_fc(x))).
    Gelu { fc: Linear, proj: Linear },
    /// Llama: down(silu(gate(x)) * up(x)).
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

impl Mlp {
    fn new(p: &VsPath, cfg: &ModelConfig, resid_std: f64) -> Self {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        match cfg.family {
            Family::Gpt2 => Mlp::Gelu {
                fc: Linear::new(&(p / "c_fc"), (c, i), Layout::InOut, true, INIT_STD),
                proj: Linear::new(&(p / "c_proj"), (i, c), Layout::InOut, true, resid_std),
            },
            Family::Llama | Family::Qwen2 => Mlp::SwiGlu {
                gate: Linear::new(&(p / "gate_proj"), (c, i), Layout::OutIn, false, INIT_STD),
                up: Linear::new(&(p / "up_proj"), (c, i), Layout::OutIn, false, INIT_STD),
                down: Linear::new(&(p / "down_proj"), (i, c), Layout::OutIn, false, resid_std),
            },
        }
    }

    fn share(&self, lora: bool) -> Self {
        match self {
            Mlp::Gelu { fc, proj } => Mlp::Gelu {
                fc: fc.share(lora),
                proj: proj.share(lora),
            },
            Mlp::SwiGlu { gate, up, down } => Mlp::SwiGlu {
                gate: gate.share(lora),
                up: up.share(lora),
                down: down.share(lora),
            },
        }
    }

    fn linears(&self) -> Vec<&Linear> {
        match self {
            Mlp::Gelu { fc, proj } => vec![fc, proj],
            Mlp::SwiGlu { gate, up, down } => vec![gate, up, down],
        }
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Mlp::Gelu { fc, proj } => vec![fc, proj],
            Mlp::SwiGlu { gate, up, down } => vec![gate, up, down],
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Mlp::Gelu { fc, proj } => proj.forward(&crate::fused::gelu_tanh(&fc.forward(x))),
            Mlp::SwiGlu { gate, up, down } => {
                let [g, u] = Linear::forward_many([gate, up], x);
                down.forward(&(g.silu() * u))
            }
        }
    }
}

/// What every layer of one forward pass shares.
struct LayerCtx<'a> {
    mask: Option<&'a Tensor>, // (B, 1, T, L) bool, true = may attend
    is_causal: bool,
    rope: Option<(&'a Tensor, &'a Tensor)>, // cos, sin (B, 1, T, hs)
    cache: Option<&'a mut KvCache>,
}

/// A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).
#[derive(Debug)]
struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl Block {
    fn new(p: &VsPath, cfg: &ModelConfig) -> Self {
        // GPT-2's init scales residual projections by 1/sqrt(2 n_layer) to keep the stream's
        // variance flat with depth.
        let resid_std = INIT_STD / (2.0 * cfg.num_layers as f64).sqrt();
        let (c, eps) = (cfg.hidden_size, cfg.norm_eps);
        match cfg.family {
            Family::Gpt2 => Self {
                norm1: Norm::layer(&(p / "ln_1"), c, eps),
                attn: Attention::new(&(p / "attn"), cfg, resid_std),
                norm2: Norm::layer(&(p / "ln_2"), c, eps),
                mlp: Mlp::new(&(p / "mlp"), cfg, resid_std),
            },
            Family::Llama | Family::Qwen2 => Self {
                norm1: Norm::rms(&(p / "input_layernorm"), c, eps),
                attn: Attention::new(&(p / "self_attn"), cfg, resid_std),
                norm2: Norm::rms(&(p / "post_attention_layernorm"), c, eps),
                mlp: Mlp::new(&(p / "mlp"), cfg, resid_std),
            },
        }
    }

    fn share(&self, lora: bool) -> Self {
        Self {
            norm1: self.norm1.share(),
            attn: self.attn.share(lora),
            norm2: self.norm2.share(),
            mlp: self.mlp.share(lora),
        }
    }

    fn linears(&self) -> Vec<&Linear> {
        let mut all = self.attn.linears();
        all.extend(self.mlp.linears());
        all
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = self.attn.linears_mut();
        all.extend(self.mlp.linears_mut());
        all
    }

    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx<'_>, layer: usize) -> Tensor {
        let x = x + self.attn.forward(&self.norm1.forward(x), ctx, layer);
        &x + self.mlp.forward(&self.norm2.forward(&x))
    }

    /// The block's output at positions `from..from + n` only: (B, T, C) -> (B, n, C).
    fn forward_window(&self, x: &Tensor, ctx: &LayerCtx<'_>, from: i64, n: i64) -> Tensor {
        let a = self
            .attn
            .forward_window(&self.norm1.forward(x), ctx, from, n);
        let x = x.narrow(1, from, n) + a;
        &x + self.mlp.forward(&self.norm2.forward(&x))
    }
}

/// The decoder with its head(s). Owns the `VarStore` holding every parameter.
pub struct Gpt {
    pub cfg: ModelConfig,
    pub head: Head,
    pub vs: nn::VarStore,
    wte: Tensor,         // (V, C)
    wpe: Option<Tensor>, // (P, C), GPT-2 only
    blocks: Vec<Block>,
    norm_f: Norm,
    lm_head: Option<Linear>, // None: tied to wte (or a scalar-head model)
    score: Option<Linear>,   // (1, C) + bias, scalar head
    rope: Option<Rope>,
    adapter: Option<Adapter>,
    /// The dtype of the forward pass's products (`crate::precision`); weights stay as they are.
    compute: Compute,
}

/// A LoRA adapter attached to a model (`Gpt::add_lora`, `Gpt::load_adapter`): its settings, its
/// parameters and the base checkpoint it names. The linear maps it adapts hold the same tensors.
#[derive(Debug)]
pub struct Adapter {
    pub cfg: LoraConfig,
    /// `{module}.lora_A.weight` (r, in) and `{module}.lora_B.weight` (out, r), by module name.
    pub params: Vec<(String, Tensor)>,
    /// `base_model_name_or_path`, written when the adapter is saved.
    pub base: Option<String>,
    /// The base variables it froze, unfrozen again when it is merged.
    frozen: Vec<String>,
}

impl std::fmt::Debug for Gpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpt({:?}, {} layers, C={}, head {:?})",
            self.cfg.family, self.cfg.num_layers, self.cfg.hidden_size, self.head
        )
    }
}

impl Gpt {
    /// A freshly initialised model (normal(0, 0.02) weights, GPT-2's residual scaling).
    pub fn new(cfg: &ModelConfig, head: Head, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let (base, emb_name) = match cfg.family {
            Family::Gpt2 => (&root / "transformer", "wte"),
            _ => (&root / "model", "embed_tokens"),
        };
        let std = Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let wte = (&base / emb_name).var("weight", &[v, c], std);
        let wpe = (cfg.family == Family::Gpt2)
            .then(|| (&base / "wpe").var("weight", &[cfg.max_positions, c], std));
        let layers = &base
            / if cfg.family == Family::Gpt2 {
                "h"
            } else {
                "layers"
            };
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(&(&layers / i), cfg))
            .collect();
        let norm_f = match cfg.family {
            Family::Gpt2 => Norm::layer(&(&base / "ln_f"), c, cfg.norm_eps),
            _ => Norm::rms(&(&base / "norm"), c, cfg.norm_eps),
        };
        let lm_head = (head == Head::Lm && !cfg.tie_word_embeddings)
            .then(|| Linear::new(&(&root / "lm_head"), (c, v), Layout::OutIn, false, INIT_STD));
        // InstructGPT / "N implementation details": reward head init N(0, 1/(d+1)).
        let score_std = 1.0 / ((c + 1) as f64).sqrt();
        let score = (head == Head::Scalar).then(|| {
            let p = &root / "score";
            let mut lin = Linear::new(&p, (c, 1), Layout::OutIn, false, score_std);
            // The pairwise loss only sees reward differences, so a bias gets no gradient: it is
            // not trained, only set afterwards to centre the rewards (InstructGPT).
            lin.bias = Some(p.zeros_no_train("bias", &[1]));
            lin
        });
        let rope = (cfg.family != Family::Gpt2)
            .then(|| Rope::new(cfg.head_dim, cfg.max_positions, cfg.rope_theta, device));
        Self {
            cfg: cfg.clone(),
            head,
            vs,
            wte,
            wpe,
            blocks,
            norm_f,
            lm_head,
            score,
            rope,
            adapter: None,
            compute: crate::precision::default_compute(cfg.hidden_size),
        }
    }

    /// Loads `config.json` and the weights of a Hugging Face-layout checkpoint directory.
    /// A PEFT adapter directory (`adapter_config.json`) loads its base checkpoint (named by
    /// `base_model_name_or_path`) with the adapter attached.
    pub fn load(dir: &Path, head: Head, device: Device) -> Result<Self> {
        if lora::is_adapter_dir(dir) {
            return Self::load_adapter_dir(dir, head, device, 0);
        }
        Self::from_checkpoint(dir, head, device, &|_| false)
    }

    /// Loads a checkpoint's body with a head it may not have yet: an SFT model becomes a reward
    /// model (a fresh scalar head; the LM head, if separate, is dropped).
    pub fn load_with_head(dir: &Path, head: Head, device: Device) -> Result<Self> {
        if lora::is_adapter_dir(dir) {
            return Self::load_adapter_dir(dir, head, device, 0);
        }
        Self::from_checkpoint(dir, head, device, &|name| name.starts_with("score."))
    }

    /// A freshly initialised model, after checking that it fits in memory
    /// ([`footprint::check_fits`]): the constructor for configs a user wrote.
    pub fn try_new(cfg: &ModelConfig, head: Head, device: Device) -> Result<Self> {
        footprint::check_fits(cfg, head, device).map_err(ModelError::Invalid)?;
        Ok(Self::new(cfg, head, device))
    }

    /// Everything a load checks before allocating, in order: `config.json` alone (sizes under
    /// their ceilings, heads that divide), the config against the checkpoint's headers (every
    /// tensor it implies present with its shape; `fresh` ones may be absent), then the memory
    /// the model needs against what the machine has. Only then the model is built and filled.
    fn from_checkpoint(
        dir: &Path,
        head: Head,
        device: Device,
        fresh: &dyn Fn(&str) -> bool,
    ) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg = ModelConfig::from_file(&cfg_path)?;
        let ckpt = checkpoint::Checkpoint::open(dir)?;
        let expected = footprint::expected_tensors(&cfg, head);
        ckpt.check(expected, cfg.family, fresh, &cfg_path)?;
        footprint::check_fits(&cfg, head, device).map_err(|m| ModelError::config(&cfg_path, m))?;
        let model = Self::new(&cfg, head, device);
        ckpt.copy_into(&model.vs, cfg.family, fresh)?;
        Ok(model)
    }

    /// An in-memory copy of this model carrying `head`: every weight both models hold is copied
    /// (in this model's dtype); a scalar head this model lacks starts fresh from libtorch's
    /// generator, exactly as [`Self::load_with_head`] would start it from a saved copy. An SFT
    /// model becomes a reward model this way, or a model is duplicated (same head) so that one
    /// copy can be fine-tuned while the other stays.
    pub fn copy_with_head(&self, head: Head) -> Result<Gpt> {
        let mut model = Self::new(&self.cfg, head, self.device());
        model.compute = self.compute;
        if self.kind() != model.kind() {
            model.set_kind(self.kind());
        }
        let source = self.vs.variables();
        let fresh_head = head != self.head;
        tch::no_grad(|| {
            for (name, mut var) in model.vs.variables() {
                match source.get(&name) {
                    Some(t) if !(fresh_head && name.starts_with("score.")) => {
                        var.f_copy_(t)?;
                    }
                    _ if name.starts_with("score.") => {}
                    _ => {
                        return Err(ModelError::Invalid(format!(
                            "cannot copy the model with a {head:?} head: it has no '{name}' to \
                             copy from"
                        )));
                    }
                }
            }
            Ok(())
        })?;
        if let Some(ad) = &self.adapter {
            model.add_lora(&ad.cfg, ad.base.clone())?;
            let copies = model
                .adapter
                .as_ref()
                .map(|a| a.params.as_slice())
                .unwrap_or(&[]);
            tch::no_grad(|| {
                for ((_, dst), (_, src)) in copies.iter().zip(&ad.params) {
                    dst.shallow_clone().f_copy_(src)?;
                }
                Ok::<_, tch::TchError>(())
            })?;
        }
        Ok(model)
    }

    /// Adds `delta` to the scalar head's bias (e.g. to centre rewards at 0).
    pub fn shift_scalar_bias(&mut self, delta: f64) -> Result<()> {
        let score = self
            .score
            .as_ref()
            .ok_or_else(|| ModelError::Invalid("this model has no scalar head".into()))?;
        if let Some(b) = &score.bias {
            tch::no_grad(|| {
                let _ = b.shallow_clone().f_add_scalar_(delta);
            });
        }
        Ok(())
    }

    /// Writes `config.json` and `model.safetensors` (atomically) into `dir`.
    /// A model carrying an adapter writes the adapter alone, in PEFT's layout
    /// ([`Self::save_adapter`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        if self.adapter.is_some() {
            return self.save_adapter(dir);
        }
        self.cfg.save(dir)?;
        checkpoint::save_weights(&self.vs, &dir.join("model.safetensors"))
    }

    /// Casts every parameter (e.g. to f64 for gradient checks, bf16 for fast inference).
    ///
    /// `VarStore::set_kind` cannot be used: tch 0.24 filters variables by the prefix "." on the
    /// root path, which matches no name, so it silently converts nothing.
    pub fn set_kind(&mut self, kind: Kind) {
        tch::no_grad(|| {
            for (_, mut var) in self.vs.variables() {
                var.set_data(&var.to_kind(kind));
            }
            for (_, var) in self.adapter.iter_mut().flat_map(|a| a.params.iter_mut()) {
                var.set_data(&var.to_kind(kind));
            }
        });
    }

    pub fn kind(&self) -> Kind {
        self.wte.kind()
    }

    /// The dtype of the forward pass's products: fp32, or bf16 with fp32 weights
    /// (`crate::precision`). Models take the process default when built or loaded.
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// Sets the products' dtype for this model's forward passes (weights are not touched).
    pub fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
    }

    /// bf16 copies of the weight matrices for the CPU decode kernels, on this thread while the
    /// result lives, when this model computes in bf16 on the CPU (`None` otherwise). The weights
    /// must not change meanwhile: for generation, not training.
    pub fn decode_mirrors(&self) -> Option<crate::skinny::DecodeMirrors> {
        (self.compute == Compute::Bf16
            && self.device() == Device::Cpu
            && self.kind() == Kind::Float)
            .then(|| crate::skinny::DecodeMirrors::new(self.vs.variables().into_values()))
    }

    /// The autocast guard for one forward pass over `rows` positions, when the products run in
    /// bf16 on fp32 weights. Decoding-sized passes (no graph, at most `skinny::MAX_ROWS` rows)
    /// on the CPU get none: there the decode kernels read bf16 weight copies
    /// ([`Self::decode_mirrors`]), and a product they do not take (e.g. GPT-2's (in, out)
    /// layout) is cheaper in fp32 than after casting its whole weight for a few rows. With
    /// AMX or vdpbf16ps copies of this model's weights (`skinny::tiles_for`), a Llama-family
    /// model's prefill (up to `skinny::MAX_TILE_ROWS` rows) gets none either: that kernel takes
    /// all its products (any other model's passes meanwhile keep autocast).
    fn autocast(&self, rows: i64) -> Option<crate::precision::Autocast> {
        let kernel_rows = if self.cfg.family != Family::Gpt2 && crate::skinny::tiles_for(&self.wte)
        {
            crate::skinny::MAX_TILE_ROWS
        } else {
            crate::skinny::MAX_ROWS
        };
        let decoding =
            self.device() == Device::Cpu && rows <= kernel_rows && !crate::skinny::grad_enabled();
        match self.kind() {
            Kind::Float if !decoding => crate::precision::guard(self.compute, self.device()),
            _ => None,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Number of trainable parameters actually held.
    pub fn num_params(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .map(|n| n as i64)
            .sum()
    }

    /// Final hidden states (B, T, C) after the last norm.
    ///
    /// With a cache, `input_ids` are the new tokens and their keys/values are appended; the mask
    /// (if any) covers only the new tokens. Position ids follow the mask (left padding).
    pub fn forward_hidden(&self, batch: Batch<'_>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.hidden(batch, cache, None)
    }

    /// Final hidden states (B, n, C) of positions `from..from + n` only: the same values as
    /// `forward_hidden(batch, None)?.narrow(1, from, n)`, but the last layer computes its query
    /// projection, attention output, MLP and the final norm for those rows alone (every other
    /// layer still runs over all T positions, whose keys and values the window attends to).
    /// PPO reads only the positions that predict response tokens; with a 16-token prompt and
    /// 32-token responses this skips a third of the last layer's rows.
    pub fn forward_hidden_window(&self, batch: Batch<'_>, from: i64, n: i64) -> Result<Tensor> {
        let t = batch.input_ids.size().get(1).copied().unwrap_or(0);
        if from < 0 || n < 1 || from + n > t {
            return Err(ModelError::Invalid(format!(
                "window of positions {from}..{} is not inside the {t} input positions",
                from + n
            )));
        }
        self.hidden(batch, None, Some((from, n)))
    }

    fn hidden(
        &self,
        batch: Batch<'_>,
        mut cache: Option<&mut KvCache>,
        window: Option<(i64, i64)>,
    ) -> Result<Tensor> {
        let ids = batch.input_ids;
        let (b, t) = ids.size2().map_err(|_| {
            ModelError::Invalid(format!(
                "input_ids must be (batch, time), got {:?}",
                ids.size()
            ))
        })?;
        self.check_ids(ids)?;
        if let Some(c) = cache.as_deref() {
            c.check_room(b, t)?;
        }
        let _autocast = self.autocast(b * t);
        let past = cache.as_deref().map_or(0, |c| c.len);
        if past + t > self.cfg.max_positions {
            return Err(ModelError::Invalid(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                past + t,
                self.cfg.max_positions
            )));
        }
        let dev = ids.device();
        let ones;
        let mask = match batch.attention_mask {
            Some(m) => m.to_kind(Kind::Bool),
            None => {
                ones = Tensor::ones([b, t], (Kind::Bool, dev));
                ones.shallow_clone()
            }
        };
        let positions = self.positions(&mask, cache.as_deref());
        let padded =
            batch.attention_mask.is_some() || cache.as_deref().is_some_and(|c| c.has_padding);
        let (attn_mask, is_causal) = attention_mask(&mask, cache.as_deref(), padded, past);
        let mut x = Tensor::embedding(&self.wte, ids, -1, false, false); // (B, T, C)
        if let Some(wpe) = &self.wpe {
            x += wpe
                .index_select(0, &positions.reshape([-1]))
                .reshape([b, t, -1]);
        }
        // Under CPU autocast the bf16 queries and keys rotate with bf16 tables, as transformers
        // does under autocast (fp32 tables would promote q and k back to fp32); with or without
        // a graph, so that scoring and training passes compute the same log-probs.
        let table_kind = if dev == Device::Cpu
            && x.kind() == Kind::Float
            && crate::precision::Autocast::is_enabled(dev)
        {
            Kind::BFloat16
        } else {
            x.kind()
        };
        let tables = self.rope.as_ref().map(|r| r.tables(&positions, table_kind));
        let mut ctx = LayerCtx {
            mask: attn_mask.as_ref(),
            is_causal,
            rope: tables.as_ref().map(|(c, s)| (c, s)),
            cache: cache.as_deref_mut(),
        };
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            x = match window {
                Some((from, n)) if i == last => block.forward_window(&x, &ctx, from, n),
                _ => block.forward(&x, &mut ctx, i),
            };
        }
        // A model without layers still returns only the window's rows.
        if let Some((from, n)) = window.filter(|_| self.blocks.is_empty()) {
            x = x.narrow(1, from, n);
        }
        if let Some(c) = cache {
            if batch.attention_mask.is_some() {
                c.has_padding |= !bool::try_from(mask.all()).unwrap_or(false);
            }
            c.advance(&mask);
        }
        Ok(self.norm_f.forward(&x))
    }

    /// (B, T) position ids: counting only real tokens, continuing from the cache.
    fn positions(&self, mask: &Tensor, cache: Option<&KvCache>) -> Tensor {
        let pos = mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1;
        let pos = match cache {
            Some(c) => pos + c.next_pos.unsqueeze(1),
            None => pos,
        };
        pos.clamp_min(0)
    }

    /// Out-of-range ids would abort inside libtorch's embedding; check them up front.
    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        if ids.numel() == 0 {
            return Err(ModelError::Invalid("empty input: no tokens to run".into()));
        }
        let (lo, hi) = (i64::try_from(ids.min())?, i64::try_from(ids.max())?);
        if lo < 0 || hi >= self.cfg.vocab_size {
            return Err(ModelError::Invalid(format!(
                "token id {} is outside the vocabulary of {} (is the tokenizer for another model?)",
                if lo < 0 { lo } else { hi },
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Next-token logits (B, T, V) from hidden states, in the weights' dtype whatever the
    /// products' (bf16 products are cast back before any softmax sees them).
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let c = hidden.size().last().copied().unwrap_or(1).max(1);
        let autocast = self.autocast(hidden.numel() as i64 / c);
        let logits = match (&self.lm_head, self.head) {
            (Some(head), _) => head.forward(hidden),
            (None, Head::Lm) => self.tied_logits(hidden),
            (None, Head::Scalar) if self.cfg.tie_word_embeddings => self.tied_logits(hidden),
            (None, Head::Scalar) => {
                return Err(ModelError::Invalid(
                    "this scalar-head model has no LM head".into(),
                ));
            }
        };
        Ok(match autocast {
            Some(_) if logits.kind() != self.kind() => logits.to_kind(self.kind()),
            _ => logits,
        })
    }

    fn tied_logits(&self, hidden: &Tensor) -> Tensor {
        if let Some(y) = crate::fused::linear_bf16(hidden, &self.wte, None, false) {
            return y;
        }
        crate::skinny::linear(hidden, &self.wte, None)
            .unwrap_or_else(|| hidden.matmul(&self.wte.tr()))
    }

    /// Scalar outputs (B, T) from hidden states.
    pub fn scalar(&self, hidden: &Tensor) -> Result<Tensor> {
        let score = self.score.as_ref().ok_or_else(|| {
            ModelError::Invalid("this model has no scalar head (load it with Head::Scalar)".into())
        })?;
        Ok(score.forward(hidden).squeeze_dim(-1))
    }

    /// Logits (B, T, V) for a batch: the common case.
    pub fn forward(&self, batch: Batch<'_>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.lm_logits(&self.forward_hidden(batch, cache)?)
    }

    /// A cache sized for `batch` rows of up to `capacity` tokens, in the model's dtype.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        KvCache::new(&self.cfg, batch, capacity, self.wte.kind(), self.device())
    }
}

/// The attention mask (B, 1, T, L) as a bool "may attend", or `None` with `is_causal` when plain
/// causal attention is exact (no padding anywhere, and no past or a single new token).
fn attention_mask(
    mask: &Tensor,
    cache: Option<&KvCache>,
    padded: bool,
    past: i64,
) -> (Option<Tensor>, bool) {
    let (b, t) = mask.size2().unwrap_or_default();
    if !padded {
        if past == 0 {
            return (None, true);
        }
        if t == 1 {
            return (None, false);
        }
    }
    let dev = mask.device();
    let keys = match cache {
        Some(c) if past > 0 => Tensor::cat(&[&c.key_mask.narrow(1, 0, past), mask], 1),
        _ => mask.shallow_clone(),
    }; // (B, L)
    let l = past + t;
    let q_abs = (Tensor::arange(t, (Kind::Int64, dev)) + past).unsqueeze(1); // (T, 1)
    let k_idx = Tensor::arange(l, (Kind::Int64, dev)).unsqueeze(0); // (1, L)
    let causal = k_idx.le_tensor(&q_abs); // (T, L)
    // A padding query with no real key before it would softmax over nothing and yield NaN, which
    // then leaks through 0 * NaN; letting every query see itself keeps padded rows finite.
    let diag = k_idx.eq_tensor(&q_abs);
    let allowed = causal
        .logical_and(&keys.view([b, 1, 1, l]))
        .logical_or(&diag);
    (Some(allowed), false)
}

// ---------------------------------------------------------------------------------------------
// LoRA adapters (settings and files: `crate::lora`).

impl Gpt {
    /// Every linear map of the transformer blocks (the ones LoRA can adapt), in layer order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.blocks.iter().flat_map(Block::linears).collect()
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.blocks
            .iter_mut()
            .flat_map(Block::linears_mut)
            .collect()
    }

    /// The attached adapter, if any.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// What training updates: the adapter's matrices and the variables that still require a
    /// gradient (with an adapter, only the scalar head's weight; without, every trainable
    /// weight). Names are unique; the adapter's are `{module}.lora_A.weight` and `lora_B`.
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        if let Some(ad) = &self.adapter {
            out.extend(
                ad.params
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone())),
            );
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Attaches a fresh LoRA adapter to the linear maps `cfg.targets` selects and freezes every
    /// base weight except the scalar head (PEFT's `modules_to_save` for a reward or value model).
    /// `A` starts as PEFT's (uniform in ±1/sqrt(in), from libtorch's generator) and `B` at zero,
    /// so the model's outputs are unchanged until the first update. `base` is recorded as the
    /// adapter's `base_model_name_or_path`.
    pub fn add_lora(&mut self, cfg: &LoraConfig, base: Option<String>) -> Result<()> {
        cfg.validate()?;
        if self.adapter.is_some() {
            return Err(ModelError::Invalid(
                "the model already carries a LoRA adapter; merge it into the weights first \
                 (`rlhf merge`), then attach a new one"
                    .into(),
            ));
        }
        let (kind, dev) = (self.kind(), self.device());
        let (scale, r) = (cfg.scale(), cfg.r);
        let mut params = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for lin in self.linears_mut() {
                if !cfg.targets_module(&lin.module) {
                    continue;
                }
                let (d_in, d_out) = lin.dims();
                let bound = 1.0 / (d_in as f64).sqrt();
                let a = Tensor::f_empty([r, d_in], (kind, dev))?
                    .f_uniform_(-bound, bound)?
                    .set_requires_grad(true);
                let b = Tensor::f_zeros([d_out, r], (kind, dev))?.set_requires_grad(true);
                params.push((format!("{}.lora_A.weight", lin.module), a.shallow_clone()));
                params.push((format!("{}.lora_B.weight", lin.module), b.shallow_clone()));
                lin.lora = Some(LoraLinear {
                    a,
                    b,
                    scale,
                    dropout: cfg.dropout,
                });
            }
            Ok(())
        })?;
        if params.is_empty() {
            return Err(ModelError::Invalid(format!(
                "lora: no linear map matches the targets {:?}; this model's are {}",
                cfg.targets,
                self.module_kinds().join(", ")
            )));
        }
        let frozen = self.freeze_base();
        self.adapter = Some(Adapter {
            cfg: cfg.clone(),
            params,
            base,
            frozen,
        });
        Ok(())
    }

    /// The distinct last parts of the adaptable modules' names (`q_proj`, `c_attn`, ...).
    fn module_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .linears()
            .iter()
            .filter_map(|l| l.module.rsplit('.').next().map(str::to_string))
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Stops gradients into every base variable but the scalar head; returns the names frozen.
    fn freeze_base(&mut self) -> Vec<String> {
        let mut frozen = Vec::new();
        for (name, t) in self.vs.variables() {
            if t.requires_grad() && !name.starts_with("score.") {
                let _ = t.shallow_clone().set_requires_grad(false);
                frozen.push(name);
            }
        }
        frozen.sort();
        frozen
    }

    /// Attaches the PEFT adapter in `dir` (`adapter_config.json`, `adapter_model.safetensors`)
    /// to this model, which must be its base. A scalar head saved with it (`score.*`) replaces
    /// this model's. Errors name the file and the tensor: a module this model lacks, a missing
    /// half of a pair, a shape that does not fit, a tensor of a kind LoRA here cannot place.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let file = lora::read_adapter_config(dir)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let tensors = lora::read_adapter_tensors(dir)?;
        let terr = |name: &str, msg: String| ModelError::Tensor {
            path: path.clone(),
            name: name.to_string(),
            msg,
        };
        let mut pairs: HashMap<String, [Option<Tensor>; 2]> = HashMap::new();
        let mut head = Vec::new();
        for (name, t) in tensors {
            let rest = name.strip_prefix(PEFT_PREFIX).ok_or_else(|| {
                terr(
                    &name,
                    format!("expected a name starting with '{PEFT_PREFIX}' (PEFT's layout)"),
                )
            })?;
            if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                pairs.entry(m.to_string()).or_default()[0] = Some(t);
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                pairs.entry(m.to_string()).or_default()[1] = Some(t);
            } else if rest == "score.weight" || rest == "score.bias" {
                head.push((rest.to_string(), name.clone(), t));
            } else {
                return Err(terr(
                    &name,
                    "is not something this LoRA can place: only lora_A/lora_B of the blocks' \
                     linear maps and the scalar head 'score' (no embedding or LM-head adapters)"
                        .into(),
                ));
            }
        }
        if pairs.is_empty() {
            return Err(ModelError::config(&path, "holds no lora_A/lora_B tensors"));
        }
        if !head.is_empty() && self.head != Head::Scalar {
            return Err(ModelError::config(
                &path,
                "carries a scalar head (a reward or value model's adapter); load it as one",
            ));
        }
        if self.adapter.is_some() {
            return Err(ModelError::Invalid(format!(
                "{}: the model already carries an adapter; merge it first",
                dir.display()
            )));
        }
        let cfg = file.lora;
        let (kind, scale, r) = (self.kind(), cfg.scale(), cfg.r);
        let device = self.device();
        let mut params = Vec::new();
        let mut names: Vec<&String> = pairs.keys().collect();
        names.sort();
        {
            let mut linears: HashMap<String, &mut Linear> = self
                .linears_mut()
                .into_iter()
                .map(|l| (l.module.clone(), l))
                .collect();
            for module in names {
                let [a, b] = &pairs[module];
                let a_name = format!("{PEFT_PREFIX}{module}.lora_A.weight");
                let b_name = format!("{PEFT_PREFIX}{module}.lora_B.weight");
                let lin = linears.get_mut(module).ok_or_else(|| {
                    terr(&a_name, format!("module '{module}' is not a linear map of this model's blocks (an adapter for another architecture?)"))
                })?;
                let (Some(a), Some(b)) = (a, b) else {
                    let missing = if a.is_none() { &a_name } else { &b_name };
                    return Err(terr(missing, "is missing (LoRA needs both A and B)".into()));
                };
                let (d_in, d_out) = lin.dims();
                if a.size() != [r, d_in] {
                    return Err(terr(
                        &a_name,
                        format!(
                            "has shape {:?}, expected [{r}, {d_in}] (r from adapter_config.json, the input size from the model)",
                            a.size()
                        ),
                    ));
                }
                if b.size() != [d_out, r] {
                    return Err(terr(
                        &b_name,
                        format!("has shape {:?}, expected [{d_out}, {r}]", b.size()),
                    ));
                }
                let a = a.to_device(device).to_kind(kind).set_requires_grad(true);
                let b = b.to_device(device).to_kind(kind).set_requires_grad(true);
                params.push((format!("{module}.lora_A.weight"), a.shallow_clone()));
                params.push((format!("{module}.lora_B.weight"), b.shallow_clone()));
                lin.lora = Some(LoraLinear {
                    a,
                    b,
                    scale,
                    dropout: cfg.dropout,
                });
            }
        }
        let vars = self.vs.variables();
        for (ours, theirs, t) in &head {
            let var = &vars[ours.as_str()];
            if t.size() != var.size() {
                return Err(terr(
                    theirs,
                    format!("has shape {:?}, expected {:?}", t.size(), var.size()),
                ));
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(t))?;
        }
        let frozen = self.freeze_base();
        self.adapter = Some(Adapter {
            cfg,
            params,
            base: file.base,
            frozen,
        });
        Ok(())
    }

    /// Copies the adapter (and scalar head) saved in `dir` into this model's attached adapter, in
    /// place (the tensors may live in an optimizer's buffer): a training checkpoint's resume.
    /// The saved adapter must have the same modules and shapes.
    pub fn restore_adapter(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ADAPTER_WEIGHTS);
        let Some(ad) = &self.adapter else {
            return Err(ModelError::config(
                &path,
                "is a LoRA adapter, but this run trains every weight (resume it with the same \
                 [lora] settings)",
            ));
        };
        if !lora::is_adapter_dir(dir) {
            return Err(ModelError::config(
                dir.join(lora::ADAPTER_CONFIG),
                "missing: this run trains a LoRA adapter, the checkpoint holds full weights",
            ));
        }
        let saved: HashMap<String, Tensor> = lora::read_adapter_tensors(dir)?.into_iter().collect();
        let mut targets: Vec<(String, Tensor)> = ad
            .params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        if self.head == Head::Scalar {
            targets.extend(
                self.vs
                    .variables()
                    .into_iter()
                    .filter(|(n, _)| n.starts_with("score.")),
            );
        }
        let expected = targets.len();
        for (name, var) in targets {
            let key = format!("{PEFT_PREFIX}{name}");
            let t = saved.get(&key).ok_or_else(|| ModelError::Tensor {
                path: path.clone(),
                name: key.clone(),
                msg: "missing (the checkpoint's adapter has other modules or rank)".into(),
            })?;
            if t.size() != var.size() {
                return Err(ModelError::Tensor {
                    path: path.clone(),
                    name: key,
                    msg: format!("has shape {:?}, this run's is {:?}", t.size(), var.size()),
                });
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(t))?;
        }
        if saved.len() != expected {
            return Err(ModelError::config(
                &path,
                format!(
                    "holds {} tensors, this run's adapter has {expected}",
                    saved.len()
                ),
            ));
        }
        Ok(())
    }

    /// Loads the adapter in `dir` on its base checkpoint; a base that is itself an adapter is
    /// loaded (recursively) and merged first.
    fn load_adapter_dir(dir: &Path, head: Head, device: Device, depth: usize) -> Result<Self> {
        if depth >= lora::MAX_CHAIN {
            return Err(ModelError::config(
                dir.join(lora::ADAPTER_CONFIG),
                format!(
                    "more than {} adapters on adapters (a cycle of base_model_name_or_path?)",
                    lora::MAX_CHAIN
                ),
            ));
        }
        let base = lora::base_dir(dir)?;
        let mut model = if lora::is_adapter_dir(&base) {
            let mut m = Self::load_adapter_dir(&base, head, device, depth + 1)?;
            m.merge_adapter()?;
            m
        } else {
            Self::from_checkpoint(&base, head, device, &|name| name.starts_with("score."))?
        };
        model.load_adapter(dir)?;
        Ok(model)
    }

    /// Writes the adapter in PEFT's layout: `adapter_model.safetensors` (the LoRA matrices, and
    /// the scalar head for a reward or value model) and `adapter_config.json`, whose
    /// `target_modules` are the adapted modules' last names.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let ad = self
            .adapter
            .as_ref()
            .ok_or_else(|| ModelError::Invalid("the model carries no adapter to save".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut named: Vec<(String, Tensor)> = ad
            .params
            .iter()
            .map(|(n, t)| (format!("{PEFT_PREFIX}{n}"), t.detach()))
            .collect();
        if self.head == Head::Scalar {
            for (n, t) in self.vs.variables() {
                if n.starts_with("score.") {
                    named.push((format!("{PEFT_PREFIX}{n}"), t.detach()));
                }
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        crate::checkpoint::save_tensors(&named, &dir.join(ADAPTER_WEIGHTS))?;
        let mut targets: Vec<String> = ad
            .params
            .iter()
            .filter_map(|(n, _)| n.strip_suffix(".lora_A.weight"))
            .filter_map(|m| m.rsplit('.').next().map(str::to_string))
            .collect();
        targets.sort();
        targets.dedup();
        lora::write_adapter_config(
            dir,
            &ad.cfg,
            &targets,
            ad.base.as_deref(),
            self.head == Head::Scalar,
            self.cfg.family == Family::Gpt2,
        )
    }

    /// Folds the adapter into the base weights (`W += scale · B A`, in the weight's layout),
    /// detaches it and makes the weights it froze trainable again. No adapter: nothing to do.
    pub fn merge_adapter(&mut self) -> Result<()> {
        let Some(ad) = self.adapter.take() else {
            return Ok(());
        };
        tch::no_grad(|| -> Result<()> {
            for lin in self.linears_mut() {
                if let Some(l) = lin.lora.take() {
                    let delta = l.delta(lin.layout()).to_kind(lin.weight.kind());
                    let _ = lin.weight.shallow_clone().f_add_(&delta)?;
                }
            }
            Ok(())
        })?;
        let vars = self.vs.variables();
        for name in &ad.frozen {
            if let Some(t) = vars.get(name) {
                let _ = t.shallow_clone().set_requires_grad(true);
            }
        }
        Ok(())
    }

    /// The model without its adapter, over the same base tensors (no copy of the weights): the
    /// frozen reference of PPO or DPO when the policy trains an adapter, or the body a value
    /// model's adapter sits on. The scalar head, if any, is the view's own copy.
    pub fn base_view(&self) -> Result<Gpt> {
        let vs = nn::VarStore::new(self.device());
        let mut score = self.score.as_ref().map(|s| s.share(false));
        if let Some(s) = &mut score {
            s.weight = s.weight.detach().copy().set_requires_grad(true);
            s.bias = s.bias.as_ref().map(|b| b.detach().copy());
        }
        for (name, t) in self.vs.variables() {
            let t = match (&score, name.as_str()) {
                (Some(s), "score.weight") => s.weight.shallow_clone(),
                (Some(s), "score.bias") => match &s.bias {
                    Some(b) => b.shallow_clone(),
                    None => continue,
                },
                _ => t,
            };
            let parts: Vec<&str> = name.split('.').collect();
            let (last, dirs) = parts.split_last().expect("a variable has a name");
            let path = dirs.iter().fold(vs.root(), |p, d| p.sub(*d));
            let _ = path.add(last, t, false);
        }
        Ok(Gpt {
            cfg: self.cfg.clone(),
            head: self.head,
            vs,
            wte: self.wte.shallow_clone(),
            wpe: self.wpe.as_ref().map(Tensor::shallow_clone),
            blocks: self.blocks.iter().map(|b| b.share(false)).collect(),
            norm_f: self.norm_f.share(),
            lm_head: self.lm_head.as_ref().map(|l| l.share(false)),
            score,
            rope: self.rope.as_ref().map(Rope::share),
            adapter: None,
            compute: self.compute,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small-sequence bf16 attention against libtorch's SDPA on the same bf16 inputs in
    /// fp32, values and input gradients: plain causal, a padding mask, and grouped-query heads.
    #[test]
    fn bf16_training_attention_matches_sdpa_in_fp32() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let resid = INIT_STD;
        let gqa = Attention::new(&vs.root(), &cfg, resid);
        assert!(gqa.nkv < gqa.nh, "the fixture has grouped-query heads");
        let mut plain = Attention::new(&(vs.root() / "plain"), &cfg, resid);
        plain.nkv = plain.nh;
        let (b, t, hs) = (3, 11, gqa.hs);
        // Row 0 is left-padded by 4, row 2 by 1.
        let keep = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
            .view([1, t])
            .repeat([b, 1]);
        let _ = keep.get(1).fill_(1);
        let _ = keep.get(2).narrow(0, 0, 1).fill_(0);
        let (mask, _) = attention_mask(&keep.to_kind(Kind::Bool), None, true, 0);
        let mask = mask.unwrap();
        for (attn, masked) in [(&gqa, false), (&gqa, true), (&plain, true), (&plain, false)] {
            let input = |h: i64| {
                Tensor::randn([b, h, t, hs], (Kind::Float, Device::Cpu))
                    .to_kind(Kind::BFloat16)
                    .set_requires_grad(true)
            };
            let (q, k, v) = (input(attn.nh), input(attn.nkv), input(attn.nkv));
            let m = masked.then_some(&mask);
            let y = attn
                .attend_small(&q, &k, &v, m, !masked)
                .expect("bf16 with a graph takes the small path");
            let g = Tensor::randn_like(&y);
            let grads =
                Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &[&q, &k, &v], false, false);
            let f = |x: &Tensor| x.detach().to_kind(Kind::Float).set_requires_grad(true);
            let (q32, k32, v32) = (f(&q), f(&k), f(&v));
            let gqa_flag = attn.nkv != attn.nh;
            let y32 = Tensor::scaled_dot_product_attention(
                &q32, &k32, &v32, m, 0.0, !masked, None, gqa_flag,
            );
            let want = Tensor::run_backward(
                &[(&y32 * g.to_kind(Kind::Float)).sum(Kind::Float)],
                &[&q32, &k32, &v32],
                false,
                false,
            );
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let d = f64::try_from((a.to_kind(Kind::Float) - b).abs().max()).unwrap();
                let scale = f64::try_from(b.abs().max()).unwrap();
                assert!(
                    d <= 2e-2 * scale.max(1.0),
                    "{what} (nkv {}, mask {masked}): off by {d:.3e} (scale {scale:.2})",
                    attn.nkv
                );
            };
            close(&y, &y32, "output");
            for (got, (want, name)) in grads.iter().zip(want.iter().zip(["dq", "dk", "dv"])) {
                close(got, want, name);
            }
        }
        // Elsewhere SDPA runs: fp32 inputs without autocast, and bf16 ones with neither
        // autocast nor a graph.
        let x =
            Tensor::randn([1, gqa.nh, 4, hs], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let kv = Tensor::randn([1, gqa.nkv, 4, hs], (Kind::Float, Device::Cpu));
        assert!(gqa.attend_small(&x, &kv, &kv, None, true).is_none());
        // Under CPU autocast fp32 inputs are rounded to bf16 first, as SDPA would round them.
        let y = {
            let _ac = crate::precision::Autocast::enter(Device::Cpu, Kind::BFloat16);
            gqa.attend_small(&x, &kv, &kv, None, true)
                .expect("fp32 inputs under autocast")
        };
        let h = |t: &Tensor| t.detach().to_kind(Kind::BFloat16);
        let want = gqa.attend_small(&h(&x).set_requires_grad(true), &h(&kv), &h(&kv), None, true);
        assert!(y.equal(&want.unwrap()));
        let (x, kv) = (x.to_kind(Kind::BFloat16), kv.to_kind(Kind::BFloat16));
        assert!(tch::no_grad(|| gqa.attend_small(&x, &kv, &kv, None, true)).is_none());
    }
}
