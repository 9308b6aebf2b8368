//! Logit parity with transformers (fixtures from `scripts/reference/model_fixtures.py`): plain
//! batch, left-padded batch, KV-cache decoding against the full forward, greedy generation, and
//! a save/load round trip that keeps tensor names and values.

mod common;

use common::{FAMILIES, fixture, max_abs_diff, reference};
use rlhf_model::sample::{GenerateConfig, generate};
use rlhf_model::{Batch, Gpt, Head};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn load(name: &str) -> Gpt {
    Gpt::load(&fixture(name), Head::Lm, Device::Cpu).expect("load fixture model")
}

#[test]
fn logits_match_transformers_unpadded() {
    unpadded_case();
    let _g = tch::no_grad_guard(); // the decode kernel's path, where it applies
    unpadded_case();
}

fn unpadded_case() {
    for name in FAMILIES {
        let (model, r) = (load(name), reference(name));
        let ids = &r["input_ids"];
        let logits = model
            .forward(
                Batch {
                    input_ids: ids,
                    attention_mask: None,
                },
                None,
            )
            .unwrap();
        let d = max_abs_diff(&logits, &r["logits"]);
        eprintln!("{name}: unpadded max |dlogit| = {d:e}");
        assert!(d <= TOL, "{name}: max |dlogit| = {d:e}");
    }
}

#[test]
fn logits_match_transformers_left_padded() {
    for name in FAMILIES {
        let (model, r) = (load(name), reference(name));
        let (ids, mask) = (&r["padded_ids"], &r["padded_mask"]);
        let batch = Batch {
            input_ids: ids,
            attention_mask: Some(mask),
        };
        let logits = model.forward(batch, None).unwrap();
        assert!(
            f64::try_from(logits.isnan().any()).unwrap() == 0.0,
            "{name}: NaN in padding"
        );
        // Only real positions are defined; padded ones are whatever each library leaves there.
        let keep = mask.to_kind(Kind::Bool).unsqueeze(-1);
        let ours = logits.masked_fill(&keep.logical_not(), 0.0);
        let theirs = r["padded_logits"].masked_fill(&keep.logical_not(), 0.0);
        let d = max_abs_diff(&ours, &theirs);
        eprintln!("{name}: left-padded max |dlogit| = {d:e}");
        assert!(d <= TOL, "{name}: padded max |dlogit| = {d:e}");
    }
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    kv_cache_case();
    // Without autograd (as in sampling), few-row products go through the decode kernel
    // (`rlhf_model::skinny`) instead of libtorch's matmul: the same tolerance holds.
    let _g = tch::no_grad_guard();
    kv_cache_case();
}

fn kv_cache_case() {
    for name in FAMILIES {
        let (model, r) = (load(name), reference(name));
        let (ids, mask, generated) = (&r["padded_ids"], &r["padded_mask"], &r["generated"]);
        let full_ids = Tensor::cat(&[ids, generated], 1);
        let full_mask = Tensor::cat(&[mask, &generated.ones_like()], 1);
        let batch = Batch {
            input_ids: &full_ids,
            attention_mask: Some(&full_mask),
        };
        let full = model.forward(batch, None).unwrap();
        let p = ids.size()[1];
        let mut cache = model.new_cache(3, full_ids.size()[1]);
        let batch = Batch {
            input_ids: ids,
            attention_mask: Some(mask),
        };
        let first = model.forward(batch, Some(&mut cache)).unwrap();
        let d0 = max_abs_diff(&first.select(1, p - 1), &full.select(1, p - 1));
        assert!(d0 <= TOL, "{name}: prompt step differs by {d0:e}");
        // Mixed step sizes: two tokens at once, then one at a time.
        let mut t = 0;
        while t < generated.size()[1] {
            let n = if t == 0 { 2 } else { 1 };
            let step = generated.narrow(1, t, n);
            let out = model.forward(
                Batch {
                    input_ids: &step,
                    attention_mask: None,
                },
                Some(&mut cache),
            );
            let out = out.unwrap();
            let d = max_abs_diff(&out, &full.narrow(1, p + t, n));
            assert!(d <= TOL, "{name}: cached step {t} differs by {d:e}");
            t += n;
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in FAMILIES {
        let (model, r) = (load(name), reference(name));
        let (ids, mask) = (&r["padded_ids"], &r["padded_mask"]);
        let prompts: Vec<Vec<i64>> = (0..3)
            .map(|i| {
                let row = Vec::<i64>::try_from(&ids.get(i)).unwrap();
                let m = Vec::<i64>::try_from(&mask.get(i)).unwrap();
                row.into_iter()
                    .zip(m)
                    .filter(|(_, m)| *m == 1)
                    .map(|(t, _)| t)
                    .collect()
            })
            .collect();
        let cfg = GenerateConfig {
            max_new_tokens: 10,
            ..Default::default()
        };
        let out = generate(&model, &prompts, &cfg, |_, _| false).unwrap();
        for (i, g) in out.iter().enumerate() {
            let expected = Vec::<i64>::try_from(&r["generated"].get(i as i64)).unwrap();
            assert_eq!(g.token_ids, expected, "{name}: row {i}");
            assert!(g.logprobs.iter().all(|&lp| lp <= 0.0 && lp.is_finite()));
        }
    }
}

#[test]
fn save_and_reload_round_trips_names_and_values() {
    for name in FAMILIES {
        let model = load(name);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let names = |p: std::path::PathBuf| {
            let mut v: Vec<String> = Tensor::read_safetensors(p)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(dir.path().join("model.safetensors")),
            names(fixture(name).join("model.safetensors")),
            "{name}: tensor names changed in the round trip"
        );
        let again = Gpt::load(dir.path(), Head::Lm, Device::Cpu).unwrap();
        let ids = &reference(name)["input_ids"];
        let a = model
            .forward(
                Batch {
                    input_ids: ids,
                    attention_mask: None,
                },
                None,
            )
            .unwrap();
        let b = again
            .forward(
                Batch {
                    input_ids: ids,
                    attention_mask: None,
                },
                None,
            )
            .unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
}

/// `forward_hidden_window` (the last layer on a window of rows only) gives transformers' logits
/// at those rows, padded or not, and the same parameter gradients as narrowing the full pass.
#[test]
fn a_window_of_positions_matches_the_full_forward() {
    for name in FAMILIES {
        let (model, r) = (load(name), reference(name));
        let t = r["input_ids"].size()[1];
        for (from, n) in [(0, t), (1, t - 2), (t - 1, 1)] {
            let batch = Batch {
                input_ids: &r["input_ids"],
                attention_mask: None,
            };
            let hidden = model.forward_hidden_window(batch, from, n).unwrap();
            let logits = model.lm_logits(&hidden).unwrap();
            let d = max_abs_diff(&logits, &r["logits"].narrow(1, from, n));
            assert!(d <= TOL, "{name} window {from}+{n}: max |dlogit| = {d:e}");
        }
        // Left padding: the window's rows of the padded pass, and the same gradients.
        let (ids, mask) = (&r["padded_ids"], &r["padded_mask"]);
        let batch = Batch {
            input_ids: ids,
            attention_mask: Some(mask),
        };
        let t = ids.size()[1];
        let (from, n) = (t / 2, t - t / 2 - 1);
        let grads = |hidden: Tensor| {
            for (_, mut v) in model.vs.variables() {
                v.zero_grad();
            }
            let loss = model
                .lm_logits(&hidden)
                .unwrap()
                .pow_tensor_scalar(2)
                .sum(Kind::Float);
            loss.backward();
            let mut named = model.vs.variables().into_iter().collect::<Vec<_>>();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            (
                hidden.detach(),
                named
                    .into_iter()
                    .map(|(k, v)| (k, v.grad().copy()))
                    .collect::<Vec<_>>(),
            )
        };
        let (full, g_full) = grads(
            model
                .forward_hidden(batch, None)
                .unwrap()
                .narrow(1, from, n),
        );
        let (win, g_win) = grads(model.forward_hidden_window(batch, from, n).unwrap());
        let d = max_abs_diff(&win, &full);
        assert!(d <= 1e-5, "{name} padded window: max |dhidden| = {d:e}");
        assert_eq!(g_full.len(), g_win.len());
        for ((k, a), (_, b)) in g_full.iter().zip(&g_win) {
            let scale = f64::try_from(a.abs().max()).unwrap().max(1e-6);
            let d = max_abs_diff(a, b) / scale;
            assert!(
                d <= 1e-4,
                "{name}: gradient of {k} differs by {d:e} (relative)"
            );
        }
        // A window outside the input is an error, not a libtorch abort.
        let err = model.forward_hidden_window(batch, t - 1, 2).unwrap_err();
        assert!(err.to_string().contains("not inside"), "{err}");
    }
}
