// libtorch's op profiler (the legacy one, which writes a chrome://tracing file), for benchmarks.
#include <torch/csrc/autograd/profiler_legacy.h>

#include <string>

extern "C" {

void* rlhf_profile_begin(const char* path) {
  try {
    return new torch::autograd::profiler::RecordProfile(std::string(path));
  } catch (...) {
    return nullptr;
  }
}

void rlhf_profile_end(void* p) {
  try {
    delete static_cast<torch::autograd::profiler::RecordProfile*>(p);
  } catch (...) {
  }
}

}  // extern "C"
