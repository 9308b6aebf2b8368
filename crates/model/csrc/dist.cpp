// Data parallelism over PyTorch's own distributed engine (c10d), for what tch does not bind: a
// TCPStore for the rendezvous (the MASTER_ADDR/MASTER_PORT contract torchrun uses) and a Gloo
// process group for the collectives. Every entry point catches what libtorch throws and hands the
// message back in `err`; nothing throws across the C boundary.
//
// The torch wheel ships c10d's headers but not Gloo's, and ProcessGroupGloo.hpp cannot be parsed
// without them. The class is declared below with only the members this file calls, each of them
// exported by libtorch_cpu (checked by the build at link time): the constructor, the destructor
// (so that the class is not abstract) and Options::create_default. The object itself is built by
// libtorch's constructor in storage this file allocates (sized well above the real class) and is
// used only through c10d::Backend, whose header we have. Tied to torch 2.11.0's layout, which the
// build pins.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "shim.h"

namespace c10d {
class TORCH_API ProcessGroupGloo : public Backend {
 public:
  struct TORCH_API Options : public Backend::Options {
    static c10::intrusive_ptr<Options> create_default(std::chrono::milliseconds timeout);
  };
  ProcessGroupGloo(const c10::intrusive_ptr<Store>& store, int rank, int size,
                   c10::intrusive_ptr<Options> options);
  ~ProcessGroupGloo() override;
};
}  // namespace c10d

namespace {

using rlhf_shim::guarded;
using rlhf_shim::set_err;

// Upper bound on sizeof(c10d::ProcessGroupGloo): 488 bytes in torch 2.11.0 (the size
// libtorch_python allocates before its binding calls this constructor), with a wide margin.
constexpr size_t kGlooStorage = 16384;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

}  // namespace

extern "C" {

// Joins the group: rank 0 serves the TCPStore on `port`, every rank connects to `addr:port`; then
// Gloo connects the ranks pairwise. Waits at most `timeout_ms` for the others (and later, for any
// one collective). Returns the group, or null with the reason in `err`.
void* rlhf_dist_init(const char* addr, int port, int rank, int world, int64_t timeout_ms, char* err,
                     size_t err_len) {
  Group* group = nullptr;
  int rc = guarded(err, err_len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    void* storage = ::operator new(kGlooStorage);
    std::memset(storage, 0, kGlooStorage);
    c10d::ProcessGroupGloo* pg = nullptr;
    try {
      pg = new (storage) c10d::ProcessGroupGloo(store, rank, world, options);
    } catch (...) {
      ::operator delete(storage);
      throw;
    }
    auto backend = c10::intrusive_ptr<c10d::Backend>::unsafe_steal_from_new(static_cast<c10d::Backend*>(pg));
    group = new Group{store, backend, timeout};
  });
  return rc == 0 ? group : nullptr;
}

// Sums each tensor in place across the group (one collective per tensor, in order).
int rlhf_dist_allreduce_sum(void* handle, at::Tensor** tensors, size_t n, char* err, size_t err_len) {
  auto* group = static_cast<Group*>(handle);
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      opts.timeout = group->timeout;
      auto work = group->backend->allreduce(one, opts);
      work->wait(group->timeout);
    }
  });
}

// Copies rank `root`'s tensor into every rank's, in place.
int rlhf_dist_broadcast(void* handle, at::Tensor* tensor, int root, char* err, size_t err_len) {
  auto* group = static_cast<Group*>(handle);
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> one{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    auto work = group->backend->broadcast(one, opts);
    work->wait(group->timeout);
  });
}

// Returns when every rank has called it (or fails after the timeout).
int rlhf_dist_barrier(void* handle, char* err, size_t err_len) {
  auto* group = static_cast<Group*>(handle);
  return guarded(err, err_len, [&] {
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    auto work = group->backend->barrier(opts);
    work->wait(group->timeout);
  });
}

// Leaves the group (c10d's destructors close the connections and join Gloo's threads).
void rlhf_dist_free(void* handle) {
  try {
    delete static_cast<Group*>(handle);
  } catch (...) {
  }
}

}  // extern "C"
