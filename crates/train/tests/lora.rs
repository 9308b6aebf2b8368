//! LoRA through the trainer: only the adapter moves (every base weight bit-for-bit unchanged,
//! every adapter matrix changed), a resumed LoRA run ends bit-for-bit where an uninterrupted
//! one does, and a checkpoint of another kind (full weights vs adapter) is refused on resume.

mod common;

use common::{Lm, config, data, recorder, run};
use rand::RngCore;
use rlhf_model::LoraConfig;
use rlhf_train::{DataRng, Resume, Trainer};
use tch::Tensor;

/// The tiny model of seed 0 (the run's input: a LoRA checkpoint does not hold it) with an
/// adapter whose A is drawn in Rust from `seed` (libtorch's generator is shared with tests in
/// other threads).
fn lora_lm(seed: u64) -> Lm {
    let mut lm = Lm::new(0, 32);
    let cfg = LoraConfig {
        enabled: true,
        r: 4,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    };
    lm.gpt.add_lora(&cfg, Some("base".into())).expect("adapter");
    for (i, (name, t)) in lm.gpt.trainable_parameters().iter().enumerate() {
        if name.ends_with("lora_A.weight") {
            let mut rng = DataRng::new(seed, 1000 + i as u64);
            let v: Vec<f32> = (0..t.numel())
                .map(|_| rng.next_u32() as f32 / u32::MAX as f32 * 0.2 - 0.1)
                .collect();
            let src = Tensor::from_slice(&v).view(t.size().as_slice());
            tch::no_grad(|| t.shallow_clone().copy_(&src));
        }
    }
    lm
}

fn copied(params: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    params
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

#[test]
fn only_the_adapter_moves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lm = lora_lm(0);
    let base_before = lm.snapshot();
    let adapter_before = copied(lm.gpt.trainable_parameters());
    assert_eq!(
        adapter_before.len(),
        2 * 3 * 2,
        "A and B x 3 targets x 2 layers"
    );
    let mut trainer = Trainer::new(config(), run(&tmp.path().join("r"), Resume::No)).unwrap();
    trainer.fit(&mut lm, &mut data()).expect("run");
    for ((name, before), (_, after)) in base_before.iter().zip(lm.snapshot()) {
        assert!(before.equal(&after), "frozen {name} changed");
    }
    let after = lm.gpt.trainable_parameters();
    for ((name, before), (_, after)) in adapter_before.iter().zip(&after) {
        let moved = f64::try_from((before - after).abs().max()).unwrap();
        assert!(moved > 0.0, "{name} did not change");
    }
    // The saved model is the adapter alone.
    let out = tmp.path().join("out");
    lm.gpt.save(&out).unwrap();
    assert!(out.join("adapter_model.safetensors").is_file());
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn a_resumed_lora_run_ends_bit_for_bit_where_a_straight_one_does() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lm = lora_lm(0);
    let mut trainer =
        Trainer::new(config(), run(&tmp.path().join("straight"), Resume::No)).unwrap();
    let straight = recorder(&mut trainer, None);
    trainer.fit(&mut lm, &mut data()).expect("straight run");
    let final_adapter = copied(lm.gpt.trainable_parameters());

    // Interrupted at step 6, after the step-4 checkpoint.
    let dir = tmp.path().join("resumed");
    let mut lm = lora_lm(0);
    let mut trainer = Trainer::new(config(), run(&dir, Resume::No)).unwrap();
    let _first = recorder(&mut trainer, Some(6));
    assert!(trainer.fit(&mut lm, &mut data()).is_err());
    // Another adapter initialisation: the checkpoint must restore it.
    let mut lm = lora_lm(5);
    let mut trainer = Trainer::new(config(), run(&dir, Resume::Latest)).unwrap();
    let second = recorder(&mut trainer, None);
    trainer.fit(&mut lm, &mut data()).expect("resumed run");
    assert_eq!(
        second.borrow()[..],
        straight.borrow()[4..],
        "losses after resume"
    );
    let resumed = lm.gpt.trainable_parameters();
    for ((name, a), (_, b)) in final_adapter.iter().zip(&resumed) {
        assert!(a.equal(b), "{name} differs after resume");
    }

    // A full-weight run cannot resume from the adapter checkpoints, nor the other way round.
    let mut full = Lm::new(0, 32);
    let mut trainer = Trainer::new(config(), run(&dir, Resume::Latest)).unwrap();
    let err = trainer.fit(&mut full, &mut data()).unwrap_err().to_string();
    assert!(err.contains("LoRA adapter"), "{err}");
    let full_dir = tmp.path().join("straight-full");
    let mut full = Lm::new(0, 32);
    let mut trainer = Trainer::new(config(), run(&full_dir, Resume::No)).unwrap();
    trainer.fit(&mut full, &mut data()).expect("full run");
    let mut lm = lora_lm(0);
    let mut trainer = Trainer::new(config(), run(&full_dir, Resume::Latest)).unwrap();
    let err = trainer.fit(&mut lm, &mut data()).unwrap_err().to_string();
    assert!(err.contains("full weights"), "{err}");
}
