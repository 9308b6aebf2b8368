// A linear map for bf16 training on the CPU: y = x W^T + b (or x W + b for GPT-2's (in, out)
// weights) with bf16 products on fp32 master weights, as autocast runs it, but with the weight's
// gradient computed by MKL's bf16 x bf16 -> fp32 GEMM (`cblas_gemm_bf16bf16f32`, exported by the
// torch wheel's libtorch_cpu): the gradient comes out in fp32 at once, where autocast's path
// writes it in bf16 and casts it (measured 2.0-2.4 vs 0.9-1.35 TFLOP/s on SmolLM2-sized
// products, 2 threads, AMX). Without that symbol (a libtorch built without MKL) the gradient
// falls back to libtorch's product and a cast. Nothing throws across the C boundary.

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" __attribute__((weak)) void cblas_gemm_bf16bf16f32(int layout, int transa, int transb,
                                                             int m, int n, int k, float alpha,
                                                             const uint16_t* a, int lda,
                                                             const uint16_t* b, int ldb,
                                                             float beta, float* c, int ldc);

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Main gradients (Megatron's gradient-accumulation fusion): an optimizer registers, for each
// fp32 weight it owns, a view of its flat fp32 gradient buffer. The weight-gradient GEMM then
// writes there directly (beta 0 for the first contribution after a reset, 1 after it), and the
// autograd graph gets no gradient for that weight: no per-weight tensor, no gather into the flat
// buffer. Keyed by the weight's TensorImpl, which the registering optimizer keeps alive.
struct MainGrad {
  at::Tensor view;
  bool written = false;
};
std::mutex registry_mu;
std::unordered_map<const c10::TensorImpl*, MainGrad>& registry() {
  static std::unordered_map<const c10::TensorImpl*, MainGrad> r;
  return r;
}

bool mkl_fits(int64_t k, int64_t m, int64_t n) {
  return cblas_gemm_bf16bf16f32 != nullptr && k <= INT32_MAX && m <= INT32_MAX && n <= INT32_MAX;
}

// c = a^T b + beta c for row-major a (k, m) and b (k, n), both bf16 and contiguous, into a
// contiguous fp32 c (m, n).
void at_b_into(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float beta) {
  const int64_t k = a.size(0), m = a.size(1), n = b.size(1);
  if (!mkl_fits(k, m, n)) {
    at::Tensor p = at::mm(a.t(), b).to(at::kFloat);
    if (beta == 0.0f) {
      c.copy_(p);
    } else {
      c.add_(p);
    }
    return;
  }
  cblas_gemm_bf16bf16f32(kRowMajor, kTrans, kNoTrans, static_cast<int>(m), static_cast<int>(n),
                         static_cast<int>(k), 1.0f,
                         reinterpret_cast<const uint16_t*>(a.const_data_ptr()),
                         static_cast<int>(m),
                         reinterpret_cast<const uint16_t*>(b.const_data_ptr()),
                         static_cast<int>(n), beta, c.mutable_data_ptr<float>(),
                         static_cast<int>(n));
}

// a^T b as a new fp32 tensor (m, n).
at::Tensor at_b_fp32(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor c = at::empty({a.size(1), b.size(1)}, a.options().dtype(at::kFloat));
  at_b_into(a, b, c, 0.0f);
  return c;
}

// The weight gradient (out, in) = dy^T x, or (in, out) = x^T dy: into the weight's registered
// main gradient when it has one (returns an undefined tensor), else as a new fp32 tensor.
at::Tensor weight_grad(const c10::TensorImpl* key, const at::Tensor& x2, const at::Tensor& dy,
                       bool in_out) {
  const at::Tensor& a = in_out ? x2 : dy;
  const at::Tensor& b = in_out ? dy : x2;
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    auto it = registry().find(key);
    if (it != registry().end()) {
      MainGrad& g = it->second;
      at_b_into(a, b, g.view, g.written ? 1.0f : 0.0f);
      g.written = true;
      return at::Tensor();
    }
  }
  return at_b_fp32(a, b);
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
    ctx->saved_data["w_key"] = reinterpret_cast<int64_t>(w.unsafeGetTensorImpl());
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
      auto key = reinterpret_cast<const c10::TensorImpl*>(ctx->saved_data["w_key"].toInt());
      dw = weight_grad(key, x2, dy, in_out);
    }
    if (ctx->needs_input_grad(2)) {
      db = dy.sum(0, /*keepdim=*/false, at::kFloat);
    }
    return {dx, dw, db, at::Tensor()};
  }
};

void set_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = 0;
}

}  // namespace

extern "C" {

// Whether the weight gradient runs on MKL's bf16 -> fp32 GEMM here (1) or libtorch's mm (0).
int rlhf_linear_bf16_mkl() { return cblas_gemm_bf16bf16f32 != nullptr ? 1 : 0; }

// *out = x W^T + b (in_out = 0) or x W + b (in_out = 1), differentiable, bf16 products; `b` may
// be null. Returns 0, or -1 with libtorch's message in `err`.
int rlhf_linear_bf16(at::Tensor* x, at::Tensor* w, at::Tensor* b, int in_out, at::Tensor** out,
                     char* err, size_t err_len) {
  try {
    at::Tensor bias = b != nullptr ? *b : at::empty({0}, w->options());
    *out = new at::Tensor(LinearBf16::apply(*x, *w, bias, in_out != 0));
    return 0;
  } catch (const c10::Error& e) {
    set_err(err, err_len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
  } catch (...) {
    set_err(err, err_len, "unknown C++ exception");
  }
  return -1;
}

// Registers `view` (fp32, contiguous, `w`'s shape) as `w`'s main gradient. Returns 0, or -1
// with the reason in `err`.
int rlhf_main_grad_register(at::Tensor* w, at::Tensor* view, char* err, size_t err_len) {
  try {
    TORCH_CHECK(view->scalar_type() == at::kFloat && view->is_contiguous() &&
                    view->sizes() == w->sizes(),
                "a main gradient must be a contiguous fp32 tensor of the weight's shape");
    std::lock_guard<std::mutex> lock(registry_mu);
    registry()[w->unsafeGetTensorImpl()] = MainGrad{*view, false};
    return 0;
  } catch (const c10::Error& e) {
    set_err(err, err_len, e.what_without_backtrace());
  } catch (...) {
    set_err(err, err_len, "unknown C++ exception");
  }
  return -1;
}

// Forgets `w`'s main gradient (the optimizer that registered it is going away).
void rlhf_main_grad_unregister(at::Tensor* w) {
  std::lock_guard<std::mutex> lock(registry_mu);
  registry().erase(w->unsafeGetTensorImpl());
}

// Whether a backward wrote `w`'s main gradient since the last reset (1 / 0; -1: not registered).
// With `reset`, the next write starts the sum afresh (beta 0).
int rlhf_main_grad_written(at::Tensor* w, int reset) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry().find(w->unsafeGetTensorImpl());
  if (it == registry().end()) return -1;
  int written = it->second.written ? 1 : 0;
  if (reset != 0) it->second.written = false;
  return written;
}

}  // extern "C"
