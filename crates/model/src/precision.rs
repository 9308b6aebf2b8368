//! `--precision fp32|bf16|auto`: the dtype of the matrix products, shared by every command.
//!
//! bf16 here is mixed precision as PyTorch's autocast does it: the weights stay fp32 (the master
//! copy the optimizer updates, with fp32 state), and inside [`Gpt`](crate::Gpt)'s forward pass the
//! products (linear maps, attention, the LM head) run on bf16 casts of their inputs. Everything
//! else stays fp32: the residual stream (fp32 + bf16 promotes to fp32), the norms' statistics,
//! the logits (cast back before any softmax), log-probs, losses, reductions and RL ratios.
//!
//! The switch is libtorch's autocast, reached through a small C++ shim (`csrc/autocast.cpp`)
//! because tch binds only CUDA's. It is thread-local and scoped by [`Autocast`]. Decoding-sized
//! passes (no graph, few rows) skip it: there the skinny kernels ([`crate::skinny`]) read bf16
//! copies of the weights made once per generation ([`crate::skinny::DecodeMirrors`]).

use std::ffi::c_int;
use std::str::FromStr;

use tch::{Device, Kind};

/// What the user asked for; `Auto` is bf16 on CUDA and on CPUs with AVX512-BF16 or AMX-BF16,
/// fp32 elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    Fp32,
    Bf16,
    #[default]
    Auto,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown precision '{other}'; expected fp32, bf16 or auto"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Auto => "auto",
        })
    }
}

/// The resolved choice: the dtype of the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    #[default]
    Fp32,
    Bf16,
}

impl std::fmt::Display for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        })
    }
}

/// On a CPU, `auto` picks bf16 only for models at least this wide (hidden size). Measured on a
/// 2-core Xeon with AMX (README, Precision): a training step of a 576-wide GPT ran 1.7× faster in
/// bf16, a 256-wide one only ~1.07×, and the 128-wide demo model's stages ran slower: on small
/// products the casts around them cost more than the faster products save.
pub const AUTO_MIN_WIDTH: i64 = 512;

impl Precision {
    /// Resolves the choice for a model `width` wide (hidden size) on `device`. An explicit `Bf16`
    /// is honoured on any CPU (libtorch emulates the products where the instructions are
    /// missing, slowly); `Auto` is bf16 on CUDA, and on a CPU with bf16 instructions for models
    /// at least [`AUTO_MIN_WIDTH`] wide.
    pub fn resolve(self, device: Device, width: i64) -> Compute {
        match self {
            Self::Fp32 => Compute::Fp32,
            Self::Bf16 => Compute::Bf16,
            Self::Auto if device.is_cuda() => Compute::Bf16,
            Self::Auto if cpu_has_bf16() && width >= AUTO_MIN_WIDTH => Compute::Bf16,
            Self::Auto => Compute::Fp32,
        }
    }

    /// The line every command that runs a model prints: what was chosen, and why (and on a CPU
    /// where bf16 may run, which kernel decodes from the bf16 weight copies).
    pub fn describe(self, device: Device) -> String {
        let line = self.reason(device);
        if device.is_cuda() || self == Self::Fp32 || (self == Self::Auto && !cpu_has_bf16()) {
            return line;
        }
        format!("{line}; bf16 decoding: {}", crate::skinny::decode_kernel())
    }

    fn reason(self, device: Device) -> String {
        match self {
            Self::Auto if device.is_cuda() => "precision: bf16 (auto: CUDA)".into(),
            Self::Auto if cpu_has_bf16() => format!(
                "precision: bf16 for models at least {AUTO_MIN_WIDTH} wide, fp32 below (auto: this \
                 CPU has {}; smaller products gain less than the casts cost)",
                cpu_bf16_flags().join(", ")
            ),
            Self::Auto => {
                "precision: fp32 (auto: this CPU has neither avx512_bf16 nor amx_bf16)".into()
            }
            // Measured on a 2-core Xeon without either (README, Precision): a 576-wide training
            // step 2.9-3.9x slower than fp32, SmolLM2 sampling 1.09-1.18x faster (half the bytes).
            Self::Bf16 if !device.is_cuda() && !cpu_has_bf16() => {
                "precision: bf16 (asked for; this CPU has neither avx512_bf16 nor amx_bf16, so \
                 libtorch emulates bf16 products: training runs several times slower than fp32 \
                 here, only decoding gains)"
                    .into()
            }
            _ => format!("precision: {self} (asked for)"),
        }
    }
}

/// Whether the CPU has native bf16 products (AVX512-BF16 dot products or AMX-BF16 tiles).
pub fn cpu_has_bf16() -> bool {
    !cpu_bf16_flags().is_empty()
}

/// The CPU's bf16 flags among `avx512_bf16` and `amx_bf16`, as `/proc/cpuinfo` names them.
pub fn cpu_bf16_flags() -> &'static [&'static str] {
    static FLAGS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FLAGS
        .get_or_init(|| {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let flags: std::collections::HashSet<&str> = info
                .lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.split_whitespace().collect())
                .unwrap_or_default();
            ["avx512_bf16", "amx_bf16"]
                .into_iter()
                .filter(|f| flags.contains(f))
                .collect()
        })
        .as_slice()
}

/// The CPU's vendor as CPUID leaf 0 names it ("GenuineIntel", "AuthenticAMD", ...); empty off
/// x86-64. Kernel choices that measured differently on Intel and AMD CPUs read it (the C++ shim
/// reads the same leaf for its GEMM choice).
pub fn cpu_vendor() -> &'static str {
    static VENDOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VENDOR.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let leaf0 = std::arch::x86_64::__cpuid(0);
            let bytes: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx]
                .iter()
                .flat_map(|r| r.to_le_bytes())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            String::new()
        }
    })
}

/// The precision models take when they are built or loaded; commands set it once from
/// `--precision` before loading anything ([`set_default`]). Starts as fp32, so libraries and
/// tests that never set it keep exact fp32 behaviour.
static DEFAULT: std::sync::Mutex<(Precision, bool)> =
    std::sync::Mutex::new((Precision::Fp32, false));

/// Sets the precision of models built or loaded from now on in this process, on `device`.
pub fn set_default(p: Precision, device: Device) {
    *DEFAULT.lock().unwrap_or_else(|e| e.into_inner()) = (p, device.is_cuda());
}

/// The precision and device [`set_default`] recorded.
fn default() -> (Precision, Device) {
    let (p, cuda) = *DEFAULT.lock().unwrap_or_else(|e| e.into_inner());
    (p, if cuda { Device::Cuda(0) } else { Device::Cpu })
}

/// The compute precision a new model `width` wide takes (see [`set_default`]).
pub fn default_compute(width: i64) -> Compute {
    let (p, device) = default();
    p.resolve(device, width)
}

/// The process default as a run's checkpoints record it (`rlhf.json`): what the products will
/// be, so that a resume in another precision is refused rather than mixed. `auto` records what it
/// resolves to here ("bf16 at width >= 512, fp32 below" on a CPU with bf16 instructions), so the
/// same run resumed on a machine that resolves it otherwise is refused too.
pub fn run_tag() -> String {
    let (p, device) = default();
    let (narrow, wide) = (p.resolve(device, 0), p.resolve(device, AUTO_MIN_WIDTH));
    if narrow == wide {
        wide.to_string()
    } else {
        format!("{wide} at width >= {AUTO_MIN_WIDTH}, {narrow} below")
    }
}

unsafe extern "C" {
    fn rlhf_autocast_enter(
        cuda: c_int,
        half: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> c_int;
    fn rlhf_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
    fn rlhf_autocast_is_enabled(cuda: c_int) -> c_int;
}

/// Autocast to `kind` (bf16 or f16) on this thread for `device`'s type, until dropped; nesting
/// restores the outer state. Like `torch.autocast`, the outermost guard drops libtorch's cache
/// of casted weights when it ends (tensors a graph saved for backward stay alive through it).
pub struct Autocast {
    cuda: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl Autocast {
    /// Panics only if libtorch throws, which its autocast setters do not for these arguments.
    pub fn enter(device: Device, kind: Kind) -> Self {
        let cuda = c_int::from(device.is_cuda());
        let half = c_int::from(kind == Kind::Half);
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: the shim writes two ints through valid pointers and catches every C++ exception.
        let rc = unsafe { rlhf_autocast_enter(cuda, half, &mut prev_enabled, &mut prev_dtype) };
        assert_eq!(rc, 0, "libtorch refused to enable autocast");
        Self {
            cuda,
            prev_enabled,
            prev_dtype,
        }
    }

    /// Whether autocast is on for `device`'s type on this thread.
    pub fn is_enabled(device: Device) -> bool {
        // SAFETY: a plain query; the shim catches exceptions (-1, read as off).
        unsafe { rlhf_autocast_is_enabled(c_int::from(device.is_cuda())) == 1 }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: restores the values `enter` read; exceptions are caught in the shim.
        unsafe { rlhf_autocast_exit(self.cuda, self.prev_enabled, self.prev_dtype) };
    }
}

/// The autocast guard for a forward pass in `compute` on `device`, or `None` for fp32.
pub fn guard(compute: Compute, device: Device) -> Option<Autocast> {
    (compute == Compute::Bf16).then(|| Autocast::enter(device, Kind::BFloat16))
}
