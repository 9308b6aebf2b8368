//! `rlhf browse index` and `rlhf browse` end to end: a folder of documents becomes a BM25 index,
//! a (random, tiny) policy browses it and the trajectory, answer and citation check are printed;
//! a folder that is not an index is refused with a message saying how to make one.

mod common;

use common::{rlhf, stderr, tiny_checkpoint};

#[test]
fn browse_indexes_a_folder_and_runs_a_policy_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("more")).unwrap();
    std::fs::write(
        docs.join("velmora.md"),
        "# Velmora\nThe river Tasko flows through Velmora.\n",
    )
    .unwrap();
    std::fs::write(docs.join("more/kasto.txt"), "Kasto trades with Velmora.\n").unwrap();
    let index = dir.path().join("index");
    let o = rlhf(&[
        "browse",
        "index",
        docs.to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("indexed 2 documents"), "{}", stderr(&o));
    // Indexing into the same folder again is refused.
    let again = rlhf(&[
        "browse",
        "index",
        docs.to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    let model = dir.path().join("model");
    tiny_checkpoint(&model, 300, 256, 0);
    let args = |idx: &str| {
        vec![
            "browse".to_string(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--index".into(),
            idx.into(),
            "--question".into(),
            "Which river flows through Velmora?".into(),
            "--max-actions".into(),
            "3".into(),
            "--max-tokens".into(),
            "8".into(),
            "--temperature".into(),
            "1".into(),
        ]
    };
    let a = args(index.to_str().unwrap());
    let o = rlhf(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("── step 1 ──\nQuestion: Which river flows through Velmora?\nQuotes: none\nPast: none\nPage: blank\nAction:"), "{out}");
    // An untrained policy writes noise: at most 3 commands, then the answer and the check.
    assert!(!out.contains("── step 4 ──"), "{out}");
    assert!(
        out.contains("── answer ──\nQuestion: Which river flows through Velmora?\n"),
        "{out}"
    );
    assert!(
        out.contains("── citations ──") && out.contains("answer supported by its quotes: no"),
        "{out}"
    );

    let bad = args(docs.to_str().unwrap());
    let o = rlhf(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rlhf browse index"), "{}", stderr(&o));
    let none = rlhf(&["browse", "--index", index.to_str().unwrap()]);
    assert!(!none.status.success());
    assert!(stderr(&none).contains("--model"), "{}", stderr(&none));
}
