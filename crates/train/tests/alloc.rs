//! The allocator the `rlhf` binary and the benchmark helpers run with (`rlhf_model::alloc`):
//! jemalloc, serving libtorch's tensors too, with its freed pages kept. One test in its own binary,
//! because the counters are process-wide.

use tch::{Device, Kind, Tensor};

#[test]
fn libtorch_tensors_come_from_jemalloc_which_keeps_freed_pages() {
    assert_eq!(rlhf_model::alloc::NAME, "jemalloc");
    let before = rlhf_model::alloc::stats().expect("jemalloc statistics");
    // The build-time default from .cargo/config.toml, unless MALLOC_CONF overrides it.
    if std::env::var_os("MALLOC_CONF").is_none() {
        assert_eq!(before.dirty_decay_ms, -1, "{before:?}");
    }
    let bytes: i64 = 64 << 20;
    let t = Tensor::ones([bytes / 4], (Kind::Float, Device::Cpu));
    let during = rlhf_model::alloc::stats().expect("jemalloc statistics");
    // libtorch's posix_memalign went through jemalloc: its live bytes grew by the tensor's size.
    assert!(
        during.allocated >= before.allocated + bytes as u64,
        "a {bytes}-byte tensor moved jemalloc's allocated bytes {} -> {}",
        before.allocated,
        during.allocated
    );
    assert_eq!(
        f64::try_from(t.sum(Kind::Double)).unwrap(),
        (bytes / 4) as f64
    );
    drop(t);
    let after = rlhf_model::alloc::stats().expect("jemalloc statistics");
    assert!(
        after.allocated + (bytes as u64) / 2 < during.allocated,
        "{after:?}"
    );
    // Freed, its pages stay resident for the next tensor instead of going back to the OS.
    assert!(
        after.resident + (bytes as u64) / 2 > during.resident,
        "{during:?} -> {after:?}"
    );
    // Until a purge (what `guard_memory` does when the machine's memory runs short) gives them
    // back.
    assert!(rlhf_model::alloc::purge());
    let purged = rlhf_model::alloc::stats().expect("jemalloc statistics");
    assert!(
        purged.resident + (bytes as u64) / 2 < after.resident,
        "{after:?} -> {purged:?}"
    );
    assert!(rlhf_model::alloc::physical_memory().is_some_and(|m| m > bytes as u64));
    // The guard starts (it purges only past 99% of the machine's memory here).
    if std::env::var_os("RLHF_MEMORY_TRIM").is_none() {
        assert_eq!(rlhf_model::alloc::guard_memory(0.99), Some(0.99));
    }
}
