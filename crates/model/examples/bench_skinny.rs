//! Micro-benchmark of the decode product `x Wᵀ` (rlhf_model::skinny) at SmolLM2-135M's shapes,
//! 16 rows: fp32 weights, bf16 copies, and libtorch's matmul on fp32 and bf16 tensors. Prints
//! GFLOP/s and GB/s of weights streamed per product.
//!
//! usage: bench_skinny [ROWS] [THREADS]   (RLHF_DECODE_KERNEL=avx2 picks the AVX2 bf16 path)
use std::time::Instant;

use rlhf_model::skinny::{self, DecodeMirrors};
use tch::{Device, Kind, Tensor};

// As in the `rlhf` binary (bench/run-sampling.sh builds with the feature).
#[cfg(feature = "jemalloc")]
rlhf_model::jemalloc_global_allocator!();

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    for _ in 0..reps {
        f();
    }
    t0.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let m: i64 = a.get(1).map_or(16, |s| s.parse().unwrap());
    tch::set_num_threads(a.get(2).map_or(2, |s| s.parse().unwrap()));
    let _g = tch::no_grad_guard();
    println!("AVX-512 bf16 path: {}", skinny::avx512());
    let cached = std::env::var("CACHED").is_ok();
    for (n, k) in [
        (576, 576),
        (192, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ] {
        // Enough distinct weight matrices to overflow the caches, as decoding's 30 layers do
        // (CACHED=1: one matrix, read from the caches when it fits: the kernels' compute rate).
        let copies = if cached {
            1
        } else {
            (200_000_000 / (n * k * 4)).max(2) as usize
        };
        let reps_per = if cached { 200 } else { 3 };
        let ws: Vec<Tensor> = (0..copies)
            .map(|_| Tensor::randn([n, k], (Kind::Float, Device::Cpu)))
            .collect();
        let x = Tensor::randn([m, k], (Kind::Float, Device::Cpu));
        let flops = 2.0 * (m * n * k) as f64;
        let reps = reps_per * copies;
        let mut idx = 0;
        let t32 = time(reps, || {
            idx = (idx + 1) % copies;
            let _ = skinny::linear(&x, &ws[idx], None).unwrap();
        });
        let mirrors = DecodeMirrors::new(ws.iter().map(|w| w.shallow_clone()));
        let t16 = time(reps, || {
            idx = (idx + 1) % copies;
            let _ = skinny::linear(&x, &ws[idx], None).unwrap();
        });
        drop(mirrors);
        let wb: Vec<Tensor> = ws.iter().map(|w| w.to_kind(Kind::BFloat16)).collect();
        let xb = x.to_kind(Kind::BFloat16);
        let tt32 = time(reps, || {
            idx = (idx + 1) % copies;
            let _ = x.matmul(&ws[idx].tr());
        });
        let tt16 = time(reps, || {
            idx = (idx + 1) % copies;
            let _ = xb.matmul(&wb[idx].tr());
        });
        let g = |t: f64| flops / t / 1e9;
        let bw = |t: f64, bytes: f64| (n * k) as f64 * bytes / t / 1e9;
        println!(
            "{m}x{k}·{n}x{k}: skinny fp32 {:.0} GFLOP/s ({:.1} GB/s), bf16 {:.0} ({:.1} GB/s) = {:.2}x; torch fp32 {:.0}, torch bf16 {:.0}",
            g(t32),
            bw(t32, 4.0),
            g(t16),
            bw(t16, 2.0),
            t32 / t16,
            g(tt32),
            g(tt16)
        );
    }
}
