// PyTorch's fused AdamW kernel (`torch._fused_adamw_`, the `fused=True` path of torch.optim.AdamW),
// which tch does not bind: one pass over parameter, gradient and both moments instead of the ~10
// whole-buffer kernels the op-by-op update costs. Nothing throws across the C boundary.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>
#include <c10/util/Exception.h>

#include "shim.h"

extern "C" {

// One AdamW step on `param` in place (decoupled weight decay, bias-corrected moments), with
// `step` a one-element float tensor holding the step number the bias corrections use. Returns 0,
// or -1 with libtorch's message (without its backtrace) in `err`.
int rlhf_fused_adamw(at::Tensor* param, at::Tensor* grad, at::Tensor* exp_avg, at::Tensor* exp_avg_sq,
                     at::Tensor* step, double lr, double beta1, double beta2, double weight_decay,
                     double eps, char* err, size_t err_len) {
  return rlhf_shim::guarded(err, err_len, [&] {
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

// Drops `t`'s gradient (PyTorch's `zero_grad(set_to_none=True)`): the next backward then hands
// its gradient over instead of filling a buffer with zeros and adding into it. Cannot throw.
void rlhf_clear_grad(at::Tensor* t) {
  if (t->grad().defined()) t->mutable_grad().reset();
}

}  // extern "C"
