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
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
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
/// and device.
pub fn adamw_(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    h: AdamWStep,
) -> Result<()> {
    let step = Tensor::from(h.step as f32).to_device(param.device());
    debug_assert_eq!(step.kind(), Kind::Float);
    let mut err = vec![0 as c_char; 1024];
    let rc = unsafe {
        rlhf_fused_adamw(
            param.as_ptr() as *mut c_void,
            grad.as_ptr() as *mut c_void,
            exp_avg.as_ptr() as *mut c_void,
            exp_avg_sq.as_ptr() as *mut c_void,
            step.as_ptr() as *mut c_void,
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
