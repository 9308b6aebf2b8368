//! `rlhf experiment`: the CLI loads the typed config (with --set over the command's own
//! defaults), runs the row at toy size, prints the table and writes the report files.

mod common;

use common::{rlhf, stderr};

#[test]
fn format_row_at_toy_size_prints_and_writes_its_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("e4");
    let o = rlhf(&[
        "experiment",
        "format",
        "--seeds",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "sizes=[16, 32]",
        "--set",
        "test_problems=8",
        "--set",
        "trainer.max_steps=2",
        "--set",
        "model.hidden=32",
        "--set",
        "model.layers=1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("# E4") && stdout.contains("| reversed |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("N = 32") && stdout.contains("seeds 0, 1"),
        "{stdout}"
    );
    // Not a terminal: one line per phase and the per-run results, instead of bars.
    let err = stderr(&o);
    assert!(err.contains("seed 1 (2/2): scratchpad N=32 ..."), "{err}");
    assert!(err.contains("accuracy"), "{err}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    // --set trainer.max_steps kept the command's own trainer defaults (batch 64, not 8).
    let tokens = results[0]["runs"][0]["train"]["tokens"].as_u64().unwrap();
    assert!(
        tokens >= 2 * 16 * 8,
        "batch of 16 (all of N=16) rows per step: {tokens}"
    );
    assert!(out.join("e4_accuracy_vs_n.png").exists());
}

#[test]
fn experiment_rejects_unknown_config_keys_and_zero_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x");
    let o = rlhf(&[
        "experiment",
        "cot",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "trainer.lrr=1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("trainer.lrr"), "{}", stderr(&o));
    let o = rlhf(&[
        "experiment",
        "lmsi",
        "--seeds",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--seeds must be at least 1"),
        "{}",
        stderr(&o)
    );
}
