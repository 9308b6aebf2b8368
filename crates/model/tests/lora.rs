//! LoRA against PEFT (fixtures from `scripts/reference/lora_fixtures.py`): adapters made by PEFT
//! load here and give PEFT's logits (plain and left-padded batches, three families, three
//! settings: all-linear, GPT-2's Conv1D maps, rsLoRA); merging gives PEFT's merged logits; what
//! we save has PEFT's tensor names and loads back to the same logits; a fresh adapter changes
//! nothing; the base view shares the base weights; bad adapter files are refused by name.
//! (That PEFT loads what we save is `tests/python/test_lora_peft.py`.)

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use common::{FAMILIES, fixture, max_abs_diff, reference};
use rlhf_model::{Batch, Gpt, Head, LoraConfig};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn lora_reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixture(name).join("lora/lora_reference.safetensors");
    Tensor::read_safetensors(&path)
        .expect("lora reference fixture")
        .into_iter()
        .collect()
}

fn logits(model: &Gpt, r: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let plain = model
        .forward(
            Batch {
                input_ids: &r["input_ids"],
                attention_mask: None,
            },
            None,
        )
        .unwrap();
    let mask = &r["padded_mask"];
    let padded = model
        .forward(
            Batch {
                input_ids: &r["padded_ids"],
                attention_mask: Some(mask),
            },
            None,
        )
        .unwrap();
    // Only real positions are defined.
    let keep = mask.to_kind(Kind::Bool).unsqueeze(-1).logical_not();
    (plain, padded.masked_fill(&keep, 0.0))
}

fn masked(t: &Tensor, r: &HashMap<String, Tensor>) -> Tensor {
    let keep = r["padded_mask"]
        .to_kind(Kind::Bool)
        .unsqueeze(-1)
        .logical_not();
    t.masked_fill(&keep, 0.0)
}

#[test]
fn peft_adapters_give_peft_logits() {
    for name in FAMILIES {
        let (r, lr) = (reference(name), lora_reference(name));
        let model = Gpt::load(&fixture(name).join("lora"), Head::Lm, Device::Cpu).unwrap();
        assert!(model.adapter().is_some(), "{name}: adapter attached");
        for grad in [true, false] {
            // Without autograd the base products take the decode kernel where it applies.
            let _g = (!grad).then(tch::no_grad_guard);
            let (plain, padded) = logits(&model, &r);
            let d = max_abs_diff(&plain, &lr["logits"]);
            let dp = max_abs_diff(&padded, &masked(&lr["padded_logits"], &r));
            eprintln!("{name}: LoRA max |dlogit| {d:e}, left-padded {dp:e}");
            assert!(d <= TOL && dp <= TOL, "{name}: {d:e} / {dp:e}");
        }
        // The adapter matters: the base model's logits are far from these.
        let base = max_abs_diff(&r["logits"], &lr["logits"]);
        assert!(
            base > 100.0 * TOL,
            "{name}: the adapter changes little ({base:e})"
        );
    }
}

#[test]
fn merging_gives_peft_merged_logits() {
    for name in FAMILIES {
        let (r, lr) = (reference(name), lora_reference(name));
        let mut model = Gpt::load(&fixture(name).join("lora"), Head::Lm, Device::Cpu).unwrap();
        model.merge_adapter().unwrap();
        assert!(model.adapter().is_none());
        let (plain, _) = logits(&model, &r);
        let d = max_abs_diff(&plain, &lr["merged_logits"]);
        let du = max_abs_diff(&plain, &lr["logits"]);
        eprintln!("{name}: merged vs PEFT merged {d:e}, vs unmerged {du:e}");
        assert!(d <= TOL && du <= TOL, "{name}: {d:e} / {du:e}");
        // Merged weights train as a full model again.
        assert!(model.trainable_parameters().len() == model.vs.variables().len());
    }
}

fn tensor_names(file: &Path) -> BTreeSet<String> {
    Tensor::read_safetensors(file)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn saved_adapters_have_peft_names_and_load_back() {
    for name in FAMILIES {
        let r = reference(name);
        let src = fixture(name).join("lora");
        let model = Gpt::load(&src, Head::Lm, Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        assert!(
            !dir.path().join("config.json").exists(),
            "an adapter dir holds no full model"
        );
        assert_eq!(
            tensor_names(&dir.path().join("adapter_model.safetensors")),
            tensor_names(&src.join("adapter_model.safetensors")),
            "{name}: PEFT's tensor names"
        );
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["fan_in_fan_out"], name == "gpt2");
        // The base path was written as PEFT wrote it (".."), relative to the source adapter:
        // point the copy at the fixture itself.
        let mut cfg = cfg;
        cfg["base_model_name_or_path"] = fixture(name).display().to_string().into();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            serde_json::to_string(&cfg).unwrap(),
        )
        .unwrap();
        let again = Gpt::load(dir.path(), Head::Lm, Device::Cpu).unwrap();
        let (a, ap) = logits(&model, &r);
        let (b, bp) = logits(&again, &r);
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}");
        assert_eq!(max_abs_diff(&ap, &bp), 0.0, "{name}");
    }
}

#[test]
fn a_fresh_adapter_changes_nothing_and_trains_alone() {
    for name in FAMILIES {
        let r = reference(name);
        let mut model = Gpt::load(&fixture(name), Head::Lm, Device::Cpu).unwrap();
        let n_base = model.vs.variables().len();
        let cfg = LoraConfig {
            r: 2,
            ..Default::default()
        };
        model.add_lora(&cfg, None).unwrap();
        let (plain, _) = logits(&model, &r);
        assert!(max_abs_diff(&plain, &r["logits"]) <= TOL, "{name}");
        let trainable = model.trainable_parameters();
        let n_linear = model.linears().len();
        assert_eq!(
            trainable.len(),
            2 * n_linear,
            "{name}: A and B per linear map only"
        );
        assert!(trainable.iter().all(|(n, _)| n.contains(".lora_")));
        // A backward pass reaches the adapter (A gets no gradient while B is zero; B does) and
        // nothing of the base.
        let (out, _) = logits(&model, &r);
        out.square().mean(Kind::Float).backward();
        for (n, t) in &trainable {
            if n.ends_with("lora_B.weight") {
                assert!(t.grad().defined(), "{name}: {n} has no gradient");
            }
        }
        for (n, t) in model.vs.variables() {
            assert!(!t.grad().defined(), "{name}: frozen {n} got a gradient");
        }
        assert_eq!(
            model.vs.variables().len(),
            n_base,
            "no variable added to the base"
        );
    }
}

#[test]
fn the_base_view_shares_weights_and_drops_the_adapter() {
    for name in FAMILIES {
        let r = reference(name);
        let model = Gpt::load(&fixture(name).join("lora"), Head::Lm, Device::Cpu).unwrap();
        let view = model.base_view().unwrap();
        assert!(view.adapter().is_none());
        let (plain, _) = logits(&view, &r);
        assert!(
            max_abs_diff(&plain, &r["logits"]) <= TOL,
            "{name}: base logits"
        );
        let (ours, theirs) = (model.vs.variables(), view.vs.variables());
        assert_eq!(ours.len(), theirs.len());
        for (n, t) in &ours {
            assert_eq!(t.data_ptr(), theirs[n].data_ptr(), "{name}: {n} is copied");
        }
    }
}

#[test]
fn a_reward_adapter_keeps_its_own_head() {
    let name = "llama";
    let mut rm = Gpt::load_with_head(&fixture(name), Head::Scalar, Device::Cpu).unwrap();
    rm.add_lora(
        &LoraConfig {
            targets: vec!["q_proj".into(), "v_proj".into()],
            ..Default::default()
        },
        Some(fixture(name).display().to_string()),
    )
    .unwrap();
    let names: Vec<String> = rm
        .trainable_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"score.weight".to_string()), "{names:?}");
    assert_eq!(names.len(), 1 + 2 * 2 * 2, "{names:?}"); // head + (A, B) x 2 targets x 2 layers
    tch::no_grad(|| {
        let _ = rm.vs.variables()["score.weight"].shallow_clone().fill_(0.5);
    });
    let dir = tempfile::tempdir().unwrap();
    rm.save(dir.path()).unwrap();
    let files = tensor_names(&dir.path().join("adapter_model.safetensors"));
    assert!(files.contains("base_model.model.score.weight"), "{files:?}");
    let back = Gpt::load(dir.path(), Head::Scalar, Device::Cpu).unwrap();
    let w = &back.vs.variables()["score.weight"];
    assert_eq!(f64::try_from(w.mean(Kind::Float)).unwrap(), 0.5);
    // A value model on the reward model's body: its head is its own.
    let value = rm.base_view().unwrap();
    tch::no_grad(|| {
        let _ = value.vs.variables()["score.weight"]
            .shallow_clone()
            .fill_(-1.0);
    });
    assert_eq!(
        f64::try_from(rm.vs.variables()["score.weight"].mean(Kind::Float)).unwrap(),
        0.5
    );
    // An LM load of a reward adapter is refused: it carries a head.
    let err = Gpt::load(dir.path(), Head::Lm, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scalar head"), "{err}");
}

/// Copies the Llama fixture's adapter into a temp dir with `edit` applied to its config or
/// tensors, and returns the load error.
fn broken(edit: impl FnOnce(&Path, &mut serde_json::Value)) -> String {
    let src = fixture("llama").join("lora");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    cfg["base_model_name_or_path"] = fixture("llama").display().to_string().into();
    edit(dir.path(), &mut cfg);
    std::fs::write(
        dir.path().join("adapter_config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    match Gpt::load(dir.path(), Head::Lm, Device::Cpu) {
        Ok(_) => panic!("loaded a broken adapter"),
        Err(e) => e.to_string(),
    }
}

fn rewrite_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("adapter_model.safetensors");
    let mut named: Vec<(String, Tensor)> = Tensor::read_safetensors(&path).unwrap();
    edit(&mut named);
    Tensor::write_safetensors(&named, &path).unwrap();
}

#[test]
fn bad_adapters_are_refused_by_name() {
    let cases: Vec<(&str, String)> = vec![
        ("use_dora", broken(|_, c| c["use_dora"] = true.into())),
        (
            "regular expression",
            broken(|_, c| c["target_modules"] = ".*q_proj".into()),
        ),
        ("peft_type", broken(|_, c| c["peft_type"] = "IA3".into())),
        (
            "is not a directory here",
            broken(|_, c| c["base_model_name_or_path"] = "org/model-on-the-hub".into()),
        ),
        (
            "lora_B.weight': is missing",
            broken(|d, _| {
                rewrite_tensors(d, |t| {
                    t.retain(|(n, _)| {
                        n != "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
                    })
                })
            }),
        ),
        (
            "expected [",
            broken(|d, _| {
                rewrite_tensors(d, |t| {
                    for (n, x) in t.iter_mut() {
                        if n.ends_with("layers.1.mlp.up_proj.lora_A.weight") {
                            *x = Tensor::zeros([4, 7], (Kind::Float, Device::Cpu));
                        }
                    }
                })
            }),
        ),
        (
            "not a linear map of this model",
            broken(|d, _| {
                rewrite_tensors(d, |t| {
                    for (n, _) in t.iter_mut() {
                        *n = n.replace("layers.1.", "layers.7.");
                    }
                })
            }),
        ),
        (
            "no embedding or LM-head adapters",
            broken(|d, _| {
                rewrite_tensors(d, |t| {
                    t.push((
                        "base_model.model.lm_head.weight".into(),
                        Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
                    ))
                })
            }),
        ),
    ];
    for (want, got) in cases {
        assert!(got.contains(want), "expected {want:?} in: {got}");
        assert!(got.contains("adapter_"), "the error names the file: {got}");
    }
    // Settings: validated before anything is touched.
    let mut model = Gpt::load(&fixture("gpt2"), Head::Lm, Device::Cpu).unwrap();
    let err = model
        .add_lora(
            &LoraConfig {
                targets: vec!["q_proj".into()],
                ..Default::default()
            },
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("c_attn"), "lists the model's modules: {err}");
    for bad in [
        LoraConfig {
            r: 0,
            ..Default::default()
        },
        LoraConfig {
            alpha: f64::NAN,
            ..Default::default()
        },
        LoraConfig {
            dropout: 1.0,
            ..Default::default()
        },
        LoraConfig {
            targets: vec![],
            ..Default::default()
        },
    ] {
        assert!(model.add_lora(&bad, None).is_err(), "{bad:?}");
    }
}
