//! Micro-benchmarks of CPU decoding (rlhf_model::skinny) at SmolLM2-135M's shapes.
//!
//!     bench_skinny [ROWS] [THREADS]
//!         the decode product `x Wᵀ` for ROWS (16) rows: fp32 weights, bf16 copies, and libtorch's
//!         matmul on fp32 and bf16 tensors; GFLOP/s and GB/s of weights read. The weights are
//!         many distinct matrices streamed from memory, as decoding's 30 layers are (CACHED=1:
//!         one matrix, reused from the caches: the kernels' compute rate).
//!         RLHF_DECODE_KERNEL=avx512 reads the bf16 copies with the AVX-512 FMA kernel instead of
//!         AMX, =avx2 with the AVX2 one. Past 64 rows (e.g. 256: a prefill) only AMX copies are
//!         read by rlhf's kernel; fp32 is libtorch's product there.
//!     STEP=MODEL_DIR [STEPS=40] [THREADS=2] [RLHF_PRECISION=fp32|bf16] bench_skinny
//!         one checkpoint's costs: the decode copies, a 16 × 16-token prefill, one decoding step
//!         of 16 rows, and sampling the next token from the logits (RLHF_BENCH_TRACE=FILE:
//!         libtorch's op profiles, chrome://tracing files: the prefills to FILE, the decoding
//!         steps to FILE.decode.json).
//!     MIRRORS=1 bench_skinny    making SmolLM2-sized decode copies, against plain casts.
//!     OPS=1 bench_skinny        the fixed cost of small libtorch ops and of small products.
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
    if let Ok(dir) = std::env::var("STEP") {
        step_cost(&dir);
        return;
    }
    if std::env::var("MIRRORS").is_ok() {
        mirror_cost();
        return;
    }
    if std::env::var("OPS").is_ok() {
        op_overhead();
        return;
    }
    let a: Vec<String> = std::env::args().collect();
    let m: i64 = a.get(1).map_or(16, |s| s.parse().unwrap());
    tch::set_num_threads(a.get(2).map_or(2, |s| s.parse().unwrap()));
    let _g = tch::no_grad_guard();
    println!(
        "bf16 path: AVX-512 {}, AMX {}",
        skinny::avx512(),
        skinny::amx()
    );
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
        // Past skinny::MAX_ROWS rows the fp32 product is libtorch's.
        let t32 = time(reps, || {
            idx = (idx + 1) % copies;
            let _ = skinny::linear(&x, &ws[idx], None).unwrap_or_else(|| x.matmul(&ws[idx].tr()));
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

#[allow(dead_code)]
fn op_overhead() {
    let _g = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    let a = Tensor::randn([16, 1, 576], opts);
    let b = Tensor::randn([16, 1, 576], opts);
    let q = Tensor::randn([16, 9, 1, 64], opts);
    let cos = Tensor::randn([16, 1, 1, 64], opts);
    let sin = Tensor::randn([16, 1, 1, 64], opts);
    let n = 20000;
    let t = time(n, || {
        let _ = &a * &b;
    });
    println!("mul 16x576: {:.2} us", t * 1e6);
    let t = time(n, || {
        let _ = a.view([16, 9, 64]).transpose(0, 1);
    });
    println!("view+transpose: {:.2} us", t * 1e6);
    let t = time(n, || {
        let _ = rlhf_model::layers::Rope::apply(&q, &cos, &sin);
    });
    println!("Rope::apply: {:.2} us", t * 1e6);
    let w = Tensor::randn([576, 576], opts);
    let t = time(n, || {
        let _ = a.rms_norm([576], Some(&b.view([576 * 16]).narrow(0, 0, 576)), 1e-5);
    });
    println!("rms_norm: {:.2} us", t * 1e6);
    let t = time(n / 10, || {
        let _ = skinny::linear(&a, &w, None);
    });
    println!("skinny 16x576x576 fp32: {:.2} us", t * 1e6);
    let wt = Tensor::randn([64, 576], opts);
    let t = time(n, || {
        let _ = skinny::linear(&a, &wt, None);
    });
    println!("skinny 16x576x64 fp32: {:.2} us", t * 1e6);
    let _m = DecodeMirrors::new([wt.shallow_clone()]);
    let t = time(n, || {
        let _ = skinny::linear(&a, &wt, None);
    });
    println!(
        "skinny 16x576x64 bf16 copy (AMX {}): {:.2} us",
        skinny::amx(),
        t * 1e6
    );
    // With AMX copies held (bf16 decoding), RMSNorm runs in one pass.
    let g = b.view([576 * 16]).narrow(0, 0, 576);
    if skinny::rms_norm(&a, &g, 1e-5).is_some() {
        let t = time(n, || {
            let _ = skinny::rms_norm(&a, &g, 1e-5);
        });
        println!("skinny::rms_norm 16x576: {:.2} us", t * 1e6);
    }
}

#[allow(dead_code)]
fn mirror_cost() {
    let _g = tch::no_grad_guard();
    // SmolLM2-135M's matrices: 30 layers of 7, and the tied embedding.
    let mut ws = Vec::new();
    for _ in 0..30 {
        for (n, k) in [
            (576, 576),
            (192, 576),
            (192, 576),
            (576, 576),
            (1536, 576),
            (1536, 576),
            (576, 1536),
        ] {
            ws.push(Tensor::randn([n, k], (Kind::Float, Device::Cpu)));
        }
    }
    ws.push(Tensor::randn([49152, 576], (Kind::Float, Device::Cpu)));
    for _ in 0..3 {
        let t0 = Instant::now();
        let m = DecodeMirrors::new(ws.iter().map(|w| w.shallow_clone()));
        let made = t0.elapsed().as_secs_f64();
        drop(m);
        let t0 = Instant::now();
        let c: Vec<Tensor> = ws.iter().map(|w| w.to_kind(Kind::BFloat16)).collect();
        let cast = t0.elapsed().as_secs_f64();
        drop(c);
        println!(
            "DecodeMirrors::new {:.1} ms; plain casts {:.1} ms",
            made * 1e3,
            cast * 1e3
        );
    }
}

#[allow(dead_code)]
fn step_cost(dir: &str) {
    use rlhf_model::{Batch, Gpt, Head};
    let _g = tch::no_grad_guard();
    if let Ok(t) = std::env::var("THREADS") {
        tch::set_num_threads(t.parse().unwrap());
    }
    if let Ok(p) = std::env::var("RLHF_PRECISION") {
        let p: rlhf_model::Precision = p.parse().unwrap();
        rlhf_model::precision::set_default(p, Device::Cpu);
    }
    let model = Gpt::load(std::path::Path::new(dir), Head::Lm, Device::Cpu).unwrap();
    let t0 = Instant::now();
    let _m = model.decode_mirrors();
    let mirrors = t0.elapsed().as_secs_f64();
    let b = 16;
    let steps: usize = std::env::var("STEPS").map_or(40, |s| s.parse().unwrap());
    let mut cache = model.new_cache(b, 16 + steps as i64 + 1);
    let ids =
        Tensor::from_slice(&(0..b * 16).map(|i| i % 1000).collect::<Vec<i64>>()).view([b, 16]);
    let mask = ids.ones_like().to_kind(Kind::Bool);
    let prefill = |cache: &mut rlhf_model::KvCache| {
        let batch = Batch {
            input_ids: &ids,
            attention_mask: Some(&mask),
        };
        let _ = model.forward_hidden(batch, Some(cache)).unwrap();
    };
    prefill(&mut model.new_cache(b, 17)); // warm-up, on a cache of its own
    // The median of 5 prefills (one alone varied 2x from run to run), the last into the cache
    // the decoding steps use.
    // RLHF_BENCH_TRACE=FILE: libtorch's op profiler records the 5 prefills.
    let trace = std::env::var_os("RLHF_BENCH_TRACE")
        .and_then(|f| rlhf_model::fused::OpProfile::start(std::path::Path::new(&f)));
    let mut times: Vec<f64> = (0..5)
        .map(|i| {
            let t0 = Instant::now();
            if i == 4 {
                prefill(&mut cache);
            } else {
                prefill(&mut model.new_cache(b, 17));
            }
            t0.elapsed().as_secs_f64()
        })
        .collect();
    drop(trace);
    times.sort_by(f64::total_cmp);
    println!(
        "mirrors {:.1} ms, prefill 16 x 16 tokens {:.1} ms (median of 5; {:.1}-{:.1})",
        mirrors * 1e3,
        times[2] * 1e3,
        times[0] * 1e3,
        times[4] * 1e3
    );
    let tok = Tensor::from_slice(&vec![5i64; b as usize]).view([b, 1]);
    // RLHF_BENCH_TRACE=FILE: the decoding steps' profile goes to FILE.decode.json.
    let trace = std::env::var_os("RLHF_BENCH_TRACE").and_then(|f| {
        let mut f = std::path::PathBuf::from(f).into_os_string();
        f.push(".decode.json");
        rlhf_model::fused::OpProfile::start(std::path::Path::new(&f))
    });
    let t0 = Instant::now();
    let mut logits = None;
    for _ in 0..steps {
        logits = Some(
            model
                .forward(
                    Batch {
                        input_ids: &tok,
                        attention_mask: None,
                    },
                    Some(&mut cache),
                )
                .unwrap()
                .select(1, 0),
        );
    }
    let fwd = t0.elapsed().as_secs_f64() / steps as f64;
    drop(trace);
    let logits = logits.unwrap();
    let t0 = Instant::now();
    for _ in 0..steps {
        let max = logits.amax([-1].as_slice(), true);
        let w = (&logits - &max).exp();
        let _lt = &max + w.sum_dim_intlist([-1].as_slice(), true, Kind::Float).log();
        let u = Tensor::rand([b], (Kind::Double, Device::Cpu));
        let _ = rlhf_model::sample::inverse_cdf(&w, &u);
    }
    let pick = t0.elapsed().as_secs_f64() / steps as f64;
    println!(
        "forward one token x16: {:.1} ms; sampling the token: {:.2} ms",
        fwd * 1e3,
        pick * 1e3
    );
}
