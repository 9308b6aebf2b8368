//! SFT, reward model and PPO through the binary on tiny random models: PPO runs, resumes
//! exactly, and refuses bad inputs; SFT and reward data errors name file:line and field; the
//! whole demo at toy size.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{CORPUS, rlhf, stderr};
use serde_json::json;

const PROMPT: &str =
    "Jane has 12 flowers. She gives 2 to her mom. How many flowers does she have left?";

/// Asserts exit 1, no panic, and every needle in stderr.
fn assert_fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

/// A tiny random llama checkpoint (LM head, seed 0).
fn checkpoint(dir: &Path, vocab: usize, context: i64) {
    common::tiny_checkpoint(dir, vocab, context, 0);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SFT dir (a random checkpoint), a reward model trained from it, and a prompts file.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    policy: PathBuf,
    rm: PathBuf,
    prompts: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let policy = root.join("sft");
    checkpoint(&policy, 300, 128);
    let rankings = root.join("rankings.jsonl");
    // Twelve prompts: rankings of one prompt with the same responses would be pooled into one.
    let lines: Vec<String> = (0..12)
        .map(|i| {
            json!({ "prompt": format!("{PROMPT} ({i})"), "responses": ["The answer is 10.",
                "The answer is 8.", "She has 9.", "10"], "ranking": [0, 3, 2, 1] })
            .to_string()
        })
        .collect();
    std::fs::write(&rankings, lines.join("\n")).unwrap();
    let rm = root.join("rm");
    let r = rlhf(&[
        "reward",
        "--model",
        s(&policy),
        "--data",
        s(&rankings),
        "--out",
        s(&rm),
        "--set",
        "trainer.batch_size=2",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let prompts = root.join("prompts.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|i| json!({ "prompt": format!("{PROMPT} ({i})") }).to_string())
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    Setup {
        _tmp: tmp,
        root,
        policy,
        rm,
        prompts,
    }
}

const SMALL: [&str; 12] = [
    "--set",
    "rollout_batch=4",
    "--set",
    "minibatches=2",
    "--set",
    "max_new_tokens=8",
    "--set",
    "eval_every=0",
    "--set",
    "ppo_epochs=2",
    "--set",
    "lr=1e-3",
];

fn ppo(st: &Setup, out: &Path, extra: &[&str]) -> Output {
    let base = [
        "ppo",
        "--policy",
        s(&st.policy),
        "--reward",
        s(&st.rm),
        "--prompts",
        s(&st.prompts),
        "--out",
        s(out),
    ];
    rlhf(&[&base[..], &SMALL[..], extra].concat())
}

fn tensor_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn ppo_trains_logs_and_resumes_exactly() {
    let st = setup();
    let full = st.root.join("ppo-full");
    let o = ppo(&st, &full, &["--set", "iterations=2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every iteration logs the quantities the issue asks for, all finite.
    let log = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "rm_score",
        "kl",
        "entropy",
        "clip_fraction",
        "value_loss",
        "approx_kl",
        "response_len",
        "time/rollout_s",
        "time/update_s",
        "kl_coef",
    ] {
        for l in &lines {
            let v = l[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{key} = {v} in {l}");
        }
    }
    // The first rollout comes from the unchanged policy: KL to the reference is exactly 0;
    // after one update it is not.
    assert_eq!(lines[0]["kl"].as_f64(), Some(0.0));
    assert!(lines[1]["kl"].as_f64().unwrap().abs() > 0.0);
    // The policy moved; the reference (the SFT dir) did not.
    let before = tensor_bytes(&st.policy.join("model.safetensors"));
    let after = tensor_bytes(&full.join("model.safetensors"));
    assert_eq!(before.len(), after.len());
    assert!(before.iter().zip(&after).any(|(a, b)| a != b));
    assert!(full.join("value/model.safetensors").exists());

    // One iteration, then resume for the second: the same weights, bit for bit.
    let split = st.root.join("ppo-split");
    let o = ppo(
        &st,
        &split,
        &["--set", "iterations=2", "--set", "checkpoint_every=1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Simulate a crash after iteration 1: drop the final export and the last checkpoint.
    std::fs::remove_dir_all(split.join("checkpoints/step-00000002")).unwrap();
    std::fs::remove_file(split.join("model.safetensors")).unwrap();
    let o = ppo(&st, &split, &["--set", "iterations=2", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        tensor_bytes(&full.join("model.safetensors")),
        tensor_bytes(&split.join("model.safetensors")),
        "resumed run differs from the uninterrupted one"
    );
    let log2 = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(log2.lines().count(), 2, "{log2}");
    // A fresh run into a folder with checkpoints is refused rather than mixed.
    assert_fails(&ppo(&st, &split, &["--set", "iterations=2"]), &["--resume"]);

    // The run folder records its resolved configuration, like every other stage's, and a
    // resume must match it (more iterations are fine, another learning rate is not) and
    // start from the same models; a refused resume leaves the folder as it was.
    let toml = std::fs::read_to_string(split.join("config.toml")).unwrap();
    assert!(
        toml.contains("rollout_batch = 4") && toml.contains("kl_coef"),
        "{toml}"
    );
    let o = ppo(
        &st,
        &split,
        &["--set", "iterations=3", "--set", "lr=5e-4", "--resume"],
    );
    assert_fails(&o, &["another configuration", "lr 0.001 vs 0.0005"]);
    let other = st.root.join("other-sft");
    common::tiny_checkpoint(&other, 300, 128, 1);
    let base = [
        "ppo",
        "--policy",
        s(&other),
        "--reward",
        s(&st.rm),
        "--prompts",
        s(&st.prompts),
        "--out",
        s(&split),
        "--set",
        "iterations=3",
        "--resume",
    ];
    let o = rlhf(&[&base[..], &SMALL[..]].concat());
    assert_fails(&o, &["another policy", "other-sft"]);
    assert_eq!(
        std::fs::read_to_string(split.join("config.toml")).unwrap(),
        toml
    );
    assert!(split.join("checkpoints/step-00000001").exists());
}

#[test]
fn ppo_ptx_reports_the_pretraining_loss() {
    let st = setup();
    let corpus = st.root.join("corpus.txt");
    std::fs::write(&corpus, vec![CORPUS; 40].join("\n\n")).unwrap();
    let out = st.root.join("ptx");
    let o = ppo(
        &st,
        &out,
        &[
            "--set",
            "iterations=1",
            "--ptx-data",
            s(&corpus),
            "--set",
            "ptx_seq_len=16",
            "--set",
            "ptx_batch=2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let l: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let ptx = l["ptx_loss"].as_f64().unwrap();
    // A random model's LM loss is near ln(vocab).
    assert!(ptx > 3.0 && ptx < 8.0, "{l}");
}

#[test]
fn ppo_refuses_a_reward_model_with_another_tokenizer() {
    let st = setup();
    let other = st.root.join("other");
    checkpoint(&other, 280, 128);
    let rankings = st.root.join("rankings.jsonl");
    let rm2 = st.root.join("rm2");
    let r = rlhf(&[
        "reward",
        "--model",
        s(&other),
        "--data",
        s(&rankings),
        "--out",
        s(&rm2),
        "--set",
        "trainer.batch_size=2",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let o = rlhf(&[
        "ppo",
        "--policy",
        s(&st.policy),
        "--reward",
        s(&rm2),
        "--prompts",
        s(&st.prompts),
        "--out",
        s(&st.root.join("x")),
    ]);
    assert_fails(&o, &["different tokenizer", "rm2"]);
}

#[test]
fn ppo_optimises_a_verifiable_reward_with_a_value_model_from_the_policy() {
    let st = setup();
    // Word problems with their answers: `--reward answer` scores 1 for a matching final number.
    let answers = st.root.join("answers.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|i| json!({ "prompt": format!("{PROMPT} ({i})"), "answer": "10" }).to_string())
        .collect();
    std::fs::write(&answers, lines.join("\n")).unwrap();
    let out = st.root.join("ppo-answer");
    let base = [
        "ppo",
        "--policy",
        s(&st.policy),
        "--reward",
        "answer",
        "--prompts",
        s(&answers),
        "--out",
        s(&out),
        "--set",
        "iterations=2",
        "--set",
        "checkpoint_every=1",
    ];
    let o = rlhf(&[&base[..], &SMALL[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for m in &lines {
        // A 0/1 reward per rollout, no reward model.
        let r = m["reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r) && (r * 4.0).fract() == 0.0, "{m}");
        assert!(m.get("rm_score").is_none(), "{m}");
    }
    // The value model has the policy's body (same shapes) and a scalar head.
    let value = tensor_bytes(&out.join("value/model.safetensors"));
    assert!(value.iter().any(|(n, _)| n.starts_with("score.")));
    // The run records which reward it optimised: a resume that switches to a reward model is
    // refused, and the same reward resumes.
    let rm = format!("rm:{}", s(&st.rm));
    let mut switched = [&base[..], &SMALL[..], &["--resume"]].concat();
    switched[4] = &rm;
    switched[10] = "iterations=3";
    assert_fails(&rlhf(&switched), &["another reward", "answer"]);
    switched[4] = "answer";
    let o = rlhf(&switched);
    assert!(o.status.success(), "{}", stderr(&o));
    // Without a file of answers, `answer` is refused with the file and line.
    let o = rlhf(&[
        "ppo",
        "--policy",
        s(&st.policy),
        "--reward",
        "answer",
        "--prompts",
        s(&st.prompts),
        "--out",
        s(&st.root.join("no-answers")),
    ]);
    assert_fails(&o, &["prompts.jsonl", "answer"]);
}

#[test]
fn ppo_refuses_prompts_longer_than_the_context() {
    let st = setup();
    let prompts = st.root.join("long.jsonl");
    let long = "Jane has 12 flowers. ".repeat(40);
    let text = format!(
        "{}\n\n{}\n",
        json!({ "prompt": "Tom buys 4 apples." }),
        json!({ "prompt": long })
    );
    std::fs::write(&prompts, text).unwrap();
    let o = rlhf(&[
        "ppo",
        "--policy",
        s(&st.policy),
        "--reward",
        s(&st.rm),
        "--prompts",
        s(&prompts),
        "--out",
        s(&st.root.join("x")),
    ]);
    assert_fails(&o, &["long.jsonl:3", "field 'prompt'", "context of 128"]);
}

#[test]
fn ppo_stops_on_a_broken_reward_model_and_keeps_the_checkpoint() {
    let st = setup();
    let out = st.root.join("ppo");
    let o = ppo(&st, &out, &["--set", "iterations=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("checkpoints/step-00000001");
    let saved = tensor_bytes(&ckpt.join("policy/model.safetensors"));
    // NaN into the reward model's head: the scores, hence the advantages, are NaN.
    let path = st.rm.join("model.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&path).unwrap();
    for (name, t) in &mut tensors {
        if name == "score.weight" {
            let _ = t.fill_(f64::NAN);
        }
    }
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
    // Resuming with the changed reward model is refused: it is another model than the run's.
    let o = ppo(&st, &out, &["--set", "iterations=3", "--resume"]);
    assert_fails(&o, &["another reward (", "rm, now"]);
    // A fresh run on it stops at the NaN before any update or checkpoint.
    let fresh = st.root.join("ppo-nan");
    let o = ppo(&st, &fresh, &["--set", "iterations=3"]);
    assert_fails(&o, &["NaN"]);
    assert!(!fresh.join("checkpoints").exists() || checkpoints_in(&fresh) == 0);
    assert_eq!(saved, tensor_bytes(&ckpt.join("policy/model.safetensors")));
    assert!(!out.join("checkpoints/step-00000002").exists());
}

fn checkpoints_in(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints")).map_or(0, |d| d.filter(|e| e.is_ok()).count())
}

// --- Issue C's bad inputs: each names file:line and the field. ---

fn reward_with(st: &Setup, name: &str, lines: &[serde_json::Value]) -> Output {
    let path = st.root.join(name);
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    rlhf(&[
        "reward",
        "--model",
        s(&st.policy),
        "--data",
        s(&path),
        "--out",
        s(&st.root.join("rm-bad")),
    ])
}

#[test]
fn reward_data_errors_name_file_line_and_field() {
    let st = setup();
    let ok = json!({ "prompt": PROMPT, "responses": ["a b", "c d", "e"], "ranking": [0, 1, 2] });
    let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
        (
            json!({ "prompt": PROMPT, "responses": ["only one"], "ranking": [0] }),
            vec!["bad.jsonl:2", "responses", "at least 2"],
        ),
        (
            json!({ "prompt": PROMPT, "responses": ["a", "b"], "ranking": [0, 2] }),
            vec!["bad.jsonl:2", "ranking", "out of range"],
        ),
        (
            json!({ "prompt": PROMPT, "responses": ["a", "b", "c"], "ranking": [0, 0, 1] }),
            vec!["bad.jsonl:2", "ranking", "twice"],
        ),
        (
            json!({ "prompt": PROMPT, "responses": ["a", ""], "ranking": [0, 1] }),
            vec!["bad.jsonl:2", "responses[1]", "non-empty"],
        ),
        (
            json!({ "responses": ["a", "b"], "ranking": [0, 1] }),
            vec!["bad.jsonl:2", "prompt"],
        ),
        (
            json!({ "prompt": PROMPT, "responses": ["a", "b"] }),
            vec!["bad.jsonl:2", "ranking"],
        ),
        (
            json!({ "prompt": PROMPT, "chosen": "a" }),
            vec!["bad.jsonl:2", "rejected"],
        ),
        (
            json!({ "prompt": PROMPT, "responses": ["a", "flowers ".repeat(200)], "ranking": [0, 1] }),
            vec!["bad.jsonl:2", "responses[1]", "context of 128"],
        ),
        (
            json!({ "prompt": "Jane has 12 flowers. ".repeat(60), "responses": ["a", "b"], "ranking": [0, 1] }),
            vec!["bad.jsonl:2", "field 'prompt'", "context of 128"],
        ),
    ];
    for (bad, needles) in cases {
        let o = reward_with(&st, "bad.jsonl", &[ok.clone(), bad.clone()]);
        assert_fails(&o, &needles);
    }
}

#[test]
fn sft_data_errors_name_file_line_and_field() {
    let st = setup();
    let ok = json!({ "prompt": PROMPT, "completion": "The answer is 10." });
    let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
        (
            json!({ "prompt": PROMPT, "completion": "" }),
            vec!["sft.jsonl:2", "completion", "non-empty"],
        ),
        (json!({ "completion": "x" }), vec!["sft.jsonl:2", "prompt"]),
        (
            json!({ "prompt": PROMPT }),
            vec!["sft.jsonl:2", "completion"],
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "hi" }] }),
            vec!["sft.jsonl:2", "messages[0].role", "assistant"],
        ),
        (
            json!({ "prompt": PROMPT, "completion": "flowers ".repeat(200) }),
            vec!["sft.jsonl:2", "field 'completion'", "context of 128"],
        ),
    ];
    for (bad, needles) in cases {
        let path = st.root.join("sft.jsonl");
        std::fs::write(&path, format!("{ok}\n{bad}\n")).unwrap();
        let o = rlhf(&[
            "sft",
            "--model",
            s(&st.policy),
            "--data",
            s(&path),
            "--out",
            s(&st.root.join("sft-bad")),
        ]);
        assert_fails(&o, &needles);
    }
}

/// The whole demo at toy size (a nano model, a few steps per stage, ~1 min on 2 cores): every
/// stage reports, and the labelers' agreement is counted over exactly the pairs of different
/// responses in its own samples.
#[test]
fn demo_runs_every_stage_and_measures_labeler_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = rlhf(&[
        "demo",
        "--preset",
        "nano",
        "--pretrain-steps",
        "20",
        "--sft-steps",
        "10",
        "--ppo-iterations",
        "1",
        "--prompts",
        "200",
        "--k",
        "4",
        "--eval-prompts",
        "16",
        "--eval-samples",
        "2",
        "--best-of",
        "2",
        "--best-of-prompts",
        "4",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## 4. Samples and rankings",
        "## 5. Reward model",
        "## 7. Evaluation",
        "## 8. Best-of-n",
    ] {
        assert!(
            report.contains(section),
            "missing {section:?} in:\n{report}"
        );
    }
    let samples = std::fs::read_to_string(out.join("samples.jsonl")).unwrap();
    let (mut prompts, mut pairs) = (0, 0);
    for line in samples.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let r: Vec<&str> = v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        prompts += 1;
        for i in 0..r.len() {
            pairs += (i + 1..r.len()).filter(|&j| r[i] != r[j]).count();
        }
    }
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("agreement.json")).unwrap())
            .unwrap();
    assert_eq!(a["prompts"], prompts, "{a}");
    assert_eq!(a["pairs"], pairs, "{a}");
    assert!(a["agreed"].as_u64().unwrap() <= pairs as u64, "{a}");
    assert!(report.contains(&format!("of {pairs} pairs")), "{report}");
    // --prompts sizes the world's prompts.jsonl (a prompt with fewer than 2 different
    // non-empty responses is skipped).
    assert!((150..=200).contains(&prompts), "{prompts} sampled prompts");
    // Two samples of each model per held-out prompt: 32 judged pairs over 16 prompts.
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-ppo/eval.json")).unwrap())
            .unwrap();
    assert_eq!(
        (e["n"].as_u64(), e["samples_per_prompt"].as_u64()),
        (Some(32), Some(2)),
        "{e}"
    );
    assert!(
        report.contains("2 sample(s) of each model per prompt"),
        "{report}"
    );
}

/// `--precision bf16`: the run says so, its first PPO ratio starts at 1 within a stated
/// tolerance, a resumed run equals the uninterrupted one bit for bit, and the products really
/// ran in bf16 (the weights differ from the fp32 run's).
#[test]
fn ppo_in_bf16_resumes_exactly_and_starts_its_ratio_at_one() {
    let st = setup();
    let run = |out: &Path, precision: &str, extra: &[&str]| {
        let o = ppo(
            &st,
            out,
            &[
                &["--precision", precision, "--set", "iterations=2"][..],
                extra,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let bf16 = st.root.join("ppo-bf16");
    let o = run(&bf16, "bf16", &[]);
    assert!(stderr(&o).contains("precision: bf16"), "{}", stderr(&o));
    let fp32 = st.root.join("ppo-fp32");
    let o = run(&fp32, "fp32", &[]);
    assert!(stderr(&o).contains("precision: fp32"), "{}", stderr(&o));
    let first_ratio = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["first_max_log_ratio"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    // fp32 recomputes the rollout's log-probs exactly up to summation order; bf16 products on
    // other batch shapes round differently, but the first ratio stays within e^±0.01 of 1.
    eprintln!(
        "first max |log ratio|: fp32 {:?}, bf16 {:?}",
        first_ratio(&fp32),
        first_ratio(&bf16)
    );
    for r in first_ratio(&fp32) {
        assert!(r < 1e-4, "fp32 first max |log ratio| {r}");
    }
    for r in first_ratio(&bf16) {
        assert!(r < 0.01, "bf16 first max |log ratio| {r}");
    }
    assert_ne!(
        tensor_bytes(&bf16.join("model.safetensors")),
        tensor_bytes(&fp32.join("model.safetensors")),
        "bf16 and fp32 runs ended bit-identical: the bf16 products did not run"
    );
    let split = st.root.join("ppo-bf16-split");
    run(&split, "bf16", &["--set", "checkpoint_every=1"]);
    std::fs::remove_dir_all(split.join("checkpoints/step-00000002")).unwrap();
    std::fs::remove_file(split.join("model.safetensors")).unwrap();
    run(&split, "bf16", &["--resume"]);
    assert_eq!(
        tensor_bytes(&bf16.join("model.safetensors")),
        tensor_bytes(&split.join("model.safetensors")),
        "a resumed bf16 run differs from the uninterrupted one"
    );
    // The checkpoints record the precision; resuming in another is refused, not mixed.
    let o = ppo(
        &st,
        &split,
        &["--precision", "fp32", "--set", "iterations=3", "--resume"],
    );
    assert_fails(
        &o,
        &["another configuration", "precision \"bf16\" vs \"fp32\""],
    );
}

#[test]
fn demo_starts_from_a_base_checkpoint_without_pretraining() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    common::tiny_checkpoint(&base, 300, 1024, 0);
    let out = dir.path().join("demo");
    let o = rlhf(&[
        "demo",
        "--base",
        s(&base),
        "--sft-steps",
        "4",
        "--prompts",
        "48",
        "--k",
        "3",
        "--ppo-iterations",
        "1",
        "--ppo-rollouts",
        "8",
        "--eval-prompts",
        "8",
        "--eval-samples",
        "1",
        "--best-of",
        "2",
        "--best-of-prompts",
        "4",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## 2. Base checkpoint"), "{report}");
    assert!(!report.contains("## 2. Pretraining"), "{report}");
    assert!(
        report.contains("SFT 2e-5, reward model 1e-5, PPO 1e-5; batches of 8"),
        "{report}"
    );
    assert!(
        !out.join("pretrained").exists(),
        "no pretraining with --base"
    );
    // The real-checkpoint defaults, overridden by the flags given: 8 rollouts per iteration.
    let ppo: serde_json::Value = toml::from_str::<toml::Value>(
        &std::fs::read_to_string(out.join("ppo/config.toml")).unwrap(),
    )
    .map(|t| serde_json::to_value(t).unwrap())
    .unwrap();
    assert_eq!(ppo["rollout_batch"], 8, "{ppo}");
    assert_eq!(ppo["lr"], 1e-5, "{ppo}");
    assert!(report.contains("| base |"), "{report}");
    // Pretraining flags do not apply.
    let o = rlhf(&[
        "demo",
        "--base",
        s(&base),
        "--pretrain-only",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(
        stderr(&o).contains("--pretrain-only and --pretrain-steps do not apply"),
        "{}",
        stderr(&o)
    );
}
