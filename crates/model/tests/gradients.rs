//! Gradients: central finite differences in f64 agree with libtorch autograd on a few entries of
//! several parameters per family, and every parameter receives a non-zero gradient from the LM
//! loss.

mod common;

use common::{FAMILIES, fixture, reference};
use rlhf_model::{Batch, Gpt, Head};
use tch::{Device, Kind, Tensor};

/// Mean next-token cross-entropy of the fixture's ids under the model.
fn lm_loss(model: &Gpt, ids: &Tensor) -> Tensor {
    let logits = model
        .forward(
            Batch {
                input_ids: ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let (b, t, v) = logits.size3().unwrap();
    let pred = logits.narrow(1, 0, t - 1).reshape([b * (t - 1), v]);
    let target = ids.narrow(1, 1, t - 1).reshape([-1]);
    // Not `cross_entropy_for_logits`: it casts to f32, which would hide f64 differences.
    pred.log_softmax(-1, pred.kind()).nll_loss(&target)
}

fn load_f64(name: &str) -> Gpt {
    let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
    model.set_kind(Kind::Double);
    assert_eq!(model.kind(), Kind::Double);
    model
}

#[test]
fn finite_differences_match_autograd() {
    let eps = 1e-6;
    for name in FAMILIES {
        let model = load_f64(name);
        let ids = reference(name)["input_ids"].shallow_clone();
        let loss = lm_loss(&model, &ids);
        loss.backward();
        let vars = model.vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        // Every 4th tensor, three entries each: embeddings, norms, projections of each kind.
        for pname in names.into_iter().step_by(4) {
            let var = &vars[pname];
            let grad = var.grad().reshape([-1]);
            let flat = var.reshape([-1]);
            let n = flat.size()[0];
            for idx in [0, n / 2, n - 1] {
                let orig = f64::try_from(flat.get(idx)).unwrap();
                let eval = |x: f64| {
                    tch::no_grad(|| {
                        let _ = flat.get(idx).fill_(x);
                    });
                    tch::no_grad(|| f64::try_from(lm_loss(&model, &ids)).unwrap())
                };
                let numeric = (eval(orig + eps) - eval(orig - eps)) / (2.0 * eps);
                eval(orig);
                let analytic = f64::try_from(grad.get(idx)).unwrap();
                let tol = 1e-6 + 1e-4 * analytic.abs().max(numeric.abs());
                assert!(
                    (numeric - analytic).abs() <= tol,
                    "{name}: {pname}[{idx}] numeric {numeric:e} vs autograd {analytic:e}"
                );
            }
        }
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    for name in FAMILIES {
        let model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        let ids = reference(name)["input_ids"].shallow_clone();
        lm_loss(&model, &ids).backward();
        for (pname, var) in model.vs.variables() {
            let g = var.grad();
            assert!(g.defined(), "{name}: {pname} has no gradient");
            let norm = f64::try_from(g.to_kind(Kind::Double).norm()).unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: {pname} gradient norm {norm}"
            );
        }
    }
}

#[test]
fn scalar_head_is_differentiable_and_round_trips() {
    let cfg = rlhf_model::ModelConfig::from_file(&fixture("llama").join("config.json")).unwrap();
    let model = Gpt::new(&cfg, Head::Scalar, Device::Cpu);
    let ids = reference("llama")["input_ids"].shallow_clone();
    let h = model
        .forward_hidden(
            Batch {
                input_ids: &ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let r = model.scalar(&h).unwrap();
    assert_eq!(r.size(), ids.size());
    r.sum(Kind::Float).backward();
    for (pname, var) in model.vs.variables() {
        if pname == "score.bias" {
            // Not trained: it only centres rewards afterwards (pairwise losses cancel it).
            assert!(!var.requires_grad());
            continue;
        }
        let norm = f64::try_from(var.grad().norm()).unwrap();
        // lm_head is absent for an untied scalar-head model; everything else must learn.
        assert!(norm > 0.0, "{pname}: zero gradient from the scalar head");
    }
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let again = Gpt::load(dir.path(), Head::Scalar, Device::Cpu).unwrap();
    let h2 = again
        .forward_hidden(
            Batch {
                input_ids: &ids,
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    assert_eq!(
        f64::try_from((again.scalar(&h2).unwrap() - r).abs().max()).unwrap(),
        0.0
    );
}
