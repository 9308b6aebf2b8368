// PyTorch's fused AdamW kernel (`torch._fused_adamw_`, the `fused=True` path of torch.optim.AdamW),
// which tch does not bind: one pass over parameter, gradient and both moments instead of the ~10
// whole-buffer kernels the op-by-op update costs. Nothing throws across the C boundary.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>
#include <c10/util/Exception.h>

#include "shim.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace {

// out[j] = src[j] * scale (src null: 0), returning the sum of the squares of what was written.
// Compiled for AVX-512, AVX2 and the baseline; the loader picks the widest the CPU has. The sum
// runs in double lanes (the vector width sets the order of its additions).
__attribute__((target_clones("avx512f", "avx2", "default"))) double copy_scaled_sumsq(
    const float* src, float* out, int64_t len, float scale) {
  if (src == nullptr) {
    std::fill(out, out + len, 0.0f);
    return 0.0;
  }
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < len; ++j) {
    const float y = src[j] * scale;
    out[j] = y;
    acc += static_cast<double>(y) * static_cast<double>(y);
  }
  return acc;
}

}  // namespace

extern "C" {

// One AdamW step on `param` in place (decoupled weight decay, bias-corrected moments), with
// `step` a one-element float tensor holding the step number the bias corrections use. A non-null
// `grad_scale` (a one-element float tensor) divides the gradient first, as
// `torch.optim.AdamW(fused=True)` unscales AMP gradients: here it applies a clipping coefficient
// without a pass of its own. Returns 0, or -1 with libtorch's message (without its backtrace) in
// `err`.
int rlhf_fused_adamw(at::Tensor* param, at::Tensor* grad, at::Tensor* exp_avg, at::Tensor* exp_avg_sq,
                     at::Tensor* step, at::Tensor* grad_scale, double lr, double beta1, double beta2,
                     double weight_decay, double eps, char* err, size_t err_len) {
  return rlhf_shim::guarded(err, err_len, [&] {
    std::optional<at::Tensor> scale;
    if (grad_scale != nullptr) scale = *grad_scale;
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false, scale, std::nullopt);
  });
}

// Gathers `n` gradients into the contiguous fp32 CPU buffer `flat` (gradient i at offset
// numels[0] + ... + numels[i-1]), each multiplied by `scale`; a null or undefined gradient is
// written as zeros. `*sumsq` receives the sum of squares of `flat`: the clipping norm without
// another pass. The work is split into fixed chunks whose sums are added in chunk order, so the
// result does not depend on the number of threads. Returns 0, or -1 with the reason in `err`.
int rlhf_gather_grads(at::Tensor** grads, const int64_t* numels, int64_t n, at::Tensor* flat,
                      double scale, double* sumsq, char* err, size_t err_len) {
  return rlhf_shim::guarded(err, err_len, [&] {
    TORCH_CHECK(flat->is_cpu() && flat->scalar_type() == at::kFloat && flat->is_contiguous(),
                "the gradient buffer must be a contiguous fp32 CPU tensor");
    constexpr int64_t kChunk = int64_t{1} << 16;
    struct Chunk {
      const float* src;
      float* out;
      int64_t len;
    };
    std::vector<at::Tensor> held;
    std::vector<Chunk> chunks;
    float* out = flat->data_ptr<float>();
    int64_t offset = 0;
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(numels[i] >= 0 && offset + numels[i] <= flat->numel(),
                  "the gradients hold more elements than the buffer");
      const float* src = nullptr;
      if (grads[i] != nullptr && grads[i]->defined()) {
        at::Tensor g = grads[i]->contiguous();
        TORCH_CHECK(g.is_cpu() && g.scalar_type() == at::kFloat && g.numel() == numels[i],
                    "gradient ", i, " is not an fp32 CPU tensor of ", numels[i], " elements");
        src = g.data_ptr<float>();
        held.push_back(std::move(g));
      }
      for (int64_t s = 0; s < numels[i]; s += kChunk) {
        chunks.push_back({src == nullptr ? nullptr : src + s, out + offset + s,
                          std::min(kChunk, numels[i] - s)});
      }
      offset += numels[i];
    }
    TORCH_CHECK(offset == flat->numel(), "the gradients hold ", offset,
                " elements, the buffer ", flat->numel());
    std::vector<double> partial(chunks.size(), 0.0);
    const float sc = static_cast<float>(scale);
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        partial[c] = copy_scaled_sumsq(chunks[c].src, chunks[c].out, chunks[c].len, sc);
      }
    });
    double total = 0.0;
    for (double p : partial) total += p;
    *sumsq = total;
  });
}

// Drops `t`'s gradient (PyTorch's `zero_grad(set_to_none=True)`): the next backward then hands
// its gradient over instead of filling a buffer with zeros and adding into it. Cannot throw.
void rlhf_clear_grad(at::Tensor* t) {
  if (t->grad().defined()) t->mutable_grad().reset();
}

}  // extern "C"
