//! CPU kernels for decoding on x86-64: the skinny f32 product `y = x Wᵀ (+ b)` where `x` has few
//! rows (the batch, one new token each, during KV-cache sampling) and `W` is stored (out, in) as
//! in `nn.Linear` and the tied embedding (read from bf16 copies of `W` while a [`DecodeMirrors`]
//! holds them: `--precision bf16`); and the attention of one new token per row against the
//! KV cache ([`attend_one`]).
//!
//! Why: decoding streams every weight once per new token, so this product is nearly all of a
//! sampling step. libtorch hands it to MKL's sgemm, which on AMD CPUs takes a generic path: on
//! the 2-core EPYC this project is measured on, SmolLM2's 49152 × 576 head ran at ~20 GFLOP/s for
//! 16 rows and the layer projections at 20–65. This kernel keeps a 4 × 3 block of dot products
//! in AVX2 registers (each loaded weight vector feeds 4 fused multiply-adds), prefetches weight
//! rows ahead, and splits the output columns over libtorch's own OpenMP team, so that no second
//! thread pool competes with OpenMP's waiting workers for the cores.
//!
//! bf16 copies on a CPU with AVX-512 are packed so that a 64-byte line holds a pair of k values
//! for 16 output columns: a shift and a mask widen it to two vectors of exact f32 weights, each
//! row's x values are broadcast, and the accumulators (one per row, up to 16) have output columns
//! in their lanes, so each line streams in once for the whole batch and no horizontal sums are
//! needed. Measured on a 2-core Xeon with AVX512-BF16 (bench_skinny, SmolLM2's shapes at 16 rows,
//! weights streamed from memory), this ran at ~155–205 GFLOP/s against ~90–125 for the AVX2
//! kernel on the same copies and ~80–100 for fp32. `vdpbf16ps` was slower there: it issues once per two
//! cycles (100 GFLOP/s a core against 200 for f32 FMAs on zmm), and rounding x to bf16 costs
//! accuracy besides.
//!
//! On AMD's Zen 4 (AVX512-BF16, no AMX) `vdpbf16ps` is the faster way to read the same packed
//! copies ([`dpbf16`]): there it issues at the FMA's rate and does two multiply-adds per lane,
//! and each 64-byte line is already its B operand (a pair of k values in every 32-bit lane). x is
//! rounded to bf16 (pairs broadcast as one 32-bit lane), the sums stay f32. Measured on a 2-core
//! EPYC (Zen 4) at 16 rows from the caches: 250–290 GFLOP/s against ~200 for the FMA kernel on
//! the same copies; like AMX it also takes a prompt's prefill, so a bf16 `generate` casts no
//! weights there either (a SmolLM2 prefill of 16 × 16 tokens: 645 → ~240 ms).
//!
//! On a CPU with AMX (AMX-TILE and AMX-BF16, e.g. Sapphire Rapids), the same packed copies are
//! read by tile instructions: 16 lines of a group are exactly one B tile of `tdpbf16ps` (32 k
//! values × 16 columns), x is rounded to bf16 into A tiles (as autocast rounds a product's
//! inputs), and the sums stay f32 in C tiles. One instruction does 16 × 16 × 32 multiply-adds,
//! so decoding is bound by the bytes of the weights again: measured on the same Xeon, 190–490
//! GFLOP/s at 16 rows (12–31 GB/s of weights). Because the tiles are that fast, the AMX kernel
//! also takes a prompt's prefill (up to [`MAX_TILE_ROWS`] rows, two groups × 32 rows at a
//! time: 700–1300 GFLOP/s at 256 rows, near oneDNN's 840–1630 on plain bf16 tensors), so a
//! bf16 `generate` casts no weights at all. `RLHF_DECODE_KERNEL=avx512` keeps the FMA kernel.
//! While AMX (or `vdpbf16ps`) copies are held, a layer's projections of the same x go as one
//! call ([`linear_many`]) and RMSNorm runs in one pass ([`rms_norm`]): at 16 rows a product's or
//! a norm's fixed cost is several µs, and there are ~10 of them per layer per token.
//!
//! They apply only where nothing else is needed of the result: CPU, f32, contiguous weights, at
//! most [`MAX_ROWS`] rows (AMX copies: [`MAX_TILE_ROWS`]), and no autograd graph to record
//! (sampling runs under `no_grad`).
//! Anything else, a CPU without AVX2/FMA, or `RLHF_DECODE_KERNEL=torch` in the environment, returns
//! `None` and the caller uses libtorch. Results differ from libtorch's only by summation order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, c_int, c_uint, c_void};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

/// The most rows (batch × new tokens) the kernel takes; larger products are libtorch's.
pub const MAX_ROWS: i64 = 64;

/// The most rows the AMX and `vdpbf16ps` kernels take from copies laid out for them: a whole
/// prompt's prefill (16 rows at a time, each 16 rows re-reading this thread's share of W from
/// its cache).
pub const MAX_TILE_ROWS: i64 = 4096;

/// Rows of `x` and of `W` held in registers at once.
const MB: usize = 4;
const NB: usize = 3;

/// The most rows of x the AVX-512 path over packed bf16 copies holds at once: 16 accumulators
/// of 16 output columns, 2 widened weight vectors and the broadcast x values, so that each line
/// of weights streams in once for a whole decoding batch.
const MG: usize = 16;

/// How many register blocks of weight rows ahead the first row block prefetches (AVX2 path).
const PREFETCH: usize = 2;

/// How many k steps (64-byte lines of a packed group) ahead the packed kernel prefetches.
const PREFETCH_LINES: usize = 16;

/// Below this many multiply-adds a product runs on the calling thread only.
const PARALLEL_WORK: i64 = 1 << 18;

/// Whether the kernels are available and not switched off (`RLHF_DECODE_KERNEL=torch`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("RLHF_DECODE_KERNEL").is_ok_and(|v| v == "torch");
        !off && cpu_supported()
    })
}

/// Whether bf16 copies are read by the AVX-512 kernel (packed copies, 16 f32 lanes, no
/// horizontal sums): on CPUs with AVX512F, unless `RLHF_DECODE_KERNEL=avx2` asks for the AVX2
/// one, which reads copies in W's own layout.
pub fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("RLHF_DECODE_KERNEL").is_ok_and(|v| v == "avx2");
        !off && enabled() && avx512_supported()
    })
}

/// Whether packed bf16 copies are read by AMX tile instructions (`tdpbf16ps`): on CPUs with
/// AMX-TILE and AMX-BF16 whose kernel grants this process the tile state, unless
/// `RLHF_DECODE_KERNEL=avx512` (or `avx2`) asks for the older kernels. The x values are rounded
/// to bf16 for the tiles, as autocast rounds a product's inputs; the products are exact and
/// sums are f32.
pub fn amx() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("RLHF_DECODE_KERNEL").is_ok_and(|v| v == "avx512");
        !off && avx512() && amx_supported()
    })
}

/// Whether packed bf16 copies (no AMX) are read by AVX512-BF16's `vdpbf16ps` rather than
/// widened to f32 for FMAs: by default on AMD CPUs with AVX512-BF16, where the instruction does
/// a pair of multiply-adds per lane at the FMA's rate (Zen 4: SmolLM2's decode products at 16
/// rows 1.3-1.8x the FMA kernel's rate), not on Intel's, where it issued at half the FMA's rate.
/// `RLHF_DECODE_KERNEL=avx512bf16` asks for it on any CPU that has the instruction,
/// `=avx512` for the FMA kernel. x is rounded to bf16, as autocast rounds a product's inputs
/// (and as the AMX kernel does); the products are exact and the sums f32.
pub fn dpbf16() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let choice = std::env::var("RLHF_DECODE_KERNEL").ok();
        match choice.as_deref() {
            Some("avx512" | "avx2" | "torch") => false,
            _ if !avx512() || amx() || !avx512bf16_supported() => false,
            Some("avx512bf16") => true,
            _ => crate::precision::cpu_vendor() == "AuthenticAMD",
        }
    })
}

/// Which kernel reads bf16 decode copies on this CPU, in words (for the precision line).
pub fn decode_kernel() -> &'static str {
    match Layout::best() {
        _ if !enabled() => "libtorch's products on casts (RLHF_DECODE_KERNEL=torch or no AVX2)",
        Layout::Tiles => "AMX tiles (x rounded to bf16, f32 sums)",
        Layout::Packed if dpbf16() => "AVX512-BF16 vdpbf16ps (x rounded to bf16, f32 sums)",
        Layout::Packed => "AVX-512 (bf16 weights widened to f32)",
        Layout::Rows => "AVX2 (bf16 weights widened to f32)",
    }
}

/// AMX-TILE and AMX-BF16 in CPUID leaf 7 (EDX bits 24 and 22), and Linux's permission to use
/// the tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once for the process;
/// without it the first tile instruction faults).
fn amx_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // CPUID leaf 7 exists on every CPU with AVX-512 (checked by the caller).
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        if edx & (1 << 24) == 0 || edx & (1 << 22) == 0 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a request for a permission; it changes nothing else in the process.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

fn avx512bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx512_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `t` is an f32 tensor on the CPU, what the kernels read.
fn float_cpu(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float
}

/// Whether autograd would record a graph through any of `inputs` (the kernels record none).
fn records_graph(inputs: &[&Tensor]) -> bool {
    inputs.iter().any(|t| t.requires_grad()) && grad_enabled()
}

pub(crate) fn grad_enabled() -> bool {
    // libtorch has no getter in tch; setting returns the previous mode, which we restore.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(prev);
        prev != 0
    }
}

thread_local! {
    /// bf16 copies of fp32 weight matrices, by the fp32 tensor's data address, while a
    /// [`DecodeMirrors`] on this thread holds them.
    static MIRRORS: RefCell<HashMap<usize, Mirror>> = RefCell::new(HashMap::new());
    /// How many of this thread's copies are laid out for AMX ([`tiles_held`]).
    static TILES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How a bf16 copy is laid out, and so which kernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// (n, k) row-major, for the AVX2 kernel.
    Rows,
    /// Packed for the AVX-512 kernel as (⌈n/16⌉, L, 16, 2) with L = ⌈k/2⌉ rounded up to a multiple
    /// of 16: for each group of 16 output columns and each pair of k values, one 64-byte line
    /// whose 32-bit lane i holds column i's weight at the even k in its low half and at the odd k
    /// in its high half (zeros where n, k or L run past the matrix). One shift and one mask turn
    /// a line into two vectors of exact f32 weights.
    Packed,
    /// The same memory read by AMX: 16 lines of a group are one B tile of `tdpbf16ps` (32 k
    /// values × 16 columns, pairs of k in each 32-bit lane, as the instruction wants them).
    Tiles,
}

impl Layout {
    /// Whether this layout's kernel rounds x to bf16 and takes a prefill's rows (up to
    /// [`MAX_TILE_ROWS`]): AMX tiles, and packed copies read by `vdpbf16ps` ([`dpbf16`]).
    fn rounds_x(self) -> bool {
        self == Self::Tiles || (self == Self::Packed && dpbf16())
    }

    /// The layout [`DecodeMirrors::new`] makes on this CPU.
    fn best() -> Self {
        if amx() {
            Self::Tiles
        } else if avx512() {
            Self::Packed
        } else {
            Self::Rows
        }
    }
}

/// One bf16 copy of an (n, k) weight matrix.
struct Mirror {
    /// The fp32 matrix's shape.
    n: i64,
    k: i64,
    layout: Layout,
    t: Tensor,
}

impl Mirror {
    fn of(w: &Tensor, layout: Layout) -> Self {
        let (n, k) = (w.size()[0], w.size()[1]);
        let t = match layout {
            Layout::Rows => w.detach().to_kind(Kind::BFloat16).contiguous(),
            Layout::Packed | Layout::Tiles => pack(w),
        };
        Self { n, k, layout, t }
    }

    fn shallow_clone(&self) -> Self {
        Self {
            t: self.t.shallow_clone(),
            ..*self
        }
    }
}

/// Lines (pairs of k values) per 16-column group of a packed copy: whole AMX tiles of 16.
fn lines(k: usize) -> usize {
    k.div_ceil(2).div_ceil(16) * 16
}

/// `w` (n, k), a contiguous f32 CPU matrix, as a packed bf16 copy (see [`Layout::Packed`]),
/// rounded to nearest even as libtorch rounds. Written here in one pass over W, split over the
/// threads by column group: libtorch's cast and permuted copy took ~3× as long.
fn pack(w: &Tensor) -> Tensor {
    let (n, k) = (w.size()[0] as usize, w.size()[1] as usize);
    let (groups, pairs, lines) = (n.div_ceil(16), k.div_ceil(2), lines(k));
    let out = Tensor::empty(
        [groups as i64, lines as i64, 16, 2],
        (Kind::BFloat16, Device::Cpu),
    );
    // Addresses as integers, so the closure is Sync; both tensors outlive `parallel`.
    let (src, dst) = (w.data_ptr() as usize, out.data_ptr() as usize);
    parallel(groups, &|lo, hi| {
        // One group's 16 rows in bf16, a row of `pairs` u32 each (even k in the low half).
        let mut rows = vec![0u32; 16 * pairs];
        for g in lo..hi {
            for (i, row) in rows.chunks_exact_mut(pairs).enumerate() {
                let r = g * 16 + i;
                if r >= n {
                    row.fill(0);
                    continue;
                }
                // SAFETY: row r < n of a contiguous n × k f32 buffer.
                let x = unsafe { std::slice::from_raw_parts((src as *const f32).add(r * k), k) };
                // The row's u32s as 2·pairs u16 (little-endian: even k in the low half).
                // SAFETY: u32 storage is aligned for u16 and twice as many of them fit; packed
                // copies are made only on CPUs with AVX-512 (`Layout::best`).
                let halves = unsafe {
                    std::slice::from_raw_parts_mut(row.as_mut_ptr() as *mut u16, 2 * pairs)
                };
                unsafe { round_into(x, halves) };
                if k % 2 == 1 {
                    halves[k] = 0;
                }
            }
            // SAFETY: group g's `lines` × 16 lanes of the output, written by this task only.
            let out = unsafe {
                std::slice::from_raw_parts_mut((dst as *mut u32).add(g * lines * 16), lines * 16)
            };
            let (data, pad) = out.split_at_mut(pairs * 16);
            for (p, line) in data.chunks_exact_mut(16).enumerate() {
                for (i, lane) in line.iter_mut().enumerate() {
                    *lane = rows[i * pairs + p];
                }
            }
            pad.fill(0);
        }
    });
    out
}

/// `v` in bf16, rounded to nearest even (ties to even) as libtorch rounds; NaN becomes 0x7FC0.
#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() { 0x7FC0 } else { rounded }
}

/// bf16 copies of weight matrices that [`linear`] reads instead of the fp32 ones, on this thread,
/// until dropped: `--precision bf16` decoding, which streams every weight once per new token,
/// reads half the bytes. The weights must not change while the copies live (generation runs
/// under `no_grad` and takes no optimizer step); a copy is found by the fp32 tensor's address
/// and shape, so any other tensor goes the fp32 way. Nested sets share copies they both name.
pub struct DecodeMirrors {
    keys: Vec<usize>,
}

impl DecodeMirrors {
    /// Copies every contiguous 2-D fp32 CPU tensor of `weights` to bf16 (round to nearest even),
    /// when the kernels are enabled; otherwise holds nothing. The copies are laid out for AMX
    /// where [`amx`] holds, for the AVX-512 kernel where [`avx512`] does, for the AVX2 one
    /// elsewhere.
    pub fn new(weights: impl IntoIterator<Item = Tensor>) -> Self {
        Self::laid_out(weights, Layout::best())
    }

    /// Copies laid out as `layout`, which the CPU must be able to read (see [`Layout::best`]).
    fn laid_out(weights: impl IntoIterator<Item = Tensor>, layout: Layout) -> Self {
        let mut keys = Vec::new();
        if !enabled() {
            return Self { keys };
        }
        let _g = tch::no_grad_guard();
        MIRRORS.with(|m| {
            let mut m = m.borrow_mut();
            for w in weights {
                if w.device() != Device::Cpu
                    || w.kind() != Kind::Float
                    || w.dim() != 2
                    || !w.is_contiguous()
                {
                    continue;
                }
                let key = w.data_ptr() as usize;
                if let std::collections::hash_map::Entry::Vacant(e) = m.entry(key) {
                    e.insert(Mirror::of(&w, layout));
                    keys.push(key);
                    if layout.rounds_x() {
                        TILES.with(|t| t.set(t.get() + 1));
                    }
                }
            }
        });
        Self { keys }
    }

    /// How many weight matrices this set copied.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Drop for DecodeMirrors {
    fn drop(&mut self) {
        MIRRORS.with(|m| {
            let mut m = m.borrow_mut();
            for k in &self.keys {
                if m.remove(k).is_some_and(|c| c.layout.rounds_x()) {
                    TILES.with(|t| t.set(t.get() - 1));
                }
            }
        });
    }
}

/// `x` (m × k, contiguous f32) in bf16 for the AMX and `vdpbf16ps` kernels, rounded as libtorch
/// rounds: rows of 2·`lines` values (zeros past k), and past 16 rows, zero rows up to a multiple
/// of 32. Written here, split over the threads by rows when large: libtorch's cast and pad cost
/// ~25 ms per SmolLM2 prefill of 16 × 16 tokens (six ops a layer, each's fixed cost far above
/// its work).
fn x_bf16(x: &Tensor, lines: usize) -> Tensor {
    let (m, k) = (x.size()[0] as usize, x.size()[1] as usize);
    let rows = if m <= 16 { m } else { m.div_ceil(32) * 32 };
    let t = Tensor::empty(
        [rows as i64, 2 * lines as i64],
        (Kind::BFloat16, Device::Cpu),
    );
    // Addresses as integers, so the closure is Sync; both tensors outlive `parallel`.
    let (src, dst) = (x.data_ptr() as usize, t.data_ptr() as usize);
    let round = |lo: usize, hi: usize| {
        for r in lo..hi {
            // SAFETY: row r < rows of the new tensor's rows × 2·lines bf16 (2·lines >= k), and
            // below m of the contiguous m × k f32 buffer x; each row is written by one task
            // only; both kernels that read x16 imply AVX-512.
            unsafe {
                let row =
                    std::slice::from_raw_parts_mut((dst as *mut u16).add(r * 2 * lines), 2 * lines);
                if r < m {
                    let (vals, pad) = row.split_at_mut(k);
                    round_into(
                        std::slice::from_raw_parts((src as *const f32).add(r * k), k),
                        vals,
                    );
                    pad.fill(0);
                } else {
                    row.fill(0);
                }
            }
        }
    };
    if m * k < 1 << 18 {
        round(0, rows);
    } else {
        parallel(rows, &round);
    }
    t
}

/// `dst[i] = bf16_bits(src[i])`, compiled for AVX-512 so that the loop runs 16 values at a time.
///
/// # Safety
/// The CPU must have AVX512F and AVX512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_into(src: &[f32], dst: &mut [u16]) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d = bf16_bits(*v);
    }
}

/// # Safety
/// Never callable: the kernel is enabled only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn round_into(_src: &[f32], _dst: &mut [u16]) {
    unreachable!("the kernel is enabled only on x86-64")
}

/// Whether a [`DecodeMirrors`] on this thread holds copies for a kernel that rounds x to bf16
/// and takes products of up to [`MAX_TILE_ROWS`] rows (a prompt's prefill) from them: AMX, or
/// `vdpbf16ps` ([`dpbf16`]).
pub fn tiles_held() -> bool {
    TILES.with(|t| t.get() > 0)
}

/// Whether a [`DecodeMirrors`] on this thread holds such a copy (see [`tiles_held`]) of `w`
/// itself: a model whose weights these are may run passes of up to [`MAX_TILE_ROWS`] rows on
/// that kernel.
pub fn tiles_for(w: &Tensor) -> bool {
    tiles_held() && mirror_of(w).is_some_and(|c| c.layout.rounds_x())
}

/// The bf16 copy of `w` a [`DecodeMirrors`] holds on this thread, if any.
fn mirror_of(w: &Tensor) -> Option<Mirror> {
    MIRRORS.with(|m| {
        m.borrow()
            .get(&(w.data_ptr() as usize))
            .filter(|c| w.size() == [c.n, c.k])
            .map(Mirror::shallow_clone)
    })
}

/// `x (..., K) · wᵀ (N, K) + bias (N)` → `(..., N)`, or `None` when the kernel does not apply.
/// With a [`DecodeMirrors`] copy of `w` on this thread, the weights are read from it in bf16,
/// widened to f32 in registers (exactly); products and sums stay f32. On a CPU with AVX-512
/// ([`avx512`]) the copy is packed so that the accumulators' lanes are output columns; on one
/// with AMX ([`amx`]) the packed copy is read by tile instructions, with x rounded to bf16.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    if !enabled()
        || x.device() != Device::Cpu
        || !matches!(x.kind(), Kind::Float | Kind::BFloat16)
        || w.kind() != Kind::Float
        || w.dim() != 2
        || !w.is_contiguous()
    {
        return None;
    }
    let (n, k) = (w.size()[0], w.size()[1]);
    let mut shape = x.size();
    if k == 0 || shape.last() != Some(&k) {
        return None;
    }
    let m = x.numel() as i64 / k;
    let mirror = mirror_of(w);
    let layout = mirror.as_ref().map(|c| c.layout);
    // A bf16 x (e.g. attention's output under autocast) meets only kernels that round x to
    // bf16 anyway (AMX, vdpbf16ps): widened to f32 here exactly, it is rounded back unchanged.
    let rounds_x = layout.is_some_and(Layout::rounds_x);
    if x.kind() == Kind::BFloat16 && !rounds_x {
        return None;
    }
    // vdpbf16ps takes a prefill as AMX does: each 16-column group of W stays in the caches
    // while every 16 rows of x meet it, and no weight is cast (libtorch's product on casts ran
    // a SmolLM2 16 × 16-token prefill in 645 ms on Zen 4, 220 of them casting).
    let most = if rounds_x { MAX_TILE_ROWS } else { MAX_ROWS };
    if m == 0 || m > most {
        return None;
    }
    if records_graph(&[x, w]) || bias.is_some_and(|b| records_graph(&[b])) {
        return None;
    }
    let bias = match bias {
        None => None,
        Some(b) if b.kind() == Kind::Float && b.numel() as i64 == n => Some(b.contiguous()),
        Some(_) => return None,
    };
    // Widened only when bf16: an f32 x skips the dispatch of a no-op cast (a decoding step makes
    // ~200 of these products).
    let x = if x.kind() == Kind::BFloat16 {
        x.to_kind(Kind::Float).contiguous()
    } else {
        x.contiguous()
    };
    let y = Tensor::empty([m, n], (Kind::Float, Device::Cpu));
    let lines = lines(k as usize);
    // For the tiles: x in bf16, each row padded with zeros to the copy's 2·lines k values, and
    // past 16 rows the rows padded to whole pairs of tiles (32).
    // The same for vdpbf16ps, which reads a pair of x's k values per 32-bit broadcast.
    let x16 = rounds_x.then(|| x_bf16(&x.view([m, k]), lines));
    let job = Job {
        x: x.data_ptr() as *const f32,
        x16: x16.as_ref().map(|t| t.data_ptr() as *const u16),
        w: w.data_ptr() as *const f32,
        w16: mirror.as_ref().map(|c| c.t.data_ptr() as *const u16),
        b: bias.as_ref().map(|b| b.data_ptr() as *const f32),
        y: y.data_ptr() as *mut f32,
        m: m as usize,
        n: n as usize,
        k: k as usize,
        lines,
    };
    let run = |lo: usize, hi: usize| {
        // SAFETY: the pointers cover m×k, n×k (f32, and bf16 when present: rows, or packed),
        // n and m×n values held alive above (and x16, m × 2·lines, for tiles); callers pass
        // disjoint column ranges; a packed copy exists only when the CPU has AVX-512, a tiled
        // one only when it has AMX and the permission (`Layout::best`; the tests ask for no
        // more than it allows).
        unsafe {
            match layout {
                Some(Layout::Tiles) => job.tiles(lo, hi),
                Some(Layout::Packed) => job.groups(lo, hi),
                Some(Layout::Rows) => job.columns::<true>(lo, hi),
                None => job.columns::<false>(lo, hi),
            }
        }
    };
    // Tasks: whole register blocks of columns (packed: 16-column groups), each task writing
    // its own columns.
    let tasks = match layout {
        Some(Layout::Packed | Layout::Tiles) => job.n.div_ceil(16),
        _ => job.n.div_ceil(NB),
    };
    if m * n * k < PARALLEL_WORK {
        run(0, tasks);
    } else {
        parallel(tasks, &|lo, hi| run(lo, hi));
    }
    *shape.last_mut().expect("x has a last dim") = n;
    Some(y.view(shape.as_slice()))
}

/// `x · wᵢᵀ + bᵢ` for several weights that read the same x (a layer's q, k and v projections, or
/// its gate and up projections), all from copies whose kernel rounds x to bf16 (AMX, or
/// `vdpbf16ps`): one rounding of x to bf16 and one pass over the threads for all of them, each
/// product as [`linear`] computes it (the same result to the bit). `None` unless every weight
/// has such a copy on this thread and [`linear`]'s conditions hold for each.
///
/// Why: at 16 rows a product's fixed cost (waking the threads, rounding x, loading the tile
/// configuration) is several µs, seven times per layer per token.
pub fn linear_many(x: &Tensor, ws: &[(&Tensor, Option<&Tensor>)]) -> Option<Vec<Tensor>> {
    if !enabled() || !float_cpu(x) || ws.is_empty() {
        return None;
    }
    let k = *x.size().last()?;
    let m = x.numel() as i64 / k.max(1);
    if k == 0 || m == 0 || m > MAX_TILE_ROWS || records_graph(&[x]) {
        return None;
    }
    let mut parts = Vec::with_capacity(ws.len());
    for (w, b) in ws {
        let mirror = mirror_of(w).filter(|c| c.layout.rounds_x() && c.k == k)?;
        if !float_cpu(w) || records_graph(&[w]) || b.is_some_and(|b| records_graph(&[b])) {
            return None;
        }
        let bias = match b {
            None => None,
            Some(b) if float_cpu(b) && b.numel() as i64 == mirror.n => Some(b.contiguous()),
            Some(_) => return None,
        };
        let y = Tensor::empty([m, mirror.n], (Kind::Float, Device::Cpu));
        parts.push((mirror, bias, y));
    }
    let x = x.contiguous();
    let lines = lines(k as usize);
    let x16 = x_bf16(&x.view([m, k]), lines);
    let jobs: Vec<Job> = parts
        .iter()
        .map(|(mirror, bias, y)| Job {
            x: x.data_ptr() as *const f32,
            x16: Some(x16.data_ptr() as *const u16),
            w: std::ptr::null(),
            w16: Some(mirror.t.data_ptr() as *const u16),
            b: bias.as_ref().map(|b| b.data_ptr() as *const f32),
            y: y.data_ptr() as *mut f32,
            m: m as usize,
            n: mirror.n as usize,
            k: k as usize,
            lines,
        })
        .collect();
    // One task list: every product's 16-column groups in turn. One layout for all: copies are
    // laid out for the CPU's best kernel.
    let tiled = parts.iter().all(|(c, _, _)| c.layout == Layout::Tiles);
    if !tiled && parts.iter().any(|(c, _, _)| c.layout == Layout::Tiles) {
        return None;
    }
    let tasks: Vec<usize> = jobs.iter().map(|j| j.n.div_ceil(16)).collect();
    let run = |lo: usize, hi: usize| {
        let mut start = 0;
        for (job, &n) in jobs.iter().zip(&tasks) {
            let (a, b) = (lo.max(start), hi.min(start + n));
            if a < b {
                // SAFETY: as in `linear` for a tiled or a packed copy read by vdpbf16ps (every
                // weight here has one, x16 included); each product's group range a..b is this
                // task's own.
                unsafe {
                    if tiled {
                        job.tiles(a - start, b - start)
                    } else {
                        job.groups(a - start, b - start)
                    }
                };
            }
            start += n;
        }
    };
    let total: usize = tasks.iter().sum();
    let work: usize = jobs.iter().map(|j| j.m * j.n * j.k).sum();
    if (work as i64) < PARALLEL_WORK {
        run(0, total);
    } else {
        parallel(total, &|lo, hi| run(lo, hi));
    }
    let mut shape = x.size();
    Some(
        parts
            .into_iter()
            .map(|(mirror, _, y)| {
                *shape.last_mut().expect("x has a last dim") = mirror.n;
                y.view(shape.as_slice())
            })
            .collect(),
    )
}

/// The rotary embedding in transformers' "rotate_half" convention: `x · cos + rotate_half(x) ·
/// sin` for x (B, n, T, hs) and tables (B, 1, T, hs), or `None` when it does not apply (the
/// conditions of [`linear`], at most [`MAX_ROWS`] rows B·T, hs even). The products and the sum
/// round as libtorch's separate ops do, so the result is the same to the bit (unlike
/// [`rms_norm`], whose sum of squares rounds in another order, so that only bf16 decoding on AMX
/// uses it and seeded fp32 results stay as reported).
///
/// Why: libtorch's version is 7 ops (16 µs for SmolLM2's queries at 16 rows), twice per layer
/// per token.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Tensor> {
    if !enabled() || !float_cpu(x) || !float_cpu(cos) || !float_cpu(sin) {
        return None;
    }
    let (b, n, t, hs) = x.size4().ok()?;
    if cos.size() != [b, 1, t, hs] || sin.size() != cos.size() || hs % 2 != 0 || hs == 0 {
        return None;
    }
    if b * t == 0 || b * t > MAX_ROWS || records_graph(&[x, cos, sin]) {
        return None;
    }
    let (x, cos, sin) = (x.contiguous(), cos.contiguous(), sin.contiguous());
    let y = Tensor::empty([b, n, t, hs], (Kind::Float, Device::Cpu));
    let (b, n, t, hs) = (b as usize, n as usize, t as usize, hs as usize);
    let half = hs / 2;
    // SAFETY: contiguous f32 buffers of b·n·t·hs (x, y) and b·t·hs (tables) values, alive here.
    let (xs, cs, ss, ys) = unsafe {
        (
            std::slice::from_raw_parts(x.data_ptr() as *const f32, b * n * t * hs),
            std::slice::from_raw_parts(cos.data_ptr() as *const f32, b * t * hs),
            std::slice::from_raw_parts(sin.data_ptr() as *const f32, b * t * hs),
            std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, b * n * t * hs),
        )
    };
    for (i, (xr, yr)) in xs.chunks_exact(hs).zip(ys.chunks_exact_mut(hs)).enumerate() {
        // Row i is (batch i / (n·t), head, position i % t); the tables are per (batch, position).
        let tab = (i / (n * t) * t + i % t) * hs;
        let (c, s) = (&cs[tab..tab + hs], &ss[tab..tab + hs]);
        let (x1, x2) = xr.split_at(half);
        let (y1, y2) = yr.split_at_mut(half);
        for j in 0..half {
            y1[j] = x1[j] * c[j] + -x2[j] * s[j];
            y2[j] = x2[j] * c[half + j] + x1[j] * s[half + j];
        }
    }
    Some(y)
}

/// RMSNorm `x / √(mean(x²) + eps) · w` over the last dim, in one pass per row, while this thread
/// holds copies whose kernel rounds x to bf16 ([`tiles_held`]: bf16 decoding on AMX or vdpbf16ps),
/// or `None` (then libtorch's `rms_norm`). The sum of squares runs in 16 f32 lanes, so it rounds
/// in another order than libtorch's: outside bf16 decoding the seeded fp32 results stay
/// libtorch's to the bit.
///
/// Why: libtorch's version costs ~16–20 µs for 16 rows of 576, twice per layer per token.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Option<Tensor> {
    if !tiles_held() || !float_cpu(x) || !float_cpu(w) || x.dim() == 0 {
        return None;
    }
    let c = *x.size().last()?;
    if c == 0 || w.size() != [c] || records_graph(&[x, w]) {
        return None;
    }
    let rows = x.numel() as i64 / c;
    if rows > MAX_TILE_ROWS {
        return None;
    }
    let (x, w) = (x.contiguous(), w.contiguous());
    let y = Tensor::empty(x.size(), (Kind::Float, Device::Cpu));
    let (n, c) = (x.numel(), c as usize);
    // SAFETY: contiguous f32 buffers of n (x, y) and c (w) values, alive here; tiles imply
    // AVX-512.
    unsafe {
        rms_rows(
            std::slice::from_raw_parts(x.data_ptr() as *const f32, n),
            std::slice::from_raw_parts(w.data_ptr() as *const f32, c),
            std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, n),
            eps as f32,
        )
    };
    Some(y)
}

/// [`rms_norm`] over rows of `w.len()` values.
///
/// # Safety
/// The CPU must have AVX512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rms_rows(x: &[f32], w: &[f32], y: &mut [f32], eps: f32) {
    let c = w.len();
    for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        // Sixteen partial sums, then one: a loop the compiler keeps in a zmm register.
        let mut lanes = [0f32; 16];
        let mut chunks = xr.chunks_exact(16);
        for ch in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(ch) {
                *l += v * v;
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        sum += chunks.remainder().iter().map(|v| v * v).sum::<f32>();
        let r = 1.0 / (sum / c as f32 + eps).sqrt();
        for ((o, v), g) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * r * g;
        }
    }
}

/// # Safety
/// Never callable: AMX copies exist only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn rms_rows(_x: &[f32], _w: &[f32], _y: &mut [f32], _eps: f32) {
    unreachable!("AMX copies exist only on x86-64")
}

/// Attention of one new token per row against the KV cache: q (B, nh, 1, hs), k and v
/// (B, nkv, L, hs) with unit stride in the last dim (views of the cache), `allowed` an optional
/// (B, 1, 1, L) bool mask. Query head h reads kv head h / (nh / nkv) (grouped-query attention),
/// scale 1/√hs, as `scaled_dot_product_attention`. Returns (B, nh, 1, hs), or `None` when it
/// does not apply (the same conditions as [`linear`], plus hs a multiple of 8).
///
/// Why: libtorch's SDPA spent ~0.2 ms per layer on this tiny product (SmolLM2, batch 16: 9 heads
/// over ~50 keys), a tenth of a decoding step over 30 layers. Here each (row, kv head) pair is
/// one task: the scores of its query heads, a softmax and the weighted sum of values.
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, allowed: Option<&Tensor>) -> Option<Tensor> {
    if !enabled() || !float_cpu(q) || !float_cpu(k) || !float_cpu(v) {
        return None;
    }
    let (b, nh, t, hs) = q.size4().ok()?;
    let (kb, nkv, l, khs) = k.size4().ok()?;
    if t != 1
        || kb != b
        || khs != hs
        || v.size() != k.size()
        || l == 0
        || nkv == 0
        || nh % nkv != 0
        || hs % 8 != 0
        || k.stride()[3] != 1
        || v.stride()[3] != 1
    {
        return None;
    }
    if records_graph(&[q, k, v]) {
        return None;
    }
    let allowed = match allowed {
        None => None,
        Some(m) if m.kind() == Kind::Bool && m.size() == [b, 1, 1, l] => Some(m.contiguous()),
        Some(_) => return None,
    };
    let q = q.contiguous();
    let y = Tensor::empty([b, nh, 1, hs], (Kind::Float, Device::Cpu));
    let (ks, vs) = (k.stride(), v.stride());
    let rep = (nh / nkv) as usize;
    let (nh, nkv, l, hs) = (nh as usize, nkv as usize, l as usize, hs as usize);
    // Addresses as integers, so the closure is Sync; the tensors live until `parallel` returns.
    let (qp, kp, vp, yp) = (
        q.data_ptr() as usize,
        k.data_ptr() as usize,
        v.data_ptr() as usize,
        y.data_ptr() as usize,
    );
    let mp = allowed.as_ref().map(|m| m.data_ptr() as usize);
    let scale = 1.0 / (hs as f32).sqrt();
    parallel(b as usize * nkv, &|lo, hi| {
        let mut scores = vec![0f32; l];
        for task in lo..hi {
            let (row, g) = (task / nkv, task % nkv);
            // SAFETY: offsets stay inside the views' sizes and strides checked above; each task
            // writes only the outputs of its own query heads.
            unsafe {
                let kb = (kp as *const f32)
                    .offset(row as isize * ks[0] as isize + g as isize * ks[1] as isize);
                let vb = (vp as *const f32)
                    .offset(row as isize * vs[0] as isize + g as isize * vs[1] as isize);
                let mask = mp.map(|p| (p as *const bool).add(row * l));
                for j in 0..rep {
                    let h = g * rep + j;
                    let qh = (qp as *const f32).add((row * nh + h) * hs);
                    let yh = (yp as *mut f32).add((row * nh + h) * hs);
                    attend_head(
                        qh,
                        kb,
                        ks[2] as isize,
                        vb,
                        vs[2] as isize,
                        mask,
                        hs,
                        scale,
                        &mut scores,
                        yh,
                    );
                }
            }
        }
    });
    Some(y)
}

/// One query head: softmax(scale · q·kᵢ over the allowed i < scores.len()) · v into `y`.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the caller checked `is_x86_feature_detected!`). `q` must
/// point to `hs` readable floats; for every i < `scores.len()`, `k + i·k_step` and
/// `v + i·v_step` to `hs` readable floats each, and `mask` (if any) to `scores.len()` readable
/// bools; `y` to `hs` writable floats that nothing else reads or writes during the call. `hs`
/// must be a multiple of 8 (`dot`, `axpy`).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn attend_head(
    q: *const f32,
    k: *const f32,
    k_step: isize,
    v: *const f32,
    v_step: isize,
    mask: Option<*const bool>,
    hs: usize,
    scale: f32,
    scores: &mut [f32],
    y: *mut f32,
) {
    let mut max = f32::NEG_INFINITY;
    for (i, s) in scores.iter_mut().enumerate() {
        let ok = mask.is_none_or(|m| unsafe { *m.add(i) });
        *s = if ok {
            scale * unsafe { dot(q, k.offset(i as isize * k_step), hs) }
        } else {
            f32::NEG_INFINITY
        };
        max = max.max(*s);
    }
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    let y = unsafe { std::slice::from_raw_parts_mut(y, hs) };
    y.fill(0.0);
    for (i, s) in scores.iter().enumerate() {
        if *s != 0.0 {
            unsafe { axpy(*s / total, v.offset(i as isize * v_step), y) };
        }
    }
}

/// Σ a[i]·b[i] over n (a multiple of 8) floats.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` must each point to `n` readable floats, and
/// `n` must be a multiple of 8 (the tail is not handled).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    use std::arch::x86_64::*;
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        s0 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(a.add(i)) },
            unsafe { _mm256_loadu_ps(b.add(i)) },
            s0,
        );
        s1 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(a.add(i + 8)) },
            unsafe { _mm256_loadu_ps(b.add(i + 8)) },
            s1,
        );
        i += 16;
    }
    if i < n {
        s0 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(a.add(i)) },
            unsafe { _mm256_loadu_ps(b.add(i)) },
            s0,
        );
    }
    hsum(_mm256_add_ps(s0, s1))
}

/// The sum of the 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

/// y += a · x over y.len() (a multiple of 8) floats.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` must point to `y.len()` readable floats that do not
/// overlap `y`, and `y.len()` must be a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy(a: f32, x: *const f32, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let av = _mm256_set1_ps(a);
    for (i, chunk) in y.chunks_exact_mut(8).enumerate() {
        let p = chunk.as_mut_ptr();
        unsafe {
            let acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(x.add(i * 8)), _mm256_loadu_ps(p));
            _mm256_storeu_ps(p, acc);
        }
    }
}

/// # Safety
/// Never callable: the kernels are enabled only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot(_a: *const f32, _b: *const f32, _n: usize) -> f32 {
    unreachable!("the kernels are enabled only on x86-64")
}

/// # Safety
/// Never callable: the kernels are enabled only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn axpy(_a: f32, _x: *const f32, _y: &mut [f32]) {
    unreachable!("the kernels are enabled only on x86-64")
}

/// The OpenMP runtime libtorch runs on, found at run time: GNU's `GOMP_parallel` (which LLVM's
/// and Intel's runtimes export too) and the two thread queries.
struct OpenMp {
    parallel: unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
}

fn openmp() -> Option<&'static OpenMp> {
    static OMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OMP.get_or_init(|| {
        let find = |name: &CStr| {
            // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded libraries.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        let (p, t, n) = (
            find(c"GOMP_parallel")?,
            find(c"omp_get_thread_num")?,
            find(c"omp_get_num_threads")?,
        );
        // SAFETY: these are the OpenMP ABI's signatures for the three names.
        unsafe {
            Some(OpenMp {
                parallel: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
                >(p),
                thread_num: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(t),
                num_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(n),
            })
        }
    })
    .as_ref()
}

/// Runs `work(lo, hi)` over `0..tasks` split into one contiguous range per thread, on
/// libtorch's own OpenMP threads: they are awake (spinning) right after the previous op, and no
/// second pool competes with them for the cores. Rayon is the fallback when the OpenMP runtime
/// is not found.
fn parallel(tasks: usize, work: &(dyn Fn(usize, usize) + Sync)) {
    let threads = (tch::get_num_threads().max(1) as usize).min(tasks);
    if threads <= 1 {
        work(0, tasks);
        return;
    }
    struct Region<'a> {
        work: &'a (dyn Fn(usize, usize) + Sync),
        tasks: usize,
    }
    fn share(region: &Region<'_>, t: usize, threads: usize) {
        let per = region.tasks.div_ceil(threads);
        let (lo, hi) = (
            (t * per).min(region.tasks),
            ((t + 1) * per).min(region.tasks),
        );
        if lo < hi {
            (region.work)(lo, hi);
        }
    }
    extern "C" fn body(data: *mut c_void) {
        let omp = openmp().expect("called only when OpenMP was found");
        // SAFETY: `data` is the `Region` that `parallel` holds until GOMP_parallel returns.
        unsafe {
            let region = &*(data as *const Region<'_>);
            let t = (omp.thread_num)().max(0) as usize;
            let n = (omp.num_threads)().max(1) as usize;
            share(region, t, n);
        }
    }
    let region = Region { work, tasks };
    if let Some(omp) = openmp() {
        let data = &region as *const Region<'_> as *mut c_void;
        // SAFETY: GOMP_parallel runs `body` on `threads` threads and returns when all are done.
        unsafe { (omp.parallel)(body, data, threads as c_uint, 0) };
    } else {
        rayon::scope(|s| {
            let region = &region;
            for t in 1..threads {
                s.spawn(move |_| share(region, t, threads));
            }
            share(region, 0, threads);
        });
    }
}

/// Raw views of one product; shared by the threads, which write disjoint columns of `y`.
struct Job {
    x: *const f32,
    /// x in bf16, m rows of 2·`lines` values (zeros past k), for the AMX kernel.
    x16: Option<*const u16>,
    w: *const f32,
    /// The same weights in bf16 (a [`DecodeMirrors`] copy: rows, or packed for the AVX-512
    /// path), read instead of `w` when present.
    w16: Option<*const u16>,
    b: Option<*const f32>,
    y: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    /// Lines per 16-column group of a packed copy ([`lines`]).
    lines: usize,
}

// SAFETY: the tensors outlive the scope's tasks and each thread writes its own columns.
unsafe impl Sync for Job {}

impl Job {
    /// Output columns `lo·NB..hi·NB` (up to n) of every row.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` (m × k), `w` (n × k), `b` (n) and `y` (m × n)
    /// must be live, contiguous f32 buffers of those sizes for the whole call; `lo <= hi <= n`;
    /// and no other thread may touch `y`'s columns `lo..hi` meanwhile (threads split the
    /// columns between them). With `H`, `w16` must be present and cover n × k bf16 values.
    unsafe fn columns<const H: bool>(&self, lo: usize, hi: usize) {
        let (lo, hi) = (lo * NB, (hi * NB).min(self.n));
        let mut j = lo;
        while j < hi {
            let nb = (hi - j).min(NB);
            // The first row block pulls the weight rows PREFETCH blocks ahead into cache: the
            // hardware prefetcher alone left decoding bound by memory latency.
            let ahead = (j + PREFETCH * NB).min(hi.saturating_sub(1));
            let mut r = 0;
            while r < self.m {
                let mb = (self.m - r).min(MB);
                let pf = (r == 0).then_some(ahead);
                unsafe { self.block_dispatch::<H>(mb, nb, r, j, pf, (hi - ahead).min(NB)) };
                r += MB;
            }
            j += NB;
        }
    }

    /// Column groups `lo..hi` (16 columns each, up to n) of every row, from the packed bf16
    /// copy.
    ///
    /// # Safety
    /// As [`Self::columns`], plus: `w16` is a packed copy ([`Mirror`]) of W and the CPU supports
    /// AVX512F.
    unsafe fn groups(&self, lo: usize, hi: usize) {
        macro_rules! go {
            ($mb:expr, $r:expr, $g:expr, $pf:expr; $($m:literal)*) => {
                match $mb {
                    $($m => unsafe { self.block_pk::<$m>($r, $g, $pf) },)*
                    _ => unreachable!("block of {} rows", $mb),
                }
            };
        }
        macro_rules! dp {
            ($mb:expr, $r:expr, $g:expr, $pf:expr; $($m:literal)*) => {
                match $mb {
                    $($m => unsafe { self.block_dp::<$m>($r, $g, $pf) },)*
                    _ => unreachable!("block of {} rows", $mb),
                }
            };
        }
        for g in lo..hi {
            let mut r = 0;
            while r < self.m {
                let mb = (self.m - r).min(MG);
                if self.x16.is_some() {
                    dp!(mb, r, g, r == 0; 16 15 14 13 12 11 10 9 8 7 6 5 4 3 2 1);
                } else {
                    go!(mb, r, g, r == 0; 16 15 14 13 12 11 10 9 8 7 6 5 4 3 2 1);
                }
                r += MG;
            }
        }
    }

    /// Column groups `lo..hi` (16 columns each, up to n) of every row, from the packed copy read
    /// as AMX tiles. Up to 16 rows (decoding), four groups at a time: four C tiles (rows ×
    /// 16 f32 sums), and for each 32 k values one A tile of x in bf16 and one B tile (16 lines)
    /// per group, which `tdpbf16ps` multiplies exactly and adds into the f32 sums. Full groups
    /// are stored straight into y; a group that n ends inside goes through a buffer.
    ///
    /// # Safety
    /// As [`Self::groups`], plus: `x16` is present (m × 2·lines bf16) and the CPU has AMX-TILE
    /// and AMX-BF16 with the tile permission granted to this process ([`amx`]). Tile registers
    /// are not Rust's: they are used only between this function's `ldtilecfg` and
    /// `tilerelease`, and nothing else in the process touches them on this thread meanwhile.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tiles(&self, lo: usize, hi: usize) {
        use std::arch::asm;
        if self.m > 16 {
            return unsafe { self.tiles_wide(lo, hi) };
        }
        let x16 = self.x16.expect("x in bf16");
        let w16 = self.w16.expect("packed weights");
        let (blocks, gstride) = (self.lines / 16, self.lines * 32);
        // Byte strides: a row of x16, a 64-byte line of weights.
        let (sx, sw) = (4 * self.lines, 64usize);
        let rows = self.m;
        let cfg = TileConfig::new(rows);
        // SAFETY (every asm block): the tiles as configured here, reading x16 and w16 and
        // writing y within the bounds the caller guarantees.
        unsafe { cfg.load() };
        let mut g = lo;
        while g < hi {
            let gs = (hi - g).min(4);
            unsafe { zero_sums() };
            let w = unsafe { w16.add(g * gstride) };
            for b in 0..blocks {
                let a = unsafe { x16.add(b * 32) };
                let wb = unsafe { w.add(b * 16 * 32) };
                if gs == 4 {
                    unsafe {
                        asm!(
                            "tileloadd tmm4, [{a} + {sx}*1]",
                            "tileloadd tmm5, [{w0} + {sw}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm5",
                            "tileloadd tmm6, [{w1} + {sw}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm6",
                            "tileloadd tmm7, [{w2} + {sw}*1]",
                            "tdpbf16ps tmm2, tmm4, tmm7",
                            "tileloadd tmm5, [{w3} + {sw}*1]",
                            "tdpbf16ps tmm3, tmm4, tmm5",
                            a = in(reg) a,
                            sx = in(reg) sx,
                            w0 = in(reg) wb,
                            w1 = in(reg) wb.add(gstride),
                            w2 = in(reg) wb.add(2 * gstride),
                            w3 = in(reg) wb.add(3 * gstride),
                            sw = in(reg) sw,
                            options(nostack, readonly)
                        )
                    };
                } else {
                    unsafe {
                        asm!("tileloadd tmm4, [{a} + {sx}*1]", a = in(reg) a, sx = in(reg) sx,
                            options(nostack, readonly))
                    };
                    for j in 0..gs {
                        unsafe { tile_dp(j, wb.add(j * gstride), sw) };
                    }
                }
            }
            for j in 0..gs {
                unsafe { self.put(j, rows, 0, g + j) };
            }
            g += gs;
        }
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// [`Self::tiles`] past 16 rows (a prefill): two groups by two blocks of 16 rows at a time
    /// (four C tiles, two A tiles of x, two B tiles of W), so each tile loaded feeds two
    /// products. Groups are the outer loop: a pair's weights stream in from memory once and are
    /// read again from the cache for every 32 rows.
    ///
    /// # Safety
    /// As [`Self::tiles`], with x16 holding m rows padded to a multiple of 32.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tiles_wide(&self, lo: usize, hi: usize) {
        use std::arch::asm;
        let x16 = self.x16.expect("x in bf16");
        let w16 = self.w16.expect("packed weights");
        let (kx, blocks, gstride) = (2 * self.lines, self.lines / 16, self.lines * 32);
        let (sx, sw) = (kx * 2, 64usize);
        let cfg = TileConfig::new(16);
        // SAFETY (every asm block): as in `tiles`.
        unsafe { cfg.load() };
        let mut g = lo;
        while g < hi {
            let two = hi - g >= 2;
            let w0 = unsafe { w16.add(g * gstride) };
            // A lone last group is multiplied twice; the second result is not stored.
            let w1 = if two { unsafe { w0.add(gstride) } } else { w0 };
            let mut r0 = 0;
            while r0 < self.m {
                unsafe { zero_sums() };
                for b in 0..blocks {
                    let a0 = unsafe { x16.add(r0 * kx + b * 32) };
                    unsafe {
                        asm!(
                            "tileloadd tmm4, [{a0} + {sx}*1]",
                            "tileloadd tmm5, [{a1} + {sx}*1]",
                            "tileloadd tmm6, [{b0} + {sw}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tileloadd tmm7, [{b1} + {sw}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0,
                            a1 = in(reg) a0.add(16 * kx),
                            sx = in(reg) sx,
                            b0 = in(reg) w0.add(b * 16 * 32),
                            b1 = in(reg) w1.add(b * 16 * 32),
                            sw = in(reg) sw,
                            options(nostack, readonly)
                        )
                    };
                }
                for (c, dr, dg) in [(0, 0, 0), (1, 0, 1), (2, 16, 0), (3, 16, 1)] {
                    if (dg == 0 || two) && r0 + dr < self.m {
                        unsafe { self.put(c, 16, r0 + dr, g + dg) };
                    }
                }
                r0 += 32;
            }
            g += if two { 2 } else { 1 };
        }
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// Stores C tile `c` (configured with `tile_rows` rows) as y's rows `r0..` (up to m) at
    /// group `g`'s columns (up to n), plus the bias: straight into y when the tile fits it
    /// whole, through a buffer otherwise.
    ///
    /// # Safety
    /// Inside a tile configuration of [`Self::tiles`], with `r0 < m` and `g < ⌈n/16⌉` in this
    /// thread's columns.
    #[cfg(target_arch = "x86_64")]
    unsafe fn put(&self, c: usize, tile_rows: usize, r0: usize, g: usize) {
        let n = self.n;
        let (col, rows) = (g * 16, (self.m - r0).min(tile_rows));
        let valid = (n - col).min(16);
        let out = unsafe { self.y.add(r0 * n + col) };
        if valid == 16 && rows == tile_rows {
            unsafe { tile_store(c, out, n * 4) };
        } else {
            let mut buf = TileBuf([0.0; 256]);
            unsafe { tile_store(c, buf.0.as_mut_ptr(), 64) };
            for row in 0..rows {
                let src = &buf.0[row * 16..row * 16 + valid];
                let dst = unsafe { std::slice::from_raw_parts_mut(out.add(row * n), valid) };
                dst.copy_from_slice(src);
            }
        }
        if let Some(bias) = self.b {
            let bias = unsafe { std::slice::from_raw_parts(bias.add(col), valid) };
            for row in 0..rows {
                let dst = unsafe { std::slice::from_raw_parts_mut(out.add(row * n), valid) };
                for (d, b) in dst.iter_mut().zip(bias) {
                    *d += b;
                }
            }
        }
    }

    /// # Safety
    /// Never callable: the kernel is enabled only on x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn tiles(&self, _lo: usize, _hi: usize) {
        unreachable!("the kernel is enabled only on x86-64")
    }

    /// `y[r..r+R]` at the 16 columns of group `g`: for each pair of k values, the group's 64-byte
    /// line becomes two vectors of exact f32 weights (a shift and a mask), each multiplied by
    /// the row's x value at that k (broadcast) into one accumulator per row whose lanes are the
    /// output columns, so no horizontal sum is needed. The first row block (`pf`) prefetches the
    /// group's stream ahead.
    ///
    /// # Safety
    /// As [`Self::groups`], with `r + R <= m` and `g < ⌈n/16⌉`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_pk<const R: usize>(&self, r: usize, g: usize, pf: bool) {
        use std::arch::x86_64::*;
        let k = self.k;
        let (pairs, full) = (k.div_ceil(2), k / 2);
        // One group: `lines` lines of 32 bf16, the first `pairs` of them read here.
        let w = unsafe { self.w16.expect("packed weights").add(g * self.lines * 32) };
        let x = unsafe { self.x.add(r * k) };
        let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
        let widen = |line: __m512i| {
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(line)),
                _mm512_castsi512_ps(_mm512_and_si512(line, high)),
            )
        };
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..full {
            if pf {
                // Past the end only at the last group's tail: a prefetch never faults.
                let ahead = w.wrapping_add((p + PREFETCH_LINES) * 32);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            }
            let (even, odd) = widen(unsafe { _mm512_loadu_si512(w.add(p * 32) as *const _) });
            for (row, a) in acc.iter_mut().enumerate() {
                let xe = _mm512_set1_ps(unsafe { *x.add(row * k + 2 * p) });
                let xo = _mm512_set1_ps(unsafe { *x.add(row * k + 2 * p + 1) });
                *a = _mm512_fmadd_ps(xo, odd, _mm512_fmadd_ps(xe, even, *a));
            }
        }
        if full < pairs {
            // Odd k: the last value has no partner (its half of the line is zero padding).
            let (even, _) = widen(unsafe { _mm512_loadu_si512(w.add(full * 32) as *const _) });
            for (row, a) in acc.iter_mut().enumerate() {
                let xe = _mm512_set1_ps(unsafe { *x.add(row * k + k - 1) });
                *a = _mm512_fmadd_ps(xe, even, *a);
            }
        }
        unsafe { self.store_group(r, g, &acc) };
    }

    /// # Safety
    /// Never callable: the kernel is enabled only on x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block_pk<const R: usize>(&self, _r: usize, _g: usize, _pf: bool) {
        unreachable!("the kernel is enabled only on x86-64")
    }

    /// Stores the sums of rows `r..r + acc.len()` at the 16 columns of group `g` (fewer where n
    /// ends inside it), plus the bias.
    ///
    /// # Safety
    /// As [`Self::block_pk`] with `R = acc.len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_group(&self, r: usize, g: usize, acc: &[std::arch::x86_64::__m512]) {
        use std::arch::x86_64::*;
        let col = g * 16;
        let valid = (self.n - col).min(16);
        let mask: __mmask16 = if valid == 16 { !0 } else { (1u16 << valid) - 1 };
        let bias = match self.b {
            Some(b) => unsafe { _mm512_maskz_loadu_ps(mask, b.add(col)) },
            None => _mm512_setzero_ps(),
        };
        for (row, a) in acc.iter().enumerate() {
            let out = unsafe { self.y.add((r + row) * self.n + col) };
            unsafe { _mm512_mask_storeu_ps(out, mask, _mm512_add_ps(*a, bias)) };
        }
    }

    /// As [`Self::block_pk`], with `vdpbf16ps`: each 64-byte line (a pair of k values for 16
    /// columns) meets the row's pair of x values in bf16, broadcast as one 32-bit lane, and one
    /// instruction adds both exact products into the row's f32 sums. The padded k values are
    /// zeros on both sides, so whole lines are read.
    ///
    /// # Safety
    /// As [`Self::block_pk`], plus: `x16` is present (rows of 2·lines bf16, see [`x_bf16`]) and
    /// the CPU supports AVX512-BF16 and AVX512BW ([`dpbf16`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn block_dp<const R: usize>(&self, r: usize, g: usize, pf: bool) {
        use std::arch::x86_64::*;
        let pairs = self.k.div_ceil(2);
        let w = unsafe { self.w16.expect("packed weights").add(g * self.lines * 32) };
        // Row r's pairs of x values as u32s (even k in the low half).
        let x = unsafe { (self.x16.expect("x in bf16") as *const u32).add(r * self.lines) };
        let mut acc = [_mm512_setzero_ps(); R];
        for p in 0..pairs {
            if pf {
                // Past the end only at the last group's tail: a prefetch never faults.
                let ahead = w.wrapping_add((p + PREFETCH_LINES) * 32);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            }
            let line: __m512bh =
                unsafe { std::mem::transmute(_mm512_loadu_si512(w.add(p * 32) as *const _)) };
            for (row, a) in acc.iter_mut().enumerate() {
                let xp = unsafe { *x.add(row * self.lines + p) } as i32;
                let xv: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(xp)) };
                *a = _mm512_dpbf16_ps(*a, xv, line);
            }
        }
        unsafe { self.store_group(r, g, &acc) };
    }

    /// # Safety
    /// Never callable: the kernel is enabled only on x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block_dp<const R: usize>(&self, _r: usize, _g: usize, _pf: bool) {
        unreachable!("the kernel is enabled only on x86-64")
    }

    /// Dispatches to the register block of `mb` rows × `nb` columns at (`r`, `j`).
    ///
    /// # Safety
    /// As [`Self::columns`], with `r + mb <= m`, `j + nb <= n`, `mb <= MB`, `nb <= NB`, and the
    /// prefetch row `pf` (if any) below `n`.
    unsafe fn block_dispatch<const H: bool>(
        &self,
        mb: usize,
        nb: usize,
        r: usize,
        j: usize,
        pf: Option<usize>,
        pf_rows: usize,
    ) {
        macro_rules! go {
            ($($m:literal, $n:literal);*) => {
                match (mb, nb) {
                    $(($m, $n) => unsafe { self.block::<$m, $n, H>(r, j, pf, pf_rows) },)*
                    _ => unreachable!("block of {mb} x {nb}"),
                }
            };
        }
        go!(4, 3; 4, 2; 4, 1; 3, 3; 3, 2; 3, 1; 2, 3; 2, 2; 2, 1; 1, 3; 1, 2; 1, 1)
    }

    /// `y[r..r+R][j..j+C]`: R rows of x against C rows of W, R·C accumulators in registers.
    /// With `H` the weights come from `w16` (bf16: shifted into the top half of an f32).
    ///
    /// # Safety
    /// As [`Self::block_dispatch`] with `mb = R` and `nb = C`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize, const C: usize, const H: bool>(
        &self,
        r: usize,
        j: usize,
        pf: Option<usize>,
        pf_rows: usize,
    ) {
        use std::arch::x86_64::*;
        let k = self.k;
        let x = unsafe { self.x.add(r * k) };
        let w = unsafe { self.w.add(j * k) };
        // The bf16 weights (null unless `H`, and then never read).
        let base16 = self.w16.unwrap_or(std::ptr::null());
        let w16 = if H {
            unsafe { base16.add(j * k) }
        } else {
            base16
        };
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let k8 = k / 8 * 8;
        let mut i = 0;
        while i < k8 {
            // One prefetch per 64-byte line: every 16 f32 or 32 bf16 weights.
            if let Some(p) = pf
                && i % (if H { 32 } else { 16 }) == 0
            {
                for c in 0..pf_rows {
                    let line = if H {
                        unsafe { base16.add((p + c) * k + i) as *const i8 }
                    } else {
                        unsafe { self.w.add((p + c) * k + i) as *const i8 }
                    };
                    _mm_prefetch::<_MM_HINT_T0>(line);
                }
            }
            let mut wv = [_mm256_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = if H {
                    // 8 bf16 → 8 u32 → shifted left 16 bits: exactly the f32 each one rounds.
                    let h = unsafe { _mm_loadu_si128(w16.add(c * k + i) as *const __m128i) };
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                } else {
                    unsafe { _mm256_loadu_ps(w.add(c * k + i)) }
                };
            }
            for (row, a) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm256_loadu_ps(x.add(row * k + i)) };
                for c in 0..C {
                    a[c] = _mm256_fmadd_ps(xv, wv[c], a[c]);
                }
            }
            i += 8;
        }
        for (row, a) in acc.iter().enumerate() {
            for (c, v) in a.iter().enumerate() {
                // Horizontal sum of the 8 lanes, then the K % 8 tail.
                let mut s = hsum(*v);
                for t in k8..k {
                    let wt = if H {
                        f32::from_bits(u32::from(unsafe { *w16.add(c * k + t) }) << 16)
                    } else {
                        unsafe { *w.add(c * k + t) }
                    };
                    s += unsafe { *x.add(row * k + t) } * wt;
                }
                if let Some(b) = self.b {
                    s += unsafe { *b.add(j + c) };
                }
                unsafe { *self.y.add((r + row) * self.n + j + c) = s };
            }
        }
    }

    /// # Safety
    /// Never callable: the kernel is enabled only on x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block<const R: usize, const C: usize, const H: bool>(
        &self,
        _r: usize,
        _j: usize,
        _pf: Option<usize>,
        _pf_rows: usize,
    ) {
        unreachable!("the kernel is enabled only on x86-64")
    }
}

/// An AMX tile configuration (palette 1): C tiles 0–3 and the A tile 4 of `rows` rows × 64
/// bytes, B tiles 5–7 of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(rows: usize) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            // Bytes per row at 16 + 2t (u16), rows at 48 + t.
            c[16 + 2 * t] = 64;
            c[48 + t] = if t < 5 { rows as u8 } else { 16 };
        }
        Self(c)
    }
}

impl TileConfig {
    /// Loads this configuration into the tile registers of this thread (`ldtilecfg`).
    ///
    /// # Safety
    /// The CPU has AMX-TILE and the process the tile permission ([`amx`]).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load(&self) {
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly))
        };
    }
}

/// Sets the four C tiles (the sums) to zero.
///
/// # Safety
/// Inside a configuration of [`Job::tiles`].
#[cfg(target_arch = "x86_64")]
unsafe fn zero_sums() {
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
}

/// One C tile's worth of f32, aligned for a tile store.
#[repr(C, align(64))]
struct TileBuf([f32; 256]);

/// C tile `c` (0–3) += A (tile 4) · B, B loaded from `w` (16 lines of 64 bytes, `stride` apart).
///
/// # Safety
/// Inside [`Job::tiles`]'s configuration, with `w` readable for 16 lines.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_dp(c: usize, w: *const u16, stride: usize) {
    use std::arch::asm;
    macro_rules! dp {
        ($t:literal) => {
            unsafe {
                asm!(
                    "tileloadd tmm5, [{w} + {s}*1]",
                    concat!("tdpbf16ps tmm", $t, ", tmm4, tmm5"),
                    w = in(reg) w,
                    s = in(reg) stride,
                    options(nostack, readonly)
                )
            }
        };
    }
    match c {
        0 => dp!(0),
        1 => dp!(1),
        2 => dp!(2),
        _ => dp!(3),
    }
}

/// Stores C tile `c` (0–3) to `out`, rows `stride` bytes apart.
///
/// # Safety
/// Inside [`Job::tiles`]'s configuration, with `out` writable for the tile's rows × 64 bytes.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_store(c: usize, out: *mut f32, stride: usize) {
    use std::arch::asm;
    macro_rules! st {
        ($t:literal) => {
            unsafe {
                asm!(
                    concat!("tilestored [{o} + {s}*1], tmm", $t),
                    o = in(reg) out,
                    s = in(reg) stride,
                    options(nostack)
                )
            }
        };
    }
    match c {
        0 => st!(0),
        1 => st!(1),
        2 => st!(2),
        _ => st!(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: i64, n: i64, k: i64, bias: bool) {
        let _g = tch::no_grad_guard();
        tch::manual_seed(m * 1000 + n * 10 + k);
        let x = Tensor::randn([m, k], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
        let b = bias.then(|| Tensor::randn([n], (Kind::Float, Device::Cpu)));
        let want = x.to_kind(Kind::Double).linear(
            &w.to_kind(Kind::Double),
            b.as_ref().map(|b| b.to_kind(Kind::Double)),
        );
        let Some(got) = linear(&x, &w, b.as_ref()) else {
            assert!(!cpu_supported(), "kernel refused {m}x{k} · {n}x{k}");
            return;
        };
        assert_eq!(got.size(), vec![m, n]);
        let err = f64::try_from((got.to_kind(Kind::Double) - &want).abs().max()).unwrap();
        let scale = (k as f64).sqrt();
        assert!(err < 1e-5 * scale, "{m}x{k} · {n}x{k}: max error {err}");
    }

    #[test]
    fn matches_f64_reference_on_every_block_shape_and_tails() {
        for m in [1, 2, 3, 4, 5, 7, 16, 17] {
            for (n, k) in [(1, 8), (2, 9), (3, 16), (7, 13), (64, 576), (301, 40)] {
                check(m, n, k, m % 2 == 0);
            }
        }
        check(16, 4099, 96, true); // split over threads
    }

    /// The kernel on a bf16 copy of W laid out as `layout` against an f64 product with the
    /// rounded weights (and for tiles, x rounded to bf16 too), then on W itself once the copy is
    /// dropped.
    fn check_bf16(m: i64, n: i64, k: i64, layout: Layout) {
        let _g = tch::no_grad_guard();
        tch::manual_seed(m * 7 + n + k);
        let x = Tensor::randn([m, k], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let w_bf16 = w.to_kind(Kind::BFloat16).to_kind(Kind::Double);
        let x_in = if layout.rounds_x() {
            x.to_kind(Kind::BFloat16).to_kind(Kind::Double)
        } else {
            x.to_kind(Kind::Double)
        };
        let want = x_in.linear(&w_bf16, Some(b.to_kind(Kind::Double)));
        let exact = x
            .to_kind(Kind::Double)
            .linear(&w.to_kind(Kind::Double), Some(b.to_kind(Kind::Double)));
        let mirrors = DecodeMirrors::laid_out([w.shallow_clone()], layout);
        let Some(got) = linear(&x, &w, Some(&b)) else {
            assert!(!cpu_supported(), "kernel refused {m}x{k} · {n}x{k}");
            return;
        };
        assert_eq!(mirrors.len(), 1);
        assert_eq!(mirror_of(&w).map(|c| c.layout), Some(layout));
        // Leading dims are rows too: (1, m, k) gives the same rows, to the bit.
        let got3 = linear(&x.view([1, m, k]), &w, Some(&b)).expect("3-D x");
        assert!(
            got3.view([m, n]).equal(&got),
            "{m}x{k} · {n}x{k} as (1, m, k)"
        );
        // Kernels that round x to bf16 take a bf16 x too (attention's output under autocast),
        // to the bit; the others decline it.
        let x16 = x.to_kind(Kind::BFloat16);
        match linear(&x16, &w, Some(&b)) {
            Some(y) => assert!(
                layout.rounds_x() && y.equal(&got),
                "{m}x{k} · {n}x{k}: bf16 x"
            ),
            None => assert!(!layout.rounds_x(), "{m}x{k} · {n}x{k}: bf16 x declined"),
        }
        let err = f64::try_from((got.to_kind(Kind::Double) - &want).abs().max()).unwrap();
        let scale = (k as f64).sqrt();
        assert!(
            err < 1e-5 * scale,
            "{m}x{k} · {n}x{k}: max error {err} vs bf16 weights"
        );
        // It really read bf16: the fp32 product is measurably elsewhere.
        let off = f64::try_from((got.to_kind(Kind::Double) - &exact).abs().max()).unwrap();
        assert!(
            off > 1e-4,
            "{m}x{k} · {n}x{k}: result equals the fp32 product ({off})"
        );
        drop(mirrors);
        // Without the copies, the fp32 weights again (or libtorch's, past MAX_ROWS).
        match linear(&x, &w, Some(&b)) {
            Some(fp32) => {
                let err = f64::try_from((fp32.to_kind(Kind::Double) - &exact).abs().max()).unwrap();
                assert!(err < 1e-5 * scale, "after the copies went: {err}");
            }
            None => assert!(m > MAX_ROWS, "{m}x{k} · {n}x{k} declined without copies"),
        }
    }

    #[test]
    fn packing_rounds_like_libtorch_and_lays_out_pairs_of_k_per_16_columns() {
        let _g = tch::no_grad_guard();
        for (n, k) in [(33, 7), (16, 576), (5, 1), (40, 2)] {
            tch::manual_seed(n * 100 + k);
            let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
            // Ties (1 + 2⁻⁸ lies halfway between two bf16 values; 1 + 3·2⁻⁸ too), infinities, NaN.
            let specials = [
                1.0 + 1.0 / 256.0,
                1.0 + 3.0 / 256.0,
                f32::INFINITY,
                f32::NAN,
            ];
            for (i, v) in specials.iter().enumerate() {
                let (r, c) = (i as i64 % n, (i as i64 * 3) % k);
                let _ = w.get(r).get(c).fill_(f64::from(*v));
            }
            // The same layout from libtorch's cast: zero-padded (k to whole tiles of 32), viewed,
            // permuted.
            let (n16, k2) = ((n + 15) / 16 * 16, 2 * lines(k as usize) as i64);
            let padded = Tensor::zeros([n16, k2], (Kind::BFloat16, Device::Cpu));
            padded
                .narrow(0, 0, n)
                .narrow(1, 0, k)
                .copy_(&w.to_kind(Kind::BFloat16));
            let want = padded
                .view([n16 / 16, 16, k2 / 2, 2])
                .permute([0, 2, 1, 3])
                .contiguous();
            let got = pack(&w);
            assert_eq!(got.size(), want.size());
            // Bit for bit, except that any NaN equals any other (libtorch's vectorised cast
            // writes 0xFFFF, its scalar one and this one 0x7FC0).
            let bits = |t: &Tensor| {
                Vec::<i16>::try_from(t.view_dtype(Kind::Int16).flatten(0, -1))
                    .unwrap()
                    .into_iter()
                    .map(|b| {
                        let b = b as u16;
                        if b & 0x7F80 == 0x7F80 && b & 0x7F != 0 {
                            0x7FC0
                        } else {
                            b
                        }
                    })
                    .collect::<Vec<u16>>()
            };
            let (got, want) = (bits(&got), bits(&want));
            assert_eq!(got, want, "{n} x {k}");
            assert!(
                got.contains(&0x7FC0) && got.contains(&0x7F80),
                "NaN and inf kept"
            );
        }
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80); // tie → even (down)
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82); // tie → even (up)
    }

    #[test]
    fn bf16_copies_match_an_f64_reference_on_the_rounded_weights_and_go_away() {
        let _g = tch::no_grad_guard();
        // Every layout the CPU can read: rows (the AVX2 kernel), packed (the AVX-512 one) and
        // tiles (AMX).
        let layouts = match Layout::best() {
            Layout::Tiles => vec![Layout::Rows, Layout::Packed, Layout::Tiles],
            Layout::Packed => vec![Layout::Rows, Layout::Packed],
            Layout::Rows => vec![Layout::Rows],
        };
        for layout in layouts {
            for (m, n, k) in [
                (1, 3, 16),
                (4, 7, 13),
                (5, 64, 576),
                (16, 4099, 96),
                (3, 301, 40),
                (17, 45, 40),
                (9, 33, 7),
                (16, 49, 64),
                (33, 20, 96),
                (64, 17, 40),
            ] {
                check_bf16(m, n, k, layout);
            }
        }
        // A prefill's rows (past MAX_ROWS) on copies whose kernel rounds x to bf16 (AMX, or
        // vdpbf16ps on packed ones); the other layouts decline them.
        let best = Layout::best();
        if best.rounds_x() {
            check_bf16(200, 37, 48, best);
            check_bf16(MAX_ROWS + 1, 64, 576, best);
            check_bf16(MAX_ROWS + 1, 100, 77, best);
        }
        if best == Layout::Tiles || (best == Layout::Packed && !dpbf16()) {
            let x = Tensor::randn([MAX_ROWS + 1, 8], (Kind::Float, Device::Cpu));
            let w = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
            let declines = if best == Layout::Tiles && !dpbf16() {
                Layout::Packed
            } else {
                Layout::Rows
            };
            let _m = DecodeMirrors::laid_out([w.shallow_clone()], declines);
            assert!(!tiles_held());
            assert!(linear(&x, &w, None).is_none());
        }
        // Another thread does not see this thread's copies; a view of another shape is not one.
        let w = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let _mirrors = DecodeMirrors::new([w.shallow_clone()]);
        let w2 = w.shallow_clone();
        let seen = std::thread::spawn(move || mirror_of(&w2).is_some())
            .join()
            .unwrap();
        assert!(!seen);
        assert!(mirror_of(&w).is_some());
        assert!(mirror_of(&w.narrow(0, 0, 4)).is_none());
    }

    #[test]
    fn keeps_leading_dims_and_declines_what_it_cannot_do_exactly() {
        let _g = tch::no_grad_guard();
        let x = Tensor::randn([2, 1, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
        if let Some(y) = linear(&x, &w, None) {
            assert_eq!(y.size(), vec![2, 1, 5]);
        }
        // Too many rows, a transposed (non-contiguous) weight, f64, and a graph to record.
        let big = Tensor::randn([MAX_ROWS + 1, 8], (Kind::Float, Device::Cpu));
        assert!(linear(&big, &w, None).is_none());
        let square = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
        assert!(linear(&x, &square.tr(), None).is_none());
        assert!(linear(&x.to_kind(Kind::Double), &w.to_kind(Kind::Double), None).is_none());
        drop(_g);
        let wg = w.set_requires_grad(true);
        assert!(linear(&x, &wg, None).is_none());
    }

    #[test]
    fn rope_matches_libtorch_to_the_bit_and_declines_what_it_cannot_do() {
        let _g = tch::no_grad_guard();
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        // Rope: the layer's own function of libtorch ops, on a (B, 1, nh, hs) projection
        // transposed to (B, nh, 1, hs), as decoding has it, and on a contiguous (B, n, T, hs).
        for (b, n, t, hs) in [(16, 9, 1, 64), (3, 2, 4, 8), (1, 1, 1, 2)] {
            let x = Tensor::randn([b, t, n, hs], opts).transpose(1, 2);
            let cos = Tensor::randn([b, 1, t, hs], opts);
            let sin = Tensor::randn([b, 1, t, hs], opts);
            let half = hs / 2;
            let rotated = Tensor::cat(
                &[&x.narrow(-1, half, half).neg(), &x.narrow(-1, 0, half)],
                -1,
            );
            let want = &x * &cos + rotated * &sin;
            let got = rope(&x, &cos, &sin).expect("rope applies");
            assert!(got.equal(&want), "rope b{b} n{n} t{t} hs{hs}");
        }
        // Declines: too many rows, a table of another shape, an odd head size, a graph.
        let big = Tensor::randn([MAX_ROWS + 1, 1, 1, 8], opts);
        let big_tab = Tensor::randn([MAX_ROWS + 1, 1, 1, 8], opts);
        assert!(rope(&big, &big_tab, &big_tab).is_none());
        let x = Tensor::randn([2, 3, 1, 8], opts);
        let tab = Tensor::randn([2, 1, 1, 8], opts);
        assert!(rope(&x, &tab.narrow(3, 0, 4), &tab.narrow(3, 0, 4)).is_none());
        let odd = Tensor::randn([2, 3, 1, 7], opts);
        let tab7 = Tensor::randn([2, 1, 1, 7], opts);
        assert!(rope(&odd, &tab7, &tab7).is_none());
        drop(_g);
        let xg = x.set_requires_grad(true);
        assert!(rope(&xg, &tab, &tab).is_none());
    }

    #[test]
    fn linear_many_equals_one_product_at_a_time_to_the_bit() {
        let _g = tch::no_grad_guard();
        tch::manual_seed(9);
        let opts = (Kind::Float, Device::Cpu);
        let ws = [
            Tensor::randn([64, 96], opts),
            Tensor::randn([20, 96], opts),
            Tensor::randn([33, 96], opts),
        ];
        let bs = [
            Some(Tensor::randn([64], opts)),
            None,
            Some(Tensor::randn([33], opts)),
        ];
        let pairs: Vec<(&Tensor, Option<&Tensor>)> =
            ws.iter().zip(&bs).map(|(w, b)| (w, b.as_ref())).collect();
        let x = Tensor::randn([2, 8, 96], opts);
        // No copies: declined.
        assert!(linear_many(&x, &pairs).is_none());
        let best = Layout::best();
        if !best.rounds_x() {
            // Copies whose kernel keeps x in f32 (AVX-512 FMA, AVX2): declined too.
            let _copies = DecodeMirrors::laid_out(ws.iter().map(|w| w.shallow_clone()), best);
            assert!(linear_many(&x, &pairs).is_none());
            return;
        }
        // AMX tiles, or packed copies read by vdpbf16ps.
        let copies = DecodeMirrors::laid_out(ws.iter().map(|w| w.shallow_clone()), best);
        for rows in [1, 16, 40] {
            let x = Tensor::randn([rows, 1, 96], opts);
            let got = linear_many(&x, &pairs).expect("applies");
            assert_eq!(got.len(), 3);
            for (y, (w, b)) in got.iter().zip(&pairs) {
                let want = linear(&x, w, *b).unwrap();
                assert_eq!(y.size(), want.size());
                assert!(y.equal(&want), "{rows} rows, {:?}", w.size());
            }
        }
        // One weight without a copy: declined.
        let other = Tensor::randn([8, 96], opts);
        assert!(linear_many(&x, &[(&ws[0], None), (&other, None)]).is_none());
        drop(copies);
    }

    #[test]
    fn rms_norm_runs_only_with_copies_that_round_x_and_matches_libtorch() {
        let _g = tch::no_grad_guard();
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([576], opts);
        let x = Tensor::randn([16, 1, 576], opts) * 3.0;
        // Without copies on this thread whose kernel rounds x to bf16 (AMX, vdpbf16ps):
        // libtorch's (declined here).
        assert!(rms_norm(&x, &w, 1e-5).is_none());
        let best = Layout::best();
        if !best.rounds_x() {
            return;
        }
        let m = Tensor::randn([32, 576], opts);
        let _copies = DecodeMirrors::laid_out([m.shallow_clone()], best);
        for (shape, c) in [
            (vec![16, 1, 576], 576),
            (vec![3, 7, 40], 40),
            (vec![5, 13], 13),
        ] {
            let x = Tensor::randn(shape.as_slice(), opts) * 3.0;
            let w = Tensor::randn([c], opts);
            let want = x.rms_norm([c], Some(&w), 1e-5);
            let got = rms_norm(&x, &w, 1e-5).expect("applies with such copies");
            assert_eq!(got.size(), want.size());
            let err = f64::try_from((&got - &want).abs().max()).unwrap();
            let scale = f64::try_from(want.abs().max()).unwrap();
            assert!(err < 1e-6 * scale, "{shape:?}: {err} of {scale}");
        }
        // A weight of another length, or a graph to record: declined.
        assert!(rms_norm(&x, &w.narrow(0, 0, 8), 1e-5).is_none());
        drop(_g);
        let xg = x.set_requires_grad(true);
        assert!(rms_norm(&xg, &w, 1e-5).is_none());
    }

    #[test]
    fn attend_one_matches_sdpa_with_grouped_heads_cache_views_and_a_mask() {
        let _g = tch::no_grad_guard();
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        for (b, nh, nkv, hs, l) in [(3, 4, 2, 16, 7), (2, 9, 3, 64, 40), (1, 2, 2, 8, 1)] {
            // K/V are the first l slots of a longer cache, as during decoding.
            let cache_k = Tensor::randn([b, nkv, l + 5, hs], opts);
            let cache_v = Tensor::randn([b, nkv, l + 5, hs], opts);
            let (k, v) = (cache_k.narrow(2, 0, l), cache_v.narrow(2, 0, l));
            // q as the projection leaves it: (B, 1, nh, hs) transposed to (B, nh, 1, hs).
            let q = Tensor::randn([b, 1, nh, hs], opts).transpose(1, 2);
            let gqa = nkv != nh;
            let mask = Tensor::rand([b, 1, 1, l], opts).gt(0.3);
            let _ = mask.narrow(3, l - 1, 1).fill_(1); // the newest key is always allowed
            for m in [None, Some(&mask)] {
                let want =
                    Tensor::scaled_dot_product_attention(&q, &k, &v, m, 0.0, false, None, gqa);
                let Some(got) = attend_one(&q, &k, &v, m) else {
                    assert!(
                        !cpu_supported(),
                        "kernel refused b{b} nh{nh} nkv{nkv} hs{hs} l{l}"
                    );
                    return;
                };
                assert_eq!(got.size(), want.size());
                let err = f64::try_from((&got - &want).abs().max()).unwrap();
                assert!(
                    err < 1e-5,
                    "b{b} nh{nh} nkv{nkv} hs{hs} l{l} mask {}: {err}",
                    m.is_some()
                );
            }
        }
        // Declines: two new tokens, hs not a multiple of 8, a graph to record.
        let k = Tensor::randn([1, 2, 3, 8], opts);
        assert!(attend_one(&Tensor::randn([1, 2, 2, 8], opts), &k, &k, None).is_none());
        let k12 = Tensor::randn([1, 2, 3, 12], opts);
        assert!(attend_one(&Tensor::randn([1, 2, 1, 12], opts), &k12, &k12, None).is_none());
        drop(_g);
        let qg = Tensor::randn([1, 2, 1, 8], opts).set_requires_grad(true);
        assert!(attend_one(&qg, &k, &k, None).is_none());
    }
}
