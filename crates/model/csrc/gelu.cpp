// GPT-2's activation, GELU with the tanh approximation, for bf16 activations on CPUs with
// AVX-512: one pass forward and one backward, as a libtorch autograd function. libtorch's own
// bf16 kernel spends most of its time in a tanh accurate to 1 ulp of fp32 (Sleef's u10), which a
// bf16 result cannot show; here gelu(x) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3),
// with one exp (a degree-6 polynomial after range reduction, ~1e-7 relative) and one division,
// computed in fp32 and rounded to bf16 to nearest even as libtorch rounds. Only these functions
// are compiled for AVX-512 (a `target` attribute, not a flag for the whole file), and they run
// only when the CPU reports it. Any other input (fp32, another device, no AVX-512) goes to
// libtorch's gelu. Nothing throws across the C boundary.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/gelu_backward.h>
#include <torch/csrc/autograd/custom_function.h>

#include <immintrin.h>

#include "shim.h"

#include <cstdint>

namespace {

#define RLHF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

bool has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
}

RLHF_AVX512 inline __m512 load_bf16(const uint16_t* p, __mmask16 m) {
  __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Round to nearest even, as libtorch's float -> bf16 conversion does (NaN stays NaN).
RLHF_AVX512 inline void store_bf16(uint16_t* p, __m512 v, __mmask16 m) {
  __m512i b = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  _mm512_mask_cvtepi32_storeu_epi16(p, m, _mm512_srli_epi32(b, 16));
}

// exp(x) for x clamped to [-87, 100] (past 88.7 the result is +inf, as it should be): x = n ln2
// + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial to r^6 (relative error < 2e-7), times 2^n.
RLHF_AVX512 inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(100.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// s = sigmoid(2u) = (1 + tanh(u)) / 2, and 2u.
RLHF_AVX512 inline __m512 half_one_plus_tanh(__m512 x, __m512* du_dx) {
  __m512 x2 = _mm512_mul_ps(x, x);
  __m512 two_u = _mm512_mul_ps(
      _mm512_mul_ps(x, _mm512_fmadd_ps(x2, _mm512_set1_ps(kCubic), _mm512_set1_ps(1.0f))),
      _mm512_set1_ps(2.0f * kSqrt2OverPi));
  if (du_dx != nullptr) {
    *du_dx = _mm512_mul_ps(_mm512_fmadd_ps(x2, _mm512_set1_ps(3.0f * kCubic), _mm512_set1_ps(1.0f)),
                           _mm512_set1_ps(kSqrt2OverPi));
  }
  __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), two_u));
  return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

RLHF_AVX512 void forward_span(const uint16_t* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 v = load_bf16(x + i, m);
    store_bf16(y + i, _mm512_mul_ps(v, half_one_plus_tanh(v, nullptr)), m);
  }
}

// d/dx [x s] with s = (1 + tanh u) / 2: s + x * 2 s (1 - s) du/dx.
RLHF_AVX512 void backward_span(const uint16_t* g, const uint16_t* x, uint16_t* gx, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 v = load_bf16(x + i, m);
    __m512 du;
    __m512 s = half_one_plus_tanh(v, &du);
    __m512 ds = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_sub_ps(_mm512_set1_ps(1.0f), s)),
                              _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_mul_ps(v, du)));
    __m512 d = _mm512_add_ps(s, ds);
    store_bf16(gx + i, _mm512_mul_ps(load_bf16(g + i, m), d), m);
  }
}

constexpr int64_t kGrain = 1 << 14;

bool fast(const at::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && has_avx512();
}

at::Tensor forward_bf16(const at::Tensor& x_in) {
  at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto* xp = reinterpret_cast<const uint16_t*>(x.const_data_ptr());
  auto* yp = reinterpret_cast<uint16_t*>(y.mutable_data_ptr());
  at::parallel_for(0, x.numel(), kGrain,
                   [&](int64_t b, int64_t e) { forward_span(xp + b, yp + b, e - b); });
  return y;
}

at::Tensor backward_bf16(const at::Tensor& g_in, const at::Tensor& x_in) {
  at::Tensor x = x_in.contiguous();
  at::Tensor g = g_in.to(at::kBFloat16).contiguous();
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto* xp = reinterpret_cast<const uint16_t*>(x.const_data_ptr());
  auto* gp = reinterpret_cast<const uint16_t*>(g.const_data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(gx.mutable_data_ptr());
  at::parallel_for(0, x.numel(), kGrain,
                   [&](int64_t b, int64_t e) { backward_span(gp + b, xp + b, op + b, e - b); });
  return gx;
}

struct GeluTanh : public torch::autograd::Function<GeluTanh> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    return forward_bf16(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0];
    return {backward_bf16(grads[0], x)};
  }
};

}  // namespace

extern "C" {

// Whether `rlhf_gelu_tanh` runs its own kernel for bf16 tensors on this CPU (1) or libtorch's (0).
int rlhf_gelu_tanh_fast() { return has_avx512() ? 1 : 0; }

// *out = gelu(x, approximate="tanh"), differentiable. Returns 0, or -1 with libtorch's message
// in `err`.
int rlhf_gelu_tanh(at::Tensor* x, at::Tensor** out, char* err, size_t err_len) {
  return rlhf_shim::guarded(err, err_len, [&] {
    *out = new at::Tensor(fast(*x) ? GeluTanh::apply(*x) : at::gelu(*x, "tanh"));
  });
}

}  // extern "C"
