//! Data parallelism through the binary, over c10d's Gloo on loopback: `rlhf launch --nproc 2`
//! trains like one process on the same global batch (pretraining and SFT, loss by loss within
//! 1e-5 relative); a rank that is killed or hangs ends the other with a clear error well within
//! a minute; a resume with another number of processes is refused; unsupported commands and bad
//! launch variables are refused before any work.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{rlhf, rlhf_with_env, stderr, tiny_checkpoint};
use serde_json::{Value, json};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (step, loss, grad_norm) of every step, and (step, eval loss) of every evaluation.
type Trajectory = (Vec<(u64, f64, f64)>, Vec<(u64, f64)>);

/// A run's trajectory, from its metrics.jsonl.
fn trajectory(run: &Path) -> Trajectory {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = lines
        .iter()
        .filter(|v| v.get("lr").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect();
    let evals = lines
        .iter()
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("eval/loss")?.as_f64()?)))
        .collect();
    (steps, evals)
}

fn assert_same_trajectory(one: &Path, two: &Path, steps: u64) {
    let ((a, ea), (b, eb)) = (trajectory(one), trajectory(two));
    assert_eq!(a.len() as u64, steps, "one process logged {a:?}");
    assert_eq!(b.len() as u64, steps, "two ranks logged {b:?}");
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(y.abs());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            close(x.1, y.1) && close(x.2, y.2),
            "step {}: one process (loss {}, grad norm {}) vs two ranks (loss {}, grad norm {})",
            x.0,
            x.1,
            x.2,
            y.1,
            y.2
        );
    }
    // The losses moved: the comparison covers updates, not only the first forward pass.
    assert!(a[0].1 - a[a.len() - 1].1 > 0.05, "loss did not fall: {a:?}");
    assert_eq!(ea.len(), eb.len());
    for ((s1, x), (s2, y)) in ea.iter().zip(&eb) {
        assert_eq!(s1, s2);
        assert!(close(*x, *y), "eval loss at step {s1}: {x} vs {y}");
    }
}

/// A task-world data dir (corpus.txt) for pretraining.
fn world(root: &Path) -> PathBuf {
    let data = root.join("data");
    let o = rlhf(&[
        "data",
        "--out",
        s(&data),
        "--seed",
        "3",
        "--set",
        "corpus_docs=400",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    data
}

const PRETRAIN: [&str; 14] = [
    "--preset",
    "nano",
    "--set",
    "trainer.batch_size=8",
    "--set",
    "seq_len=32",
    "--set",
    "vocab_size=300",
    "--set",
    "trainer.max_steps=12",
    "--set",
    "trainer.eval_every=6",
    "--set",
    "trainer.checkpoint_every=6",
];

#[test]
fn pretraining_on_two_ranks_equals_one_process_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = world(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let o = rlhf(
        &[
            &["pretrain", "--data", s(&data), "--out", s(&one)][..],
            &PRETRAIN,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rlhf(
        &[
            &[
                "launch",
                "--nproc",
                "2",
                "--",
                "pretrain",
                "--data",
                s(&data),
                "--out",
                s(&two),
            ][..],
            &PRETRAIN,
        ]
        .concat(),
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("data parallel: `pretrain` on 2 ranks"),
        "{err}"
    );
    assert_same_trajectory(&one, &two, 12);
    // Rank 0 alone wrote: one metrics line per step and eval, checkpoints, the export.
    assert!(two.join("model.safetensors").exists() && two.join("tokenizer.json").exists());
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(two.join("checkpoints/step-00000012/rlhf.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["config"]["world_size"], 2, "{info}");

    // Resuming with another number of processes would split the data otherwise: refused.
    let more = [
        &["pretrain", "--data", s(&data), "--out", s(&two), "--resume"][..],
        &PRETRAIN,
        &["--set", "trainer.max_steps=14"],
    ]
    .concat();
    let o = rlhf(&more);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("world_size 2 vs 1"), "{err}");
    // With the same number it continues.
    let o = rlhf(&[&["launch", "--nproc", "2", "--"][..], &more].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(trajectory(&two).0.len(), 14);
}

/// Demonstrations of varied lengths for SFT on a tiny random checkpoint.
fn demos(path: &Path) {
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let prompt = format!("Jane has {i} flowers. How many are left?");
            let completion = format!("The answer is {}.{}", i + 2, " Jane".repeat(i % 5));
            json!({ "prompt": prompt, "completion": completion }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn sft_on_two_ranks_equals_one_process_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("base");
    tiny_checkpoint(&model, 300, 128, 0);
    let data = tmp.path().join("demos.jsonl");
    demos(&data);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let args = |out: &Path| {
        vec![
            "sft".to_string(),
            "--model".into(),
            s(&model).into(),
            "--data".into(),
            s(&data).into(),
            "--out".into(),
            s(out).into(),
            "--set".into(),
            "trainer.batch_size=4".into(),
            "--set".into(),
            "trainer.max_steps=8".into(),
            "--set".into(),
            "trainer.eval_every=4".into(),
            "--set".into(),
            "trainer.lr=3e-3".into(),
        ]
    };
    let a = args(&one);
    let o = rlhf(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let b = [
        vec![
            "launch".to_string(),
            "--nproc".into(),
            "2".into(),
            "--".into(),
        ],
        args(&two),
    ]
    .concat();
    let o = rlhf(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_trajectory(&one, &two, 8);
}

/// 24 prompts, each with 4 fully ranked responses (6 untied pairs per prompt, so every shard
/// carries the same number of pairs: the reward model's and DPO's per-batch means then weigh
/// alike on one process and on two).
fn rankings(path: &Path) {
    let lines: Vec<String> = (0..24)
        .map(|i| {
            json!({
                "prompt": format!("Tom has {i} apples and eats 1. How many are left?"),
                "responses": [format!("The answer is {}.", i - 1), format!("{}", i - 1),
                              format!("The answer is {i}."), "I do not know.".to_string()],
                "ranking": [0, 1, 2, 3],
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn reward_and_dpo_on_two_ranks_equal_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("base");
    tiny_checkpoint(&model, 300, 128, 0);
    let data = tmp.path().join("rankings.jsonl");
    rankings(&data);
    for (stage, steps) in [("reward", 10u64), ("dpo", 10)] {
        let run = |out: &Path, launch: bool| {
            let mut a: Vec<String> = Vec::new();
            if launch {
                a.extend(["launch", "--nproc", "2", "--"].map(String::from));
            }
            a.extend(
                [
                    stage,
                    "--model",
                    s(&model),
                    "--data",
                    s(&data),
                    "--out",
                    s(out),
                ]
                .map(String::from),
            );
            a.extend(
                [
                    "--set",
                    "trainer.batch_size=4",
                    "--set",
                    "epochs=2",
                    "--set",
                    "eval_fraction=0.1",
                ]
                .map(String::from),
            );
            a.extend(["--set", "trainer.lr=1e-3"].map(String::from));
            let o = rlhf(&a.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(o.status.success(), "{stage}: {}", stderr(&o));
        };
        let (one, two) = (
            tmp.path().join(format!("{stage}1")),
            tmp.path().join(format!("{stage}2")),
        );
        run(&one, false);
        run(&two, true);
        let ((a, _), (b, _)) = (trajectory(&one), trajectory(&two));
        assert_eq!(a.len() as u64, steps, "{stage}: {a:?}");
        assert_eq!(a.len(), b.len(), "{stage}");
        for (x, y) in a.iter().zip(&b) {
            let close = |p: f64, q: f64| (p - q).abs() <= 1e-5 * p.abs().max(q.abs()).max(1e-3);
            assert!(
                close(x.1, y.1) && close(x.2, y.2),
                "{stage} step {}: {x:?} vs {y:?}",
                x.0
            );
        }
        assert!(a[0].1 != a[a.len() - 1].1, "{stage}: the loss never moved");
    }
}

/// Starts rank `rank` of 2 of a long pretraining run by hand, as torchrun would.
fn start_rank(rank: usize, port: u16, data: &Path, out: &Path, timeout_s: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(["pretrain", "--data", s(data), "--out", s(out)])
        .args(["--preset", "nano", "--set", "trainer.batch_size=4"])
        .args(["--set", "seq_len=32", "--set", "vocab_size=300"])
        .args(["--set", "trainer.max_steps=1000000"])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("RLHF_DIST_TIMEOUT", timeout_s.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until rank 0 has logged `n` steps.
fn wait_for_steps(out: &Path, n: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < n {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` to exit by itself; returns its status, stderr and how long it took.
fn wait_exit(child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("rank did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = waiter.join().unwrap();
    (out.status.code(), stderr(&out), start.elapsed())
}

#[test]
fn a_killed_or_hung_rank_ends_the_other_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = world(tmp.path());

    // Killed: the survivor's next collective fails at once.
    let out = tmp.path().join("killed");
    let port = free_port();
    let rank0 = start_rank(0, port, &data, &out, 300);
    let mut rank1 = start_rank(1, port, &data, &out, 300);
    wait_for_steps(&out, 3);
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    let (code, err, took) = wait_exit(rank0, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("rank 0 of 2") && err.contains("failed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");

    // Hung (stopped, sockets open): the survivor gives up after RLHF_DIST_TIMEOUT.
    let out = tmp.path().join("hung");
    let port = free_port();
    let rank0 = start_rank(0, port, &data, &out, 5);
    let mut rank1 = start_rank(1, port, &data, &out, 5);
    wait_for_steps(&out, 3);
    unsafe { libc::kill(rank1.id() as i32, libc::SIGSTOP) };
    let (code, err, took) = wait_exit(rank0, Duration::from_secs(60));
    unsafe { libc::kill(rank1.id() as i32, libc::SIGKILL) };
    rank1.wait().unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("rank 0 of 2") && err.contains("failed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn launch_stops_the_others_when_one_rank_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let data = world(tmp.path());
    let out = tmp.path().join("run");
    let launch = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args([
            "--device",
            "cpu",
            "--threads",
            "1",
            "launch",
            "--nproc",
            "2",
            "--",
        ])
        .args(["pretrain", "--data", s(&data), "--out", s(&out)])
        .args(["--preset", "nano", "--set", "trainer.batch_size=4"])
        .args(["--set", "seq_len=32", "--set", "vocab_size=300"])
        .args(["--set", "trainer.max_steps=1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_steps(&out, 3);
    // Rank 1 is the launch's child whose environment says RANK=1.
    let pid = launch.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let rank1: i32 = children
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .find(|c: &i32| {
            std::fs::read(format!("/proc/{c}/environ"))
                .map(|e| e.split(|b| *b == 0).any(|v| v == b"RANK=1"))
                .unwrap_or(false)
        })
        .expect("rank 1 among the launch's children");
    unsafe { libc::kill(rank1, libc::SIGKILL) };
    let (code, err, took) = wait_exit(launch, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("rank 1 of 2 failed (killed by signal 9)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn launch_refuses_what_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny_checkpoint(&model, 300, 64, 0);
    // A command without data parallelism, through launch and under a launcher's variables.
    let o = rlhf(&[
        "launch",
        "--",
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`rlhf generate` does not run data-parallel"),
        "{}",
        stderr(&o)
    );
    let env = [
        ("WORLD_SIZE", "2"),
        ("RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "1"),
    ];
    let o = rlhf_with_env(&["generate", "--model", s(&model), "--prompt", "x"], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not run data-parallel, but WORLD_SIZE=2"),
        "{}",
        stderr(&o)
    );
    // Malformed launch variables name the variable.
    let o = rlhf_with_env(
        &["sft", "--model", s(&model), "--data", "x", "--out", "y"],
        &[("WORLD_SIZE", "2"), ("RANK", "5")],
    );
    assert!(
        stderr(&o).contains("RANK=5 is not below WORLD_SIZE=2"),
        "{}",
        stderr(&o)
    );
    // A batch that does not split evenly over the ranks.
    let data = tmp.path().join("demos.jsonl");
    demos(&data);
    let o = rlhf(&[
        "launch",
        "--nproc",
        "2",
        "--",
        "sft",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&tmp.path().join("odd")),
        "--set",
        "trainer.batch_size=3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a batch of 3 does not split evenly over 2 data-parallel ranks"),
        "{}",
        stderr(&o)
    );
}

/// The metrics lines of a PPO run.
fn iterations(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An SFT policy (a tiny random checkpoint), a reward model trained from it on [`rankings`],
/// and `n` prompts, under `root`.
fn rl_setup(root: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let policy = root.join("sft");
    tiny_checkpoint(&policy, 300, 128, 0);
    let data = root.join("rankings.jsonl");
    rankings(&data);
    let rm = root.join("rm");
    let o = rlhf(&[
        "reward",
        "--model",
        s(&policy),
        "--data",
        s(&data),
        "--out",
        s(&rm),
        "--set",
        "trainer.batch_size=4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let prompts = root.join("prompts.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| json!({ "prompt": format!("Tom has {i} apples. How many?") }).to_string())
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    (policy, rm, prompts)
}

#[test]
fn ppo_and_grpo_sample_from_rlhf_serve_and_hand_each_update_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (policy, rm, prompts) = rl_setup(tmp.path(), 8);
    let served = common::serve_with(&policy, &["--dynamic-adapters"]);
    let engine = format!("openai:{}", served.url);
    let ppo = |out: &Path, staleness: &str| {
        let o = rlhf(&[
            "ppo",
            "--policy",
            s(&policy),
            "--reward",
            s(&rm),
            "--prompts",
            s(&prompts),
            "--out",
            s(out),
            "--lora",
            "--rollout-engine",
            &engine,
            "--set",
            "iterations=3",
            "--set",
            "rollout_batch=4",
            "--set",
            "minibatches=2",
            "--set",
            "ppo_epochs=2",
            "--set",
            "max_new_tokens=8",
            "--set",
            "eval_every=0",
            "--set",
            "lr=0.05",
            "--set",
            &format!("rollout_staleness={staleness}"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        iterations(out)
    };
    // Every update reaches the server before the next rollout: it samples exactly the policy
    // the trainer holds, so the log-probs it reports equal the recomputed ones.
    let fresh = ppo(&tmp.path().join("fresh"), "0");
    assert_eq!(fresh.len(), 3);
    for (i, m) in fresh.iter().enumerate() {
        assert_eq!(m["rollout/served_version"], i as f64, "{m}");
        assert_eq!(m["rollout/staleness"], 0.0, "{m}");
        let gap = m["logprob_mismatch"].as_f64().unwrap();
        assert!(
            gap < 2e-3,
            "iteration {}: served vs trained log-probs differ by {gap}",
            i + 1
        );
    }
    // Allowed to lag one update, the server samples the previous policy every other
    // iteration, and the gap shows the policy the trainer holds has moved on.
    let stale = ppo(&tmp.path().join("stale"), "1");
    let versions: Vec<f64> = stale
        .iter()
        .map(|m| m["rollout/served_version"].as_f64().unwrap())
        .collect();
    assert_eq!(versions, [0.0, 0.0, 2.0]);
    let gap = stale[1]["logprob_mismatch"].as_f64().unwrap();
    assert!(
        gap > 1e-2,
        "a stale policy should sample other log-probs: {gap}"
    );
    // Only the adapter in use is kept.
    let kept: Vec<_> = std::fs::read_dir(tmp.path().join("fresh/rollout-adapters"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1);
    // GRPO too: G = 6 samples per prompt in one request each (n = 6), every update handed over.
    let g = tmp.path().join("grpo");
    let spec = format!("rm:{}", s(&rm));
    let o = rlhf(&[
        "grpo",
        "--model",
        s(&policy),
        "--prompts",
        s(&prompts),
        "--reward",
        &spec,
        "--out",
        s(&g),
        "--lora",
        "--rollout-engine",
        &engine,
        "--group",
        "6",
        "--set",
        "iterations=3",
        "--set",
        "prompts_per_iteration=4",
        "--set",
        "max_new_tokens=8",
        "--set",
        "lr=0.05",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = iterations(&g);
    let versions: Vec<f64> = lines
        .iter()
        .map(|m| m["rollout/served_version"].as_f64().unwrap())
        .collect();
    assert_eq!(versions, [0.0, 1.0, 2.0]);
    // The n choices of one prompt are distinct samples, not one sample repeated.
    assert!(
        lines
            .iter()
            .all(|m| m["frac_groups_tied"].as_f64().unwrap() < 1.0),
        "{lines:?}"
    );
}

#[test]
fn ppo_and_grpo_run_data_parallel_with_global_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let (policy, rm, prompts) = rl_setup(tmp.path(), 16);
    let out = tmp.path().join("ppo");
    let args = [
        "ppo",
        "--policy",
        s(&policy),
        "--reward",
        s(&rm),
        "--prompts",
        s(&prompts),
        "--out",
        s(&out),
        "--set",
        "rollout_batch=8",
        "--set",
        "minibatches=2",
        "--set",
        "max_new_tokens=8",
        "--set",
        "eval_every=0",
        "--set",
        "checkpoint_every=2",
    ];
    let o = rlhf(
        &[
            &["launch", "--nproc", "2", "--"][..],
            &args,
            &["--set", "iterations=3"],
        ]
        .concat(),
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("data parallel: `ppo` on 2 ranks"), "{err}");
    // One line per iteration, written once, with global means.
    let lines = iterations(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["iteration"], (i + 1) as f64);
        assert!(m["kl"].as_f64().unwrap().is_finite() && m["policy_loss"].as_f64().is_some());
    }
    assert!(out.join("adapter_config.json").exists() || out.join("model.safetensors").exists());
    // A resume must keep the number of processes; with it, the run continues.
    let more = [&args[..], &["--set", "iterations=4", "--resume"]].concat();
    let o = rlhf(&more);
    assert!(stderr(&o).contains("world_size 2 vs 1"), "{}", stderr(&o));
    let o = rlhf(&[&["launch", "--nproc", "2", "--"][..], &more].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(iterations(&out).len(), 4);
    // GRPO likewise: one metrics line per iteration, written once.
    let g = tmp.path().join("grpo");
    let rm_spec = format!("rm:{}", s(&rm));
    let o = rlhf(&[
        "launch",
        "--nproc",
        "2",
        "--",
        "grpo",
        "--model",
        s(&policy),
        "--prompts",
        s(&prompts),
        "--reward",
        &rm_spec,
        "--out",
        s(&g),
        "--group",
        "4",
        "--set",
        "iterations=2",
        "--set",
        "prompts_per_iteration=4",
        "--set",
        "max_new_tokens=8",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("data parallel: `grpo` on 2 ranks"), "{err}");
    assert_eq!(iterations(&g).len(), 2);
    assert!(g.join("summary.json").exists());
    // An external rollout engine is one process's.
    let fresh = tmp.path().join("engine");
    let mut args = args.to_vec();
    args[8] = s(&fresh);
    let o = rlhf(
        &[
            &["launch", "--nproc", "2", "--"][..],
            &args,
            &[
                "--lora",
                "--rollout-engine",
                "openai:http://127.0.0.1:9",
                "--set",
                "iterations=1",
            ],
        ]
        .concat(),
    );
    assert!(
        stderr(&o).contains("--rollout-engine does not run data-parallel"),
        "{}",
        stderr(&o)
    );
}
