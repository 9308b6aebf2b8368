// A linear map for bf16 training on the CPU: y = x W^T + b (or x W + b for GPT-2's (in, out)
// weights) with bf16 products on fp32 master weights, as autocast runs it, but with the weight's
// gradient computed by MKL's bf16 x bf16 -> fp32 GEMM (`cblas_gemm_bf16bf16f32`, exported by the
// torch wheel's libtorch_cpu): the gradient comes out in fp32 at once, where autocast's path
// writes it in bf16 and casts it (measured 2.0-2.4 vs 0.9-1.35 TFLOP/s on SmolLM2-sized
// products, 2 threads, AMX). MKL runs that product fast on Intel CPUs only: on an AMD EPYC with
// AVX512-BF16 it ran at fp32 speed (115-141 GFLOP/s, where oneDNN's bf16 product and a cast ran at
// 216-319 GFLOP/s, 2 threads), so elsewhere, and without that symbol (a libtorch built without
// MKL), the gradient comes from libtorch's (oneDNN's) bf16 product and a cast, as under autocast.
// `RLHF_BF16_WEIGHT_GRAD=mkl|libtorch` overrides the choice (for side-by-side measurements).
// Nothing throws across the C boundary.

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "shim.h"

extern "C" __attribute__((weak)) void cblas_gemm_bf16bf16f32(int layout, int transa, int transb,
                                                             int m, int n, int k, float alpha,
                                                             const uint16_t* a, int lda,
                                                             const uint16_t* b, int ldb,
                                                             float beta, float* c, int ldc);

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Whether the CPU reports itself as Intel's ("GenuineIntel", CPUID leaf 0).
bool intel_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d) == 0) return false;
  char vendor[13];
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  vendor[12] = 0;
  return std::strcmp(vendor, "GenuineIntel") == 0;
#else
  return false;
#endif
}

// A test's choice for this thread (CPU backward passes run on the thread that calls them):
// -1 keeps the process's, 0 libtorch, 1 MKL.
thread_local int thread_choice = -1;

// Whether weight gradients take MKL's bf16 -> fp32 GEMM: decided once per process, unless this
// thread chose.
bool use_mkl() {
  if (cblas_gemm_bf16bf16f32 == nullptr) return false;
  if (thread_choice >= 0) return thread_choice == 1;
  static const bool use = [] {
    const char* env = std::getenv("RLHF_BF16_WEIGHT_GRAD");
    if (env != nullptr && std::strcmp(env, "mkl") == 0) return true;
    if (env != nullptr && std::strcmp(env, "libtorch") == 0) return false;
    return intel_cpu();
  }();
  return use;
}

// a^T b for row-major a (k, m) and b (k, n), both bf16 and contiguous: (m, n) in fp32.
at::Tensor at_b_fp32(const at::Tensor& a, const at::Tensor& b) {
  const int64_t k = a.size(0), m = a.size(1), n = b.size(1);
  if (!use_mkl() || k > INT32_MAX || m > INT32_MAX || n > INT32_MAX) {
    return at::mm(a.t(), b).to(at::kFloat);
  }
  at::Tensor c = at::empty({m, n}, a.options().dtype(at::kFloat));
  cblas_gemm_bf16bf16f32(kRowMajor, kTrans, kNoTrans, static_cast<int>(m), static_cast<int>(n),
                         static_cast<int>(k), 1.0f,
                         reinterpret_cast<const uint16_t*>(a.const_data_ptr()),
                         static_cast<int>(m),
                         reinterpret_cast<const uint16_t*>(b.const_data_ptr()),
                         static_cast<int>(n), 0.0f, c.mutable_data_ptr<float>(),
                         static_cast<int>(n));
  return c;
}

struct LinearBf16 : public torch::autograd::Function<LinearBf16> {
  // x (..., in) in any float dtype; w fp32, (out, in), or (in, out) when in_out; b (out), or
  // empty for none (autograd functions take no undefined inputs). Returns (..., out) in bf16, as
  // autocast's product would.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b, bool in_out) {
    std::vector<int64_t> sizes = x.sizes().vec();
    const int64_t d_in = sizes.back();
    at::Tensor x2 = x.reshape({-1, d_in}).to(at::kBFloat16).contiguous();
    at::Tensor w16 = w.to(at::kBFloat16);
    at::Tensor wt = in_out ? w16 : w16.t();  // (in, out)
    at::Tensor y = b.numel() > 0 ? at::addmm(b.to(at::kBFloat16), x2, wt) : at::mm(x2, wt);
    ctx->save_for_backward({x2, w16});
    ctx->saved_data["in_out"] = in_out;
    ctx->saved_data["x_sizes"] = sizes;
    sizes.back() = wt.size(1);
    return y.view(sizes);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x2 = saved[0];
    const at::Tensor& w16 = saved[1];
    const bool in_out = ctx->saved_data["in_out"].toBool();
    const int64_t d_out = in_out ? w16.size(1) : w16.size(0);
    at::Tensor dy = grads[0].reshape({-1, d_out}).to(at::kBFloat16).contiguous();
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      // y = x wt with wt (in, out): dx = dy wt^T, which is w16 itself for (out, in) weights.
      dx = at::mm(dy, in_out ? w16.t() : w16).view(ctx->saved_data["x_sizes"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      dw = in_out ? at_b_fp32(x2, dy) : at_b_fp32(dy, x2);
    }
    if (ctx->needs_input_grad(2)) {
      db = dy.sum(0, /*keepdim=*/false, at::kFloat);
    }
    return {dx, dw, db, at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Whether the weight gradient runs on MKL's bf16 -> fp32 GEMM here (1) or libtorch's mm (0).
int rlhf_linear_bf16_mkl() { return use_mkl() ? 1 : 0; }

// Whether the torch wheel exports MKL's bf16 GEMM at all.
int rlhf_linear_bf16_mkl_available() { return cblas_gemm_bf16bf16f32 != nullptr ? 1 : 0; }

// Overrides the choice on this thread only (for tests): -1 back to the process's, 0 libtorch,
// 1 MKL.
void rlhf_linear_bf16_choose(int choice) { thread_choice = choice < 0 ? -1 : (choice > 0 ? 1 : 0); }

// *out = x W^T + b (in_out = 0) or x W + b (in_out = 1), differentiable, bf16 products; `b` may
// be null. Returns 0, or -1 with libtorch's message in `err`.
int rlhf_linear_bf16(at::Tensor* x, at::Tensor* w, at::Tensor* b, int in_out, at::Tensor** out,
                     char* err, size_t err_len) {
  return rlhf_shim::guarded(err, err_len, [&] {
    at::Tensor bias = b != nullptr ? *b : at::empty({0}, w->options());
    *out = new at::Tensor(LinearBf16::apply(*x, *w, bias, in_out != 0));
  });
}

}  // extern "C"
