//! The process's memory allocator.
//!
//! With the `jemalloc` feature and [`jemalloc_global_allocator!`](crate::jemalloc_global_allocator)
//! (in the `rlhf` binary and the benchmark helpers) jemalloc replaces malloc for the whole process: it exports the unprefixed `malloc`/`free`/
//! `posix_memalign`, so libtorch's tensor storage comes from it too, not only Rust's own
//! allocations. Its built-in options (`.cargo/config.toml`) keep freed pages with the process.
//! glibc's malloc hands large freed blocks back to the OS and page-faults them in again, which a
//! training step does for every activation, cast and gradient: measured on a 2-core Xeon, one
//! d=576 bf16 PPO iteration ran ~1.15× faster (README, Memory allocator) at the same peak RSS.
//! `MALLOC_CONF` still overrides the options at run time.

#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// Makes jemalloc the binary's global allocator, which links it in and with it the process-wide
/// `malloc`. Invoke once at the top level of a binary whose `rlhf-model` dependency has the
/// `jemalloc` feature. The library itself installs no allocator: test binaries keep their own
/// (the fuzz suites count allocations with one).
#[macro_export]
macro_rules! jemalloc_global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::Jemalloc = $crate::alloc::Jemalloc;
    };
}

/// The allocator this build links: "jemalloc" (the feature; it serves the whole process once
/// linked) or "system".
pub const NAME: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

/// jemalloc's counters and options, read through `mallctl`; `None` without the feature or when
/// jemalloc refuses the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes the process holds in live allocations (`stats.allocated`).
    pub allocated: u64,
    /// Bytes in pages jemalloc keeps for the process (`stats.resident`).
    pub resident: u64,
    /// `opt.dirty_decay_ms`: how long freed pages stay before going back to the OS (-1: never).
    pub dirty_decay_ms: i64,
}

/// Reads [`Stats`] after refreshing jemalloc's cached counters.
pub fn stats() -> Option<Stats> {
    #[cfg(feature = "jemalloc")]
    {
        imp::stats()
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

/// Hands every freed page jemalloc keeps back to the OS (`arena.<all>.purge`). Returns whether
/// jemalloc did it (`false` without the feature).
pub fn purge() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        imp::purge()
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        false
    }
}

/// The machine's physical memory in bytes (`sysconf`), if known.
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads the system's configuration.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

/// Starts a thread that keeps the pages jemalloc holds for reuse from crowding out the machine:
/// twice a second it reads jemalloc's counters, and when the process's resident bytes pass
/// `fraction` of physical memory while more than a tenth of physical memory of it is freed
/// pages kept for reuse, it purges them ([`purge`]). Below that the freed pages stay, which is
/// what makes steps fast (README, Memory allocator); above it a run trades some page faults for
/// not being killed. `RLHF_MEMORY_TRIM` overrides `fraction` (`off` turns the thread off).
/// Without the jemalloc feature it starts nothing and returns `None`; otherwise the fraction it
/// keeps to.
pub fn guard_memory(fraction: f64) -> Option<f64> {
    let fraction = match std::env::var("RLHF_MEMORY_TRIM") {
        Ok(v) if v == "off" => return None,
        Ok(v) => v.parse::<f64>().ok().filter(|f| *f > 0.0)?,
        Err(_) => fraction,
    };
    let total = physical_memory()?;
    stats()?;
    let limit = (total as f64 * fraction) as u64;
    let slack = total / 10;
    std::thread::Builder::new()
        .name("rlhf-memory".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if let Some(s) = stats()
                    && s.resident > limit
                    && s.resident.saturating_sub(s.allocated) > slack
                {
                    purge();
                }
            }
        })
        .ok()?;
    Some(fraction)
}

#[cfg(feature = "jemalloc")]
mod imp {
    use std::ffi::{CStr, c_void};

    use super::Stats;

    /// `mallctl` read of a plain value of type `T`.
    fn read<T: Copy + Default>(name: &CStr) -> Option<T> {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` is a valid `T` of `len` bytes; jemalloc writes at most `len` bytes and
        // fails (nonzero) when the name's type has another size.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (rc == 0 && len == std::mem::size_of::<T>()).then_some(value)
    }

    pub(super) fn purge() -> bool {
        // "arena.4096.purge": 4096 is MALLCTL_ARENAS_ALL, every arena.
        // SAFETY: a void control: nothing is read or written through the pointers.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        rc == 0
    }

    pub(super) fn stats() -> Option<Stats> {
        let mut epoch: u64 = 1;
        // SAFETY: writing "epoch" takes a u64 and refreshes the statistics; nothing is read back.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&mut epoch as *mut u64).cast::<c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return None;
        }
        Some(Stats {
            allocated: read::<usize>(c"stats.allocated")? as u64,
            resident: read::<usize>(c"stats.resident")? as u64,
            dirty_decay_ms: read::<isize>(c"opt.dirty_decay_ms")? as i64,
        })
    }
}
