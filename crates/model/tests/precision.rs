//! `--precision bf16`: products in bf16 on fp32 weights (libtorch's autocast through our C++
//! shim). The guard scopes bf16 to one thread and one region; a bf16 model returns fp32 logits
//! within bf16's tolerance of transformers' fp32 ones, its loss within 1% of the fp32 model's, and
//! its gradients land on the fp32 master weights as fp32.

mod common;

use common::{FAMILIES, fixture, max_abs_diff, reference};
use rlhf_model::{Autocast, Batch, Compute, Gpt, Head, Precision};
use tch::{Device, Kind, Tensor};

fn logits(model: &Gpt, ids: &Tensor) -> Tensor {
    model
        .forward(
            Batch {
                input_ids: ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap()
}

fn lm_loss(model: &Gpt, ids: &Tensor) -> Tensor {
    let l = logits(model, ids);
    let (b, t, v) = l.size3().unwrap();
    let pred = l.narrow(1, 0, t - 1).reshape([b * (t - 1), v]);
    let target = ids.narrow(1, 1, t - 1).reshape([-1]);
    pred.log_softmax(-1, Kind::Float).nll_loss(&target)
}

#[test]
fn the_guard_turns_bf16_products_on_for_its_scope_and_thread_only() {
    // Not drawn from libtorch's global generator: the generation test below seeds it and samples
    // from it, and tests run on parallel threads.
    let opts = (Kind::Float, Device::Cpu);
    let a = (Tensor::arange(128, opts).view([8, 16]) * 0.37).sin();
    let b = (Tensor::arange(64, opts).view([16, 4]) * 0.91).cos();
    assert_eq!(a.matmul(&b).kind(), Kind::Float);
    assert!(!Autocast::is_enabled(Device::Cpu));
    {
        let _outer = Autocast::enter(Device::Cpu, Kind::BFloat16);
        assert!(Autocast::is_enabled(Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        // Element-wise ops are not autocast: they keep their inputs' dtype.
        assert_eq!((&a + 1.0).kind(), Kind::Float);
        {
            let _inner = Autocast::enter(Device::Cpu, Kind::BFloat16);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        // The inner guard restored the outer state, not "off".
        assert!(Autocast::is_enabled(Device::Cpu));
        // Another thread never sees this thread's switch.
        let (a2, b2) = (a.copy(), b.copy());
        let other = std::thread::spawn(move || a2.matmul(&b2).kind())
            .join()
            .unwrap();
        assert_eq!(other, Kind::Float);
    }
    assert!(!Autocast::is_enabled(Device::Cpu));
    assert_eq!(a.matmul(&b).kind(), Kind::Float);
}

#[test]
fn precision_arguments_parse_and_resolve() {
    assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::Fp32);
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    assert_eq!("auto".parse::<Precision>().unwrap(), Precision::Auto);
    let err = "fp16".parse::<Precision>().unwrap_err();
    assert!(err.contains("expected fp32, bf16 or auto"), "{err}");
    let wide = rlhf_model::precision::AUTO_MIN_WIDTH;
    for width in [64, wide] {
        assert_eq!(Precision::Fp32.resolve(Device::Cpu, width), Compute::Fp32);
        assert_eq!(Precision::Bf16.resolve(Device::Cpu, width), Compute::Bf16);
    }
    // auto: bf16 only with the CPU's bf16 instructions and on products wide enough to gain.
    let has = rlhf_model::precision::cpu_has_bf16();
    assert_eq!(
        Precision::Auto.resolve(Device::Cpu, wide) == Compute::Bf16,
        has
    );
    assert_eq!(
        Precision::Auto.resolve(Device::Cpu, wide - 1),
        Compute::Fp32
    );
    assert_eq!(Precision::Auto.resolve(Device::Cuda(0), 64), Compute::Bf16);
    // The printed line names the decode kernel wherever bf16 may run on the CPU.
    let kernel = rlhf_model::skinny::decode_kernel();
    let bf16 = Precision::Bf16.describe(Device::Cpu);
    assert!(bf16.starts_with("precision: bf16 (asked for"), "{bf16}");
    assert!(bf16.contains("; bf16 decoding: "), "{bf16}");
    // Without bf16 instructions the line says the products are emulated.
    assert_eq!(bf16.contains("emulates"), !has, "{bf16}");
    assert!(bf16.ends_with(kernel), "{bf16}");
    assert_eq!(
        rlhf_model::skinny::amx(),
        kernel.starts_with("AMX"),
        "{kernel}"
    );
    assert!(!Precision::Fp32.describe(Device::Cpu).contains("decoding"));
    assert!(
        !Precision::Bf16
            .describe(Device::Cuda(0))
            .contains("decoding")
    );
    assert_eq!(
        Precision::Auto.describe(Device::Cpu).contains("decoding"),
        has
    );
}

#[test]
fn bf16_logits_stay_within_bf16_tolerance_of_transformers_fp32() {
    let _rng = common::torch_rng();
    for name in FAMILIES {
        let r = reference(name);
        let ids = &r["input_ids"];
        let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        let fp32 = tch::no_grad(|| logits(&model, ids));
        model.set_compute(Compute::Bf16);
        // With a graph to record, as in training and scoring (a no-grad pass of at most 64 rows
        // is decoding-sized and keeps fp32 products; see `generation_in_bf16_...` below).
        let bf16 = logits(&model, ids).detach();
        assert_eq!(bf16.kind(), Kind::Float, "{name}: logits come back in fp32");
        assert_eq!(model.kind(), Kind::Float, "{name}: weights untouched");
        let scale = f64::try_from(r["logits"].abs().max()).unwrap();
        let err32 = max_abs_diff(&fp32, &r["logits"]) / scale;
        let err16 = max_abs_diff(&bf16, &r["logits"]) / scale;
        eprintln!("{name}: max |Δlogit| / max |logit|: fp32 {err32:.2e}, bf16 {err16:.2e}");
        // bf16 keeps 8 significant bits (relative step 2^-8 ≈ 3.9e-3); a few layers of products
        // with fp32 accumulation stay within a few steps of it.
        assert!(
            err16 < 2e-2,
            "{name}: bf16 logits off by {err16:.2e} of their scale"
        );
        assert!(
            err16 > err32,
            "{name}: bf16 products did not run (no rounding seen)"
        );
    }
}

#[test]
fn bf16_training_keeps_fp32_master_weights_and_gradients_and_the_loss_within_one_percent() {
    let _rng = common::torch_rng();
    for name in FAMILIES {
        let ids = reference(name)["input_ids"].shallow_clone();
        let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        let l32 = lm_loss(&model, &ids);
        l32.backward();
        let loss32 = f64::try_from(&l32).unwrap();
        let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let flat_grad = |vars: &[(String, Tensor)]| {
            Tensor::cat(
                &vars
                    .iter()
                    .map(|(_, v)| v.grad().reshape([-1]))
                    .collect::<Vec<_>>(),
                0,
            )
        };
        let g32 = flat_grad(&vars);
        for (_, v) in &vars {
            let _ = v.grad().zero_();
        }
        model.set_compute(Compute::Bf16);
        let loss = lm_loss(&model, &ids);
        assert_eq!(loss.kind(), Kind::Float);
        loss.backward();
        let loss16 = f64::try_from(&loss).unwrap();
        let rel = (loss16 - loss32).abs() / loss32;
        eprintln!("{name}: loss fp32 {loss32:.6}, bf16 {loss16:.6} (rel {rel:.2e})");
        assert!(rel < 1e-2, "{name}: bf16 loss off by {rel:.2e}");
        let mut nonzero = 0;
        for (pname, var) in model.vs.variables() {
            assert_eq!(var.kind(), Kind::Float, "{name}: {pname} is no longer fp32");
            let g = var.grad();
            if g.defined() {
                assert_eq!(
                    g.kind(),
                    Kind::Float,
                    "{name}: {pname}'s gradient is not fp32"
                );
                nonzero += i64::from(f64::try_from(g.abs().sum(Kind::Float)).unwrap() > 0.0);
            }
        }
        assert!(
            nonzero > 5,
            "{name}: only {nonzero} parameters received a gradient"
        );
        // The whole gradient points where fp32's does, and is as long.
        let g16 = flat_grad(&vars);
        let cos = f64::try_from(g16.dot(&g32) / (g16.norm() * g32.norm())).unwrap();
        let ratio = f64::try_from(g16.norm() / g32.norm()).unwrap();
        eprintln!("{name}: gradient cosine bf16 vs fp32 {cos:.5}, norm ratio {ratio:.4}");
        assert!(cos > 0.999, "{name}: bf16 gradient cosine {cos}");
        assert!(
            (ratio - 1.0).abs() < 0.01,
            "{name}: bf16 gradient norm ratio {ratio}"
        );
        // Outside the forward pass autocast is off again.
        assert!(!Autocast::is_enabled(Device::Cpu));
    }
}

#[test]
fn generation_in_bf16_decodes_from_bf16_weight_copies_and_stays_close_to_fp32() {
    let _rng = common::torch_rng();
    use rlhf_model::{GenerateConfig, Sampling};
    for name in FAMILIES {
        let r = reference(name);
        let ids = Vec::<i64>::try_from(r["input_ids"].get(0)).unwrap();
        let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        assert!(
            model.decode_mirrors().is_none(),
            "{name}: fp32 makes no copies"
        );
        let cfg = GenerateConfig {
            max_new_tokens: 6,
            sampling: Sampling::new(1.0, None, None).unwrap(),
            seed: Some(0),
            eos_token_ids: vec![],
            pad_token_id: 0,
        };
        let fp32 =
            rlhf_model::sample::generate(&model, std::slice::from_ref(&ids), &cfg, |_, _| false)
                .unwrap();
        model.set_compute(Compute::Bf16);
        let mirrors = model
            .decode_mirrors()
            .expect("bf16 on the CPU makes copies");
        // Every weight matrix (2-D) of the model has a copy.
        let matrices = model
            .vs
            .variables()
            .values()
            .filter(|t| t.dim() == 2)
            .count();
        assert_eq!(mirrors.len(), matrices, "{name}");
        drop(mirrors);
        let bf16 =
            rlhf_model::sample::generate(&model, std::slice::from_ref(&ids), &cfg, |_, _| false)
                .unwrap();
        // Teacher-forced fp32 log-probs of the bf16 run's tokens stay near the sampler's: the
        // copies round each weight to 8 significant bits, nothing more.
        let (a, b) = (&fp32[0].logprobs, &bf16[0].logprobs);
        assert_eq!(a.len(), b.len());
        let gap = fp32[0]
            .token_ids
            .iter()
            .zip(&bf16[0].token_ids)
            .zip(a.iter().zip(b))
            .take_while(|((x, y), _)| x == y)
            .map(|(_, (p, q))| (p - q).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{name}: fp32 {:?} bf16 {:?}, max log-prob gap while equal {gap:.2e}",
            fp32[0].token_ids, bf16[0].token_ids
        );
        assert!(gap < 0.05, "{name}: bf16 decoding log-probs off by {gap}");
        // The same seed and nearly the same distribution: the first tokens agree, so the gap
        // above compared something.
        assert_eq!(
            fp32[0].token_ids[..2],
            bf16[0].token_ids[..2],
            "{name}: bf16 sampling parted from fp32 at once"
        );
    }
}

#[test]
fn a_long_bf16_pass_on_decode_copies_stays_within_bf16_tolerance_of_fp32() {
    let _rng = common::torch_rng();
    use rlhf_model::skinny;
    let _g = tch::no_grad_guard();
    for name in FAMILIES {
        let r = reference(name);
        // More rows than the decode kernels' usual limit: a prefill-sized pass.
        let t = r["input_ids"].size()[1];
        let copies = skinny::MAX_ROWS / t + 2;
        let ids = r["input_ids"].repeat([copies, 1]);
        assert!(copies * t > skinny::MAX_ROWS);
        let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        let fp32 = logits(&model, &ids);
        model.set_compute(Compute::Bf16);
        let mirrors = model
            .decode_mirrors()
            .expect("bf16 on the CPU makes copies");
        // Copies whose kernel rounds x to bf16 and takes a prefill: AMX, or vdpbf16ps.
        let tiles = skinny::tiles_held();
        assert_eq!(
            tiles,
            skinny::amx() || skinny::dpbf16(),
            "{name}: AMX or vdpbf16ps copies where the CPU reads them so"
        );
        let bf16 = logits(&model, &ids);
        // Another model's pass meanwhile (no copies of its weights) keeps autocast, whose head
        // rounds every logit to bf16.
        let mut other = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        other.set_compute(Compute::Bf16);
        let auto = logits(&other, &ids);
        let bf16_values = |t: &Tensor| {
            let rounded = t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
            f64::try_from(t.eq_tensor(&rounded).to_kind(Kind::Float).mean(Kind::Float)).unwrap()
        };
        assert_eq!(
            bf16_values(&auto),
            1.0,
            "{name}: the other model's pass left autocast"
        );
        drop(mirrors);
        assert!(!skinny::tiles_held());
        let scale = f64::try_from(fp32.abs().max()).unwrap();
        let err = max_abs_diff(&bf16, &fp32) / scale;
        eprintln!(
            "{name}: {} rows, AMX/vdpbf16ps {tiles}: max |Δlogit| / max |logit| {err:.2e}",
            copies * t
        );
        assert!(
            err < 2e-2,
            "{name}: bf16 logits off by {err:.2e} of their scale"
        );
        assert!(err > 1e-5, "{name}: no bf16 rounding seen ({err:.2e})");
        // With those kernels the head's sums stay f32 (autocast would round them to bf16):
        // most logits are not bf16 values.
        if tiles {
            let exact = bf16_values(&bf16);
            assert!(
                exact < 0.5,
                "{name}: {exact} of the logits are bf16 values (autocast ran)"
            );
        }
    }
}

/// GELU (tanh form) at x in f64: value and derivative. Written as x * sigmoid(2u), since
/// 0.5 x (1 + tanh u) cancels to nothing in f64 too once x < -7.
fn gelu_f64(x: f64) -> (f64, f64) {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let u = k * (x + 0.044715 * x * x * x);
    let s = 1.0 / (1.0 + (-2.0 * u).exp());
    let du = k * (1.0 + 3.0 * 0.044715 * x * x);
    (x * s, s + 2.0 * x * s * (1.0 - s) * du)
}

#[test]
fn the_bf16_gelu_kernel_matches_an_f64_reference_and_fp32_stays_libtorchs() {
    let _rng = common::torch_rng();
    // 4099 values (a partial last vector) over [-12, 12], plus signed zeros and far tails.
    let mut xs: Vec<f32> = (0..4099)
        .map(|i| -12.0 + 24.0 * i as f32 / 4098.0)
        .collect();
    xs.extend([0.0, -0.0, 30.0, -30.0, 1e-3, -1e-3]);
    let x32 = Tensor::from_slice(&xs);
    let x = x32.to_kind(Kind::BFloat16).set_requires_grad(true);
    let y = rlhf_model::fused::gelu_tanh(&x);
    assert_eq!(y.kind(), Kind::BFloat16);
    let g32 = Tensor::randn([xs.len() as i64], (Kind::Float, Device::Cpu));
    let g = g32.to_kind(Kind::BFloat16);
    (&y.to_kind(Kind::Float) * g.to_kind(Kind::Float))
        .sum(Kind::Float)
        .backward();
    let gx = x.grad();
    assert_eq!(gx.kind(), Kind::BFloat16);
    let xr: Vec<f32> = Vec::try_from(x.detach().to_kind(Kind::Float)).unwrap();
    let yr: Vec<f32> = Vec::try_from(y.detach().to_kind(Kind::Float)).unwrap();
    let gr: Vec<f32> = Vec::try_from(g.to_kind(Kind::Float)).unwrap();
    let gxr: Vec<f32> = Vec::try_from(gx.to_kind(Kind::Float)).unwrap();
    // One rounding to bf16 (half a step, 2^-8 relative) on an fp32 result good to ~1e-6.
    let half_step = 1.0 / 256.0;
    for i in 0..xr.len() {
        let (want, dwant) = gelu_f64(xr[i] as f64);
        let err = (yr[i] as f64 - want).abs();
        assert!(
            err <= half_step * want.abs() * 1.001 + 1e-6 * (xr[i] as f64).abs(),
            "gelu({}) = {} but f64 gives {want}",
            xr[i],
            yr[i]
        );
        let want_g = dwant * gr[i] as f64;
        let err = (gxr[i] as f64 - want_g).abs();
        assert!(
            err <= half_step * want_g.abs() * 1.001 + 1e-5 * (gr[i] as f64).abs(),
            "gelu'({}) * {} = {} but f64 gives {want_g}",
            xr[i],
            gr[i],
            gxr[i]
        );
    }
    // Correctly rounded almost everywhere (libtorch's own bf16 kernel: 80% of these values;
    // its 0.5 x (1 + tanh u) loses all digits to cancellation at large negative x).
    // (Among normal numbers: below 1.2e-38 our exp overflows to a zero where f64 still has a
    // subnormal.)
    let refs: Vec<f64> = xr.iter().map(|&v| gelu_f64(v as f64).0).collect();
    let rounded: Vec<f32> = Vec::try_from(
        Tensor::from_slice(&refs)
            .to_kind(Kind::BFloat16)
            .to_kind(Kind::Float),
    )
    .unwrap();
    let normal: Vec<usize> = (0..xr.len())
        .filter(|&i| refs[i].abs() >= f32::MIN_POSITIVE as f64)
        .collect();
    let same = normal.iter().filter(|&&i| rounded[i] == yr[i]).count() as f64 / normal.len() as f64;
    assert!(same > 0.995, "only {same:.4} of values correctly rounded");
    // A strided view gives the same values as its contiguous copy.
    let view = x.detach().view([-1, 5]).transpose(0, 1);
    let a = rlhf_model::fused::gelu_tanh(&view);
    assert!(a.equal(&rlhf_model::fused::gelu_tanh(&view.contiguous())));
    // fp32 is libtorch's, to the bit (seeded fp32 results do not move).
    assert!(rlhf_model::fused::gelu_tanh(&x32).equal(&x32.gelu("tanh")));
    if std::arch::is_x86_feature_detected!("avx512bw") {
        assert!(rlhf_model::fused::gelu_tanh_fast());
    }
}

#[test]
fn the_bf16_training_linear_gives_fp32_weight_gradients_of_the_rounded_product() {
    let _rng = common::torch_rng();
    // Both weight-gradient paths, whichever this CPU takes by default.
    check_bf16_training_linear(true);
    check_bf16_training_linear(false);
    rlhf_model::fused::choose_linear_bf16_mkl(None);
    // The torch wheel exports MKL's bf16 GEMM; it runs the weight gradients on Intel CPUs only
    // (on AMD EPYC it ran at fp32 speed), unless RLHF_BF16_WEIGHT_GRAD says otherwise.
    #[cfg(target_arch = "x86_64")]
    {
        assert!(rlhf_model::fused::linear_bf16_mkl_available());
        let vendor = rlhf_model::precision::cpu_vendor();
        let want = match std::env::var("RLHF_BF16_WEIGHT_GRAD").as_deref() {
            Ok("mkl") => true,
            Ok("libtorch") => false,
            _ => vendor == "GenuineIntel",
        };
        assert_eq!(rlhf_model::fused::linear_bf16_mkl(), want);
    }
}

/// The bf16 training linear against an f64 reference, with its weight gradient from MKL's
/// bf16 -> fp32 GEMM (`mkl`, where the wheel has it) or from libtorch's bf16 product and a cast.
fn check_bf16_training_linear(mkl: bool) {
    rlhf_model::fused::choose_linear_bf16_mkl(Some(mkl));
    let mkl = mkl && rlhf_model::fused::linear_bf16_mkl_available();
    assert_eq!(rlhf_model::fused::linear_bf16_mkl(), mkl);
    let f64_of = |t: &Tensor| t.detach().to_kind(Kind::Double);
    let r16 = |t: &Tensor| f64_of(&t.detach().to_kind(Kind::BFloat16));
    for (in_out, bias, x_kind) in [
        (false, true, Kind::Float),
        (false, false, Kind::BFloat16),
        (true, true, Kind::Float),
        (true, false, Kind::Float),
    ] {
        let (d_in, d_out) = (48, 40);
        let shape = if in_out { [d_in, d_out] } else { [d_out, d_in] };
        let w = Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = bias
            .then(|| Tensor::randn([d_out], (Kind::Float, Device::Cpu)).set_requires_grad(true));
        let x = Tensor::randn([3, 7, d_in], (Kind::Float, Device::Cpu))
            .to_kind(x_kind)
            .set_requires_grad(true);
        let what = format!("in_out {in_out}, bias {bias}, x {x_kind:?}, mkl {mkl}");
        // Only inside a bf16 training pass.
        assert!(rlhf_model::fused::linear_bf16(&x, &w, b.as_ref(), in_out).is_none());
        let y = {
            let _ac = Autocast::enter(Device::Cpu, Kind::BFloat16);
            assert!(
                tch::no_grad(|| rlhf_model::fused::linear_bf16(&x, &w, b.as_ref(), in_out))
                    .is_none()
            );
            rlhf_model::fused::linear_bf16(&x, &w, b.as_ref(), in_out).expect(&what)
        };
        assert_eq!(y.kind(), Kind::BFloat16, "{what}");
        assert_eq!(y.size(), [3, 7, d_out], "{what}");
        let dy = Tensor::randn([3, 7, d_out], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        (y.to_kind(Kind::Float) * dy.to_kind(Kind::Float))
            .sum(Kind::Float)
            .backward();
        // The reference: the same bf16-rounded operands, products and sums in f64.
        let x2 = r16(&x).reshape([-1, d_in]);
        let w_oi = if in_out { r16(&w).tr() } else { r16(&w) }; // (out, in)
        let dy2 = f64_of(&dy).reshape([-1, d_out]);
        let mut want_y = x2.matmul(&w_oi.tr());
        if let Some(b) = &b {
            want_y += r16(b);
        }
        let rel = |got: &Tensor, want: &Tensor| {
            f64::try_from((f64_of(got) - want).abs().max()).unwrap()
                / f64::try_from(want.abs().max()).unwrap()
        };
        assert!(rel(&y.reshape([-1, d_out]), &want_y) < 8e-3, "{what}: y");
        let want_dw = dy2.tr().matmul(&x2); // (out, in)
        let want_dw = if in_out { want_dw.tr() } else { want_dw };
        assert_eq!(w.grad().kind(), Kind::Float, "{what}: dW stays fp32");
        if mkl {
            // fp32 sums of exact products: far tighter than one bf16 rounding (3.9e-3).
            assert!(rel(&w.grad(), &want_dw) < 1e-5, "{what}: dW");
        } else {
            // libtorch's bf16 product, rounded once to bf16, then cast: autocast's gradient.
            let x16 = x.detach().to_kind(Kind::BFloat16).reshape([-1, d_in]);
            let dy16 = dy.reshape([-1, d_out]);
            let mm = if in_out {
                x16.tr().mm(&dy16)
            } else {
                dy16.tr().mm(&x16)
            };
            assert!(
                w.grad().equal(&mm.to_kind(Kind::Float)),
                "{what}: dW is the cast product"
            );
            assert!(rel(&w.grad(), &want_dw) < 8e-3, "{what}: dW");
        }
        let want_dx = dy2.matmul(&w_oi);
        assert_eq!(x.grad().kind(), x_kind, "{what}: dx in x's dtype");
        assert!(
            rel(&x.grad().reshape([-1, d_in]), &want_dx) < 8e-3,
            "{what}: dx"
        );
        if let Some(b) = &b {
            assert!(
                rel(&b.grad(), &dy2.sum_dim_intlist(0, false, Kind::Double)) < 1e-5,
                "{what}: db"
            );
        }
    }
    // A frozen weight (LoRA's base) keeps the caller's path.
    let w = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
    let x = Tensor::randn([2, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let _ac = Autocast::enter(Device::Cpu, Kind::BFloat16);
    assert!(rlhf_model::fused::linear_bf16(&x, &w, None, false).is_none());
}
