//! Data parallelism over PyTorch's distributed engine: a process group of c10d's Gloo backend
//! (collectives over TCP between CPU processes), reached through the C++ shim in `csrc/dist.cpp`,
//! since tch binds none of c10d.
//!
//! The launch contract is torchrun's: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
//! `MASTER_PORT` in the environment ([`LaunchEnv::from_env`]), so `torchrun`, cluster launchers
//! and `rlhf launch` all start ranks the same way. Rank 0 serves c10d's TCPStore for the
//! rendezvous; Gloo then connects every pair of ranks.
//!
//! One group per process, joined once ([`init`]) and read anywhere ([`group`], [`rank`],
//! [`world`], [`is_writer`]): the trainers all-reduce gradients and step statistics through it,
//! and only rank 0 writes files. A peer that dies breaks its connections, and the next
//! collective fails at once with the transport's message; one that hangs fails it after the
//! timeout (`RLHF_DIST_TIMEOUT`, seconds, default [`DEFAULT_TIMEOUT_S`]).

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tch::{Device, Tensor};

use crate::error::{ModelError, Result};

unsafe extern "C" {
    fn rlhf_dist_init(
        addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn rlhf_dist_allreduce_sum(
        group: *mut c_void,
        tensors: *const *mut c_void,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn rlhf_dist_broadcast(
        group: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn rlhf_dist_barrier(group: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    fn rlhf_dist_free(group: *mut c_void);
}

/// Seconds a rank waits for the others (at the rendezvous, or in any one collective) before it
/// gives up with an error. Long enough for rank 0 to write a checkpoint of a real model while
/// the others wait at the next step.
pub const DEFAULT_TIMEOUT_S: u64 = 300;

/// Elements per collective when a tensor is all-reduced in buckets: 4M fp32 values (16 MiB),
/// big enough that Gloo's per-call latency is amortised, small enough to bound its buffers.
pub const BUCKET_ELEMENTS: i64 = 4 << 20;

/// Where this process stands in a launch, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub timeout: Duration,
}

impl LaunchEnv {
    /// Reads the launch variables. `None` when `WORLD_SIZE` is unset or 1 (one process, nothing
    /// to join); an error naming the variable when one is missing or malformed.
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, text: &str| -> Result<u64> {
            text.trim().parse::<u64>().map_err(|_| {
                ModelError::Invalid(format!(
                    "launch environment: {name}={text:?} is not a non-negative integer"
                ))
            })
        };
        let world = number("WORLD_SIZE", &world)? as usize;
        if world == 0 {
            return Err(ModelError::Invalid(
                "launch environment: WORLD_SIZE=0; a launch has at least one process".into(),
            ));
        }
        if world == 1 {
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                ModelError::Invalid(format!(
                    "launch environment: WORLD_SIZE={world} but {name} is not set (a launcher \
                     such as `rlhf launch` or torchrun sets RANK, LOCAL_RANK, MASTER_ADDR and \
                     MASTER_PORT)"
                ))
            })
        };
        let rank = number("RANK", &required("RANK")?)? as usize;
        if rank >= world {
            return Err(ModelError::Invalid(format!(
                "launch environment: RANK={rank} is not below WORLD_SIZE={world}"
            )));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v)? as usize,
            None => rank,
        };
        let master_addr = required("MASTER_ADDR")?;
        let port = number("MASTER_PORT", &required("MASTER_PORT")?)?;
        let master_port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            ModelError::Invalid(format!(
                "launch environment: MASTER_PORT={port} is not a TCP port (1-65535)"
            ))
        })?;
        let timeout = match var("RLHF_DIST_TIMEOUT") {
            Some(v) => match number("RLHF_DIST_TIMEOUT", &v)? {
                0 => {
                    return Err(ModelError::Invalid(
                        "launch environment: RLHF_DIST_TIMEOUT must be at least 1 second".into(),
                    ));
                }
                s => s,
            },
            None => DEFAULT_TIMEOUT_S,
        };
        Ok(Some(LaunchEnv {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            timeout: Duration::from_secs(timeout),
        }))
    }
}

/// The process group: this rank's handle on the Gloo backend.
pub struct Group {
    handle: *mut c_void,
    rank: usize,
    world: usize,
    local_rank: usize,
    timeout: Duration,
    /// Collectives must be issued in the same order on every rank; one at a time per process.
    lock: Mutex<()>,
}

// The handle is only used under `lock`, and c10d's backend may be called from any thread.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

static GROUP: OnceLock<Group> = OnceLock::new();

/// Joins the launch's process group as this process's group (once per process; a second call
/// returns the first group). Blocks until every rank has joined, or fails after the timeout
/// naming the master address.
pub fn init(env: &LaunchEnv) -> Result<&'static Group> {
    if let Some(g) = GROUP.get() {
        return Ok(g);
    }
    let group = Group::join(env)?;
    // A racing second `init` in this process would drop its group; there is none (the CLI
    // joins once, before any work).
    Ok(GROUP.get_or_init(|| group))
}

impl Group {
    /// Joins a process group of its own (the trainers use the process's one, [`group`]; tests
    /// run several ranks as threads of one process with these).
    pub fn join(env: &LaunchEnv) -> Result<Group> {
        let addr = CString::new(env.master_addr.clone()).map_err(|_| {
            ModelError::Invalid("launch environment: MASTER_ADDR holds a NUL byte".into())
        })?;
        let mut err = vec![0 as c_char; 2048];
        let handle = unsafe {
            rlhf_dist_init(
                addr.as_ptr(),
                c_int::from(env.master_port),
                env.rank as c_int,
                env.world as c_int,
                env.timeout.as_millis() as i64,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if handle.is_null() {
            return Err(ModelError::Invalid(format!(
                "rank {} of {}: could not join the process group at {}:{} within {} s: {}",
                env.rank,
                env.world,
                env.master_addr,
                env.master_port,
                env.timeout.as_secs(),
                message(&err)
            )));
        }
        Ok(Group {
            handle,
            rank: env.rank,
            world: env.world,
            local_rank: env.local_rank,
            timeout: env.timeout,
            lock: Mutex::new(()),
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { rlhf_dist_free(self.handle) };
    }
}

/// The group this process joined, if any.
pub fn group() -> Option<&'static Group> {
    GROUP.get()
}

/// This process's rank (0 without a group).
pub fn rank() -> usize {
    group().map_or(0, |g| g.rank)
}

/// Processes in the launch (1 without a group).
pub fn world() -> usize {
    group().map_or(1, |g| g.world)
}

/// Whether this process writes files (checkpoints, logs, exports): rank 0 only.
pub fn is_writer() -> bool {
    rank() == 0
}

/// The C shim's NUL-terminated error text.
pub(crate) fn message(err: &[c_char]) -> String {
    let bytes: Vec<u8> = err
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

impl Group {
    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn check(t: &Tensor, what: &str) -> Result<()> {
        if t.device() != Device::Cpu || !t.is_contiguous() {
            return Err(ModelError::Invalid(format!(
                "{what}: data-parallel collectives take contiguous CPU tensors (Gloo), got {:?} \
                 (contiguous: {})",
                t.device(),
                t.is_contiguous()
            )));
        }
        Ok(())
    }

    fn fail(&self, what: &str, err: &[c_char]) -> ModelError {
        ModelError::Invalid(format!(
            "rank {} of {}: {what} failed: {} (another rank probably died or hung; its own \
             output says why)",
            self.rank,
            self.world,
            message(err)
        ))
    }

    /// Sums `t` over the ranks, in place, in buckets of [`BUCKET_ELEMENTS`]. `what` names the
    /// collective in errors (e.g. "the gradient all-reduce at step 7").
    pub fn all_reduce_sum(&self, t: &Tensor, what: &str) -> Result<()> {
        Self::check(t, what)?;
        let flat = t.view([-1]);
        let n = flat.numel() as i64;
        let buckets: Vec<Tensor> = (0..n)
            .step_by(BUCKET_ELEMENTS as usize)
            .map(|start| flat.narrow(0, start, BUCKET_ELEMENTS.min(n - start)))
            .collect();
        let ptrs: Vec<*mut c_void> = buckets.iter().map(|b| b.as_ptr() as *mut c_void).collect();
        let mut err = vec![0 as c_char; 2048];
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe {
            rlhf_dist_allreduce_sum(
                self.handle,
                ptrs.as_ptr(),
                ptrs.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.fail(what, &err));
        }
        Ok(())
    }

    /// Sums host scalars over the ranks, in place (one collective).
    pub fn all_reduce_f64(&self, values: &mut [f64], what: &str) -> Result<()> {
        let t = Tensor::from_slice(values);
        self.all_reduce_sum(&t, what)?;
        values.copy_from_slice(&Vec::<f64>::try_from(&t)?);
        Ok(())
    }

    /// Copies rank `root`'s `t` into every rank's, in place.
    pub fn broadcast(&self, t: &Tensor, root: usize, what: &str) -> Result<()> {
        Self::check(t, what)?;
        let mut err = vec![0 as c_char; 2048];
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe {
            rlhf_dist_broadcast(
                self.handle,
                t.as_ptr() as *mut c_void,
                root as c_int,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.fail(what, &err));
        }
        Ok(())
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self, what: &str) -> Result<()> {
        let mut err = vec![0 as c_char; 2048];
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe { rlhf_dist_barrier(self.handle, err.as_mut_ptr(), err.len()) };
        if rc != 0 {
            return Err(self.fail(what, &err));
        }
        Ok(())
    }

    /// The timeout every collective runs under.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn launch_variables_are_read_and_checked() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1")]).unwrap(), None);
        let full = [
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let e = env(&full).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (1, 2, 1));
        assert_eq!(e.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
        let err = |pairs: &[(&str, &str)]| env(pairs).unwrap_err().to_string();
        assert!(err(&[("WORLD_SIZE", "2")]).contains("RANK is not set"));
        assert!(err(&[("WORLD_SIZE", "two")]).contains("WORLD_SIZE=\"two\""));
        let mut bad = full.to_vec();
        bad[1] = ("RANK", "2");
        assert!(err(&bad).contains("RANK=2 is not below WORLD_SIZE=2"));
        bad[1] = ("RANK", "0");
        bad[3] = ("MASTER_PORT", "70000");
        assert!(err(&bad).contains("not a TCP port"));
        let mut t = full.to_vec();
        t.push(("RLHF_DIST_TIMEOUT", "0"));
        assert!(err(&t).contains("at least 1 second"));
    }
}
