// The part of libtorch's autocast that tch does not bind: tch's `autocast` flips CUDA's switch only
// (`at::autocast::set_enabled`), so CPU mixed precision needs these. Each function mirrors one
// step of `torch.autocast`'s `__enter__`/`__exit__`. Nothing here throws across the C boundary.

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace {
c10::DeviceType device_type(int cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
c10::ScalarType scalar_type(int half) { return half ? c10::ScalarType::Half : c10::ScalarType::BFloat16; }
}  // namespace

extern "C" {

// Enables autocast on this thread for `cuda ? CUDA : CPU` with bf16 (half = 0) or fp16 products.
// Writes the previous state to `prev_enabled` / `prev_dtype` (a c10::ScalarType code) for
// `rlhf_autocast_exit`. Returns 0, or -1 if libtorch threw.
int rlhf_autocast_enter(int cuda, int half, int* prev_enabled, int* prev_dtype) {
  try {
    auto dt = device_type(cuda);
    *prev_enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::set_autocast_dtype(dt, scalar_type(half));
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Restores the state `rlhf_autocast_enter` saved; the outermost exit drops the cache of casted
// weights, as `torch.autocast` does.
int rlhf_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  try {
    auto dt = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dt, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<c10::ScalarType>(prev_dtype));
    return 0;
  } catch (...) {
    return -1;
  }
}

// Whether autocast is on for this thread and device (1), off (0), or libtorch threw (-1).
int rlhf_autocast_is_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
