//! Fused kernels of libtorch that tch does not bind, reached through the build's C++ shim
//! (`csrc/optim.cpp`).

use std::ffi::{c_char, c_int, c_void};

use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};

unsafe extern "C" {
    fn rlhf_fused_adamw(
        param: *mut c_void,
        grad: *mut c_void,
        exp_avg: *mut c_void,
        exp_avg_sq: *mut c_void,
        step: *mut c_void,
        grad_scale: *mut c_void,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn rlhf_gather_grads(
        grads: *const *mut c_void,
        numels: *const i64,
        n: i64,
        flat: *mut c_void,
        scale: f64,
        sumsq: *mut f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn rlhf_clear_grad(t: *mut c_void);
    fn rlhf_profile_begin(path: *const c_char) -> *mut c_void;
    fn rlhf_profile_end(p: *mut c_void);
    fn rlhf_gelu_tanh_fast() -> c_int;
    fn rlhf_linear_bf16_mkl() -> c_int;
    fn rlhf_linear_bf16_mkl_available() -> c_int;
    fn rlhf_linear_bf16_choose(choice: c_int);
    fn rlhf_linear_bf16(
        x: *mut c_void,
        w: *mut c_void,
        b: *mut c_void,
        in_out: c_int,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rlhf_gelu_tanh(x: *mut c_void, out: *mut *mut c_void, err: *mut c_char, len: usize)
    -> c_int;
}

/// Whether [`linear_bf16`]'s weight gradient runs on MKL's bf16 x bf16 -> fp32 GEMM rather than
/// libtorch's (oneDNN's) bf16 product and a cast: where the torch wheel exports it and the CPU
/// is Intel's (on an AMD EPYC MKL ran it at fp32 speed, under half of oneDNN's), unless
/// `RLHF_BF16_WEIGHT_GRAD=mkl|libtorch` says otherwise.
pub fn linear_bf16_mkl() -> bool {
    unsafe { rlhf_linear_bf16_mkl() == 1 }
}

/// Whether the torch wheel exports MKL's bf16 x bf16 -> fp32 GEMM.
pub fn linear_bf16_mkl_available() -> bool {
    unsafe { rlhf_linear_bf16_mkl_available() == 1 }
}

/// Overrides [`linear_bf16_mkl`]'s choice on the calling thread only, where CPU backward passes
/// run (`Some(true)` MKL where available, `Some(false)` libtorch, `None` the process's choice).
/// For tests that exercise both paths.
#[doc(hidden)]
pub fn choose_linear_bf16_mkl(choice: Option<bool>) {
    let c = match choice {
        None => -1,
        Some(false) => 0,
        Some(true) => 1,
    };
    unsafe { rlhf_linear_bf16_choose(c) }
}

/// A linear map in a bf16 training pass on the CPU (`csrc/linear.cpp`): `x·Wᵀ + b`, or `x·W + b`
/// when `in_out` (GPT-2's (in, out) weights), with bf16 products on the fp32 master weight as
/// autocast runs them, and the weight's gradient from MKL's bf16 -> fp32 GEMM where
/// [`linear_bf16_mkl`], so it arrives in fp32 without a bf16 copy and a cast (1.7-2x faster for
/// SmolLM2-sized products on a Xeon with AMX); elsewhere from libtorch's bf16 product and a cast.
/// `None` outside that case (no graph, fp32, autocast off, a frozen weight, another device):
/// the caller's own path then runs, unchanged.
pub fn linear_bf16(x: &Tensor, w: &Tensor, b: Option<&Tensor>, in_out: bool) -> Option<Tensor> {
    let applies = w.device() == tch::Device::Cpu
        && w.kind() == Kind::Float
        && w.dim() == 2
        && w.requires_grad()
        && x.dim() >= 1
        && crate::skinny::grad_enabled()
        && crate::precision::Autocast::is_enabled(tch::Device::Cpu);
    if !applies {
        return None;
    }
    let b = b.map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut c_void);
    let y = shim_tensor(|out, err, len| unsafe {
        rlhf_linear_bf16(
            x.as_ptr() as *mut c_void,
            w.as_ptr() as *mut c_void,
            b,
            c_int::from(in_out),
            out,
            err,
            len,
        )
    });
    Some(y.unwrap_or_else(|e| panic!("linear: {e}")))
}

/// Whether [`gelu_tanh`] runs the shim's own kernel for bf16 tensors here (a CPU with
/// AVX-512); otherwise it is libtorch's `gelu(x, "tanh")`.
pub fn gelu_tanh_fast() -> bool {
    unsafe { rlhf_gelu_tanh_fast() == 1 }
}

/// GELU with the tanh approximation (GPT-2's), differentiable. A bf16 tensor on a CPU with
/// AVX-512 goes through the shim's one-pass kernel (`csrc/gelu.cpp`: fp32 arithmetic with one
/// exp, rounded to bf16 as libtorch rounds), 4-5x faster than libtorch's bf16 kernel, whose
/// fp32-exact tanh a bf16 result cannot show; anything else (fp32 included, so fp32 results
/// keep their bits) is libtorch's `gelu(x, "tanh")`.
pub fn gelu_tanh(x: &Tensor) -> Tensor {
    if x.kind() != Kind::BFloat16 || x.device() != tch::Device::Cpu {
        return x.gelu("tanh");
    }
    shim_tensor(|out, err, len| unsafe { rlhf_gelu_tanh(x.as_ptr() as *mut c_void, out, err, len) })
        .unwrap_or_else(|e| panic!("gelu: {e}"))
}

/// Runs a shim call that returns a new tensor through `out`, or its error message.
fn shim_tensor(call: impl FnOnce(*mut *mut c_void, *mut c_char, usize) -> c_int) -> Result<Tensor> {
    let mut err = vec![0 as c_char; 1024];
    let mut out: *mut c_void = std::ptr::null_mut();
    let rc = call(&mut out, err.as_mut_ptr(), err.len());
    if rc != 0 || out.is_null() {
        return Err(ModelError::Invalid(crate::dist::message(&err)));
    }
    // SAFETY: the shim returned a heap `at::Tensor` (`new at::Tensor`), which tch owns and frees.
    Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
}

/// libtorch's op profiler while this lives: every op run on any thread, written as a
/// chrome://tracing file at `path` when it is dropped. For benchmarks.
pub struct OpProfile(*mut c_void);

impl OpProfile {
    pub fn start(path: &std::path::Path) -> Option<Self> {
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
        let p = unsafe { rlhf_profile_begin(c.as_ptr()) };
        (!p.is_null()).then_some(Self(p))
    }
}

impl Drop for OpProfile {
    fn drop(&mut self) {
        unsafe { rlhf_profile_end(self.0) }
    }
}

/// Drops `t`'s gradient, as PyTorch's `zero_grad(set_to_none=True)` does: the next backward
/// stores its gradient there instead of adding it to a buffer of zeros (one fill and one add
/// over every parameter saved). `t.grad()` is undefined until then.
pub fn clear_grad(t: &Tensor) {
    unsafe { rlhf_clear_grad(t.as_ptr() as *mut c_void) }
}

/// AdamW's hyper-parameters for one [`adamw_`] call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// The step number (from 1) of the bias corrections.
    pub step: u64,
}

/// One AdamW step in place with PyTorch's fused kernel (`torch._fused_adamw_`, what
/// `torch.optim.AdamW(fused=True)` runs): `param *= 1 − lr·wd`, then the moments and the
/// bias-corrected update, in one pass over the four tensors. They must share one shape, dtype
/// and device. With `grad_scale` (a one-element fp32 tensor), the kernel first divides the
/// gradient by it, as it unscales AMP gradients: a clipping coefficient `c` applied as `1 / c`
/// without a pass of its own (the quotient may round differently from the product `g · c`).
pub fn adamw_(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    h: AdamWStep,
    grad_scale: Option<&Tensor>,
) -> Result<()> {
    let step = Tensor::from(h.step as f32).to_device(param.device());
    debug_assert_eq!(step.kind(), Kind::Float);
    let mut err = vec![0 as c_char; 1024];
    let ptr = |t: &Tensor| t.as_ptr() as *mut c_void;
    // SAFETY: live tensors; the shim catches every C++ exception and writes at most `err.len()`
    // bytes into `err`.
    let rc = unsafe {
        rlhf_fused_adamw(
            ptr(param),
            ptr(grad),
            ptr(exp_avg),
            ptr(exp_avg_sq),
            ptr(&step),
            grad_scale.map_or(std::ptr::null_mut(), ptr),
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        return Err(ModelError::Invalid(format!(
            "fused AdamW: {}",
            crate::dist::message(&err)
        )));
    }
    Ok(())
}

/// Gathers gradients into `flat` (a contiguous fp32 CPU buffer; gradient i follows the ones
/// before it, `numels[i]` elements; `None` or an undefined gradient is written as zeros), each
/// multiplied by `scale`, and returns the sum of squares of what it wrote: the gather and the
/// clipping norm in one pass over memory. The sum is in double over fixed chunks added in order,
/// so it does not depend on the thread count.
pub fn gather_grads(
    grads: &[Option<Tensor>],
    numels: &[i64],
    flat: &Tensor,
    scale: f64,
) -> Result<f64> {
    if grads.len() != numels.len() {
        return Err(ModelError::Invalid(format!(
            "gather_grads: {} gradients but {} sizes",
            grads.len(),
            numels.len()
        )));
    }
    let ptrs: Vec<*mut c_void> = grads
        .iter()
        .map(|g| match g {
            Some(t) if t.defined() => t.as_ptr() as *mut c_void,
            _ => std::ptr::null_mut(),
        })
        .collect();
    let mut sumsq = 0.0f64;
    let mut err = vec![0 as c_char; 1024];
    // SAFETY: `ptrs` holds live tensors or nulls and outlives the call, as do `numels`, `flat`
    // and `sumsq`; the shim catches every C++ exception.
    let rc = unsafe {
        rlhf_gather_grads(
            ptrs.as_ptr(),
            numels.as_ptr(),
            ptrs.len() as i64,
            flat.as_ptr() as *mut c_void,
            scale,
            &mut sumsq,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        return Err(ModelError::Invalid(format!(
            "gather_grads: {}",
            crate::dist::message(&err)
        )));
    }
    Ok(sumsq)
}
