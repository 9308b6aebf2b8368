//! GRPO's resume: a run interrupted after a checkpoint and resumed ends bit for bit where an
//! uninterrupted one does. Its own test binary: sampling draws from libtorch's global generator,
//! which tests running in other threads of one process would share.

mod common;

use rlhf_train::grpo::GrpoConfig;

#[test]
fn a_resumed_run_ends_where_a_straight_one_does() {
    use rlhf_train::grpo::{GrpoInputs, grpo};
    use rlhf_train::{Resume, checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let (model, prompts) = common::tiny_run_inputs(dir.path(), 8);
    let cfg = GrpoConfig {
        iterations: 6,
        prompts_per_iteration: 2,
        group: 4,
        lr: 1e-2,
        max_new_tokens: 8,
        checkpoint_every: 2,
        keep_checkpoints: 0,
        ..Default::default()
    };
    let inputs = |out: &std::path::Path| GrpoInputs {
        rollout_engine: None,
        policy: model.clone(),
        prompts: prompts.clone(),
        reward: Box::new(common::Short),
        eval_prompts: None,
        out: out.to_path_buf(),
        progress: false,
    };
    let straight = dir.path().join("straight");
    grpo(&inputs(&straight), &cfg, Resume::No, tch::Device::Cpu).unwrap();
    // A crash after iteration 4's checkpoint: the last checkpoint and the export are lost.
    let resumed = dir.path().join("resumed");
    let copy = std::process::Command::new("cp")
        .args(["-r", straight.to_str().unwrap(), resumed.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::remove_dir_all(checkpoint::checkpoints_dir(&resumed).join("step-00000006")).unwrap();
    std::fs::remove_file(resumed.join("model.safetensors")).unwrap();
    grpo(&inputs(&resumed), &cfg, Resume::Latest, tch::Device::Cpu).unwrap();
    let load = |d: &std::path::Path| {
        let mut v = tch::Tensor::read_safetensors(d.join("model.safetensors")).unwrap();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    for ((name, a), (_, b)) in load(&straight).iter().zip(load(&resumed)) {
        assert!(a.equal(&b), "{name} differs after resume");
    }
    let steps: Vec<u64> = std::fs::read_to_string(resumed.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_f64()
                .unwrap() as u64
        })
        .collect();
    assert_eq!(
        steps,
        (1..=6).collect::<Vec<_>>(),
        "iterations 5 and 6 logged once"
    );
}
