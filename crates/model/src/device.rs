//! `--device cpu|cuda|auto` and the intra-op thread count, shared by every command.

use std::str::FromStr;

use tch::Device;

use crate::error::{ModelError, Result};

/// The device a user asked for; `Auto` picks CUDA when libtorch sees a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    #[default]
    Auto,
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown device '{other}'; expected cpu, cuda or auto"
            )),
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

impl DeviceArg {
    /// Resolves to a tch device; asking for CUDA where there is none is an error, not a fallback.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => Err(ModelError::Invalid(
                "--device cuda was requested but libtorch sees no CUDA device".into(),
            )),
        }
    }
}

/// Sets libtorch's intra-op threads (`None`: one per available core) and tunes the allocator
/// ([`tune_allocator`]); every command calls it first.
pub fn set_threads(threads: Option<usize>) {
    tune_allocator();
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tch::set_num_threads(n as i32);
}

/// Keeps freed CPU tensor memory in the process instead of handing it back to the kernel.
///
/// libtorch allocates CPU tensors with glibc's `malloc`, which by default serves blocks above
/// 128 KiB (a (768, 344) activation is 1 MiB) with a fresh `mmap` and unmaps them on `free`,
/// and trims the heap top above 128 KiB. A training step allocates and frees hundreds of such
/// tensors, so every one of them page-faults its memory in again and the kernel zeroes it: on
/// the PPO benchmark's micro model that was ~25 % of a forward pass's time. Here blocks up to
/// 32 MiB (glibc's limit) come from the heap, and up to 256 MiB of free heap is kept (64 MiB
/// extra per growth). Larger tensors (weights of real models) are still mapped one by one.
/// Affects only glibc on Linux; idempotent. Left alone when the user tunes malloc through the
/// environment (`GLIBC_TUNABLES` or a `MALLOC_*_` variable). Binaries that link jemalloc
/// ([`crate::alloc`]: the `rlhf` CLI, the benchmark helpers) do not use glibc's malloc at all,
/// and there this has no effect; it still serves builds without it (the test binaries).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let user_set = std::env::vars_os().any(|(k, _)| {
                let k = k.to_string_lossy();
                k == "GLIBC_TUNABLES" || (k.starts_with("MALLOC_") && k.ends_with('_'))
            });
            if user_set {
                return;
            }
            // SAFETY: mallopt only changes glibc's allocation thresholds; any value is valid
            // (an out-of-range one is refused and returns 0).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}
