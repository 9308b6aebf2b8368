//! The `rlhf` binary end to end: `generate` (text and JSON), `nll` against an unbatched
//! computation, `import` of GGUF and HF dirs, and bad inputs that must exit 1 with a clear
//! message (never a panic, whose exit code would be 101).

#[path = "../../gguf/tests/common/mod.rs"]
mod gguf_builder;

use std::path::Path;
use std::process::{Command, Output};

use gguf_builder::GgufBuilder;
use rlhf_model::{Gpt, Head, ModelConfig, Pretrained, PromptFormat};
use rlhf_tokenizer::{BpeConfig, train_bpe};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const CORPUS: &str = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. \
How many flowers does she have left? The answer is 7. Sort the list: 3, 1, 2. \
Answer in exactly three words. Tom buys 4 apples and eats 1. The answer is 3.";

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .output()
        .expect("run rlhf")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny random llama checkpoint with a trained BPE tokenizer; `vocab` overrides the model's
/// embedding rows (to build a mismatched pair).
fn checkpoint(dir: &Path, vocab: Option<i64>) {
    let texts = std::iter::repeat_n(CORPUS, 20);
    let tok = train_bpe(
        texts,
        &BpeConfig {
            vocab_size: 300,
            ..Default::default()
        },
    )
    .unwrap();
    tok.save(dir).unwrap();
    let cfg = json!({
        "model_type": "llama", "vocab_size": vocab.unwrap_or(tok.vocab_size() as i64),
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
        "eos_token_id": tok.eos_id(), "bos_token_id": tok.bos_id(), "pad_token_id": tok.pad_id(),
    });
    let cfg = ModelConfig::from_json(&cfg, &dir.join("config.json")).unwrap();
    // libtorch's generator is global and these tests run in parallel threads: the checkpoint's
    // weights come from seed 0 only if no other thread draws between the seed and `Gpt::new`.
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    Gpt::new(&cfg, Head::Lm, Device::Cpu).save(dir).unwrap();
}

/// Runs `generate` on `dir` and asserts a clean failure whose message contains every `needle`.
fn assert_clean_failure(dir: &Path, needles: &[&str]) {
    let out = rlhf(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Jane has",
    ]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, got {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

/// The binary carries jemalloc as the process's malloc (`rlhf_model::alloc`) with its built-in
/// options: asked to print its statistics at exit, it does, with freed pages kept (decay -1).
#[test]
fn the_binary_runs_on_jemalloc_with_its_built_in_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run rlhf");
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Begin jemalloc statistics"), "{err}");
    assert!(
        err.contains("config.malloc_conf: \"dirty_decay_ms:-1,muzzy_decay_ms:-1\""),
        "{err}"
    );
}

#[test]
fn generate_prints_text_and_json_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let m = dir.path().to_str().unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Jane has",
        "--json",
        "--num-samples",
        "3",
    ];
    let args = [
        &args[..],
        &[
            "--max-new-tokens",
            "12",
            "--seed",
            "5",
            "--temperature",
            "1",
        ],
    ]
    .concat();
    let a = rlhf(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let lines: Vec<serde_json::Value> = String::from_utf8(a.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let ids = l["token_ids"].as_array().unwrap();
        let lps = l["logprobs"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 12 && ids.len() == lps.len());
        assert!(lps.iter().all(|x| x.as_f64().unwrap() <= 0.0));
    }
    assert_eq!(rlhf(&args).stdout, a.stdout, "same seed, different samples");
    let greedy = rlhf(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Jane has",
        "--temperature",
        "0",
        "--max-new-tokens",
        "16",
    ]);
    assert!(
        greedy.status.success() && !greedy.stdout.is_empty(),
        "{}",
        stderr(&greedy)
    );
}

#[test]
fn self_consistency_votes_over_the_paths_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let m = dir.path().to_str().unwrap();
    let base = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Jane has 12 flowers. She gives 2",
        "--max-new-tokens",
        "16",
    ];
    // A pattern that reads the first digit of each path: answers collide, so votes are counted.
    let args = [
        &base[..],
        &[
            "--self-consistency",
            "9",
            "--temperature",
            "1",
            "--json",
            "--answer-pattern",
            r"(\d)",
        ],
    ]
    .concat();
    let out = rlhf(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answers: Vec<Option<i64>> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["answer"].as_i64())
        .collect();
    assert_eq!(answers.len(), 9);
    assert_eq!(v["paths"], 9);
    let votes = v["votes"].as_u64().unwrap() as usize;
    if let Some(a) = v["answer"].as_i64() {
        assert_eq!(answers.iter().filter(|x| **x == Some(a)).count(), votes);
        for b in answers.iter().flatten() {
            assert!(answers.iter().filter(|x| **x == Some(*b)).count() <= votes);
        }
        assert!((v["share"].as_f64().unwrap() - votes as f64 / 9.0).abs() < 1e-9);
    } else {
        assert!(answers.iter().all(Option::is_none));
    }
    let bad = rlhf(
        &[
            &base[..],
            &["--self-consistency", "3", "--temperature", "0"],
        ]
        .concat(),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--temperature > 0"),
        "{}",
        stderr(&bad)
    );
    let bad = rlhf(
        &[
            &base[..],
            &["--self-consistency", "3", "--answer-pattern", "no group"],
        ]
        .concat(),
    );
    assert!(stderr(&bad).contains("capture group"), "{}", stderr(&bad));
}

#[test]
fn nll_matches_an_unbatched_computation() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let texts = [
        "Jane has 12 flowers.",
        "The answer is 7.",
        "Sort the list: 3, 1, 2. Tom buys",
    ];
    let data = dir.path().join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let out = rlhf(&[
        "nll",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let pre = Pretrained::load(dir.path(), Head::Lm, Device::Cpu).unwrap();
    let (mut sum, mut n) = (0.0, 0);
    for t in texts {
        let ids = pre.encode_prompt(t, PromptFormat::Raw).unwrap();
        let x = Tensor::from_slice(&ids).unsqueeze(0);
        let logits = pre.model.forward(
            rlhf_model::Batch {
                input_ids: &x,
                attention_mask: None,
            },
            None,
        );
        let logp = logits.unwrap().log_softmax(-1, Kind::Double).squeeze_dim(0);
        for (j, &id) in ids.iter().enumerate().skip(1) {
            sum -= f64::try_from(logp.get(j as i64 - 1).get(id)).unwrap();
            n += 1;
        }
    }
    assert_eq!(got["tokens"].as_u64().unwrap() as usize, n);
    let mean = got["mean_nll"].as_f64().unwrap();
    assert!(
        (mean - sum / n as f64).abs() < 1e-5,
        "{mean} vs {}",
        sum / n as f64
    );
}

#[test]
fn nll_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let out = rlhf(&[
        "nll",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.jsonl:2: field 'text': missing; expected a string"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn broken_checkpoints_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    checkpoint(d, None);
    let config = std::fs::read_to_string(d.join("config.json")).unwrap();
    let weights = std::fs::read(d.join("model.safetensors")).unwrap();
    let restore = || {
        std::fs::write(d.join("config.json"), &config).unwrap();
        std::fs::write(d.join("model.safetensors"), &weights).unwrap();
    };

    std::fs::remove_file(d.join("config.json")).unwrap();
    assert_clean_failure(d, &["config.json", "No such file"]);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    assert_clean_failure(d, &["config.json", "invalid JSON"]);
    std::fs::write(
        d.join("config.json"),
        config.replace("\"llama\"", "\"bert\""),
    )
    .unwrap();
    assert_clean_failure(d, &["config.json", "unknown model_type 'bert'"]);
    std::fs::write(
        d.join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    assert_clean_failure(
        d,
        // The first mismatch in model order, checked from the headers before any allocation.
        &[
            "model.safetensors",
            "mlp.gate_proj.weight",
            "[64, 32]",
            "implies [48, 32]",
        ],
    );
    restore();
    std::fs::write(d.join("model.safetensors"), &weights[..weights.len() - 100]).unwrap();
    assert_clean_failure(d, &["model.safetensors", "truncated"]);
    restore();
    let kept: Vec<(String, Tensor)> = Tensor::read_safetensors(d.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.self_attn.k_proj.weight")
        .collect();
    rlhf_model::checkpoint::save_tensors(&kept, &d.join("model.safetensors")).unwrap();
    assert_clean_failure(d, &["'model.layers.1.self_attn.k_proj.weight'", "missing"]);
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), Some(200));
    assert_clean_failure(dir.path(), &["tokenizer.json", "300 tokens", "200"]);
}

/// A one-layer llama GGUF (hidden 16, 4 heads of 4, 2 kv heads) with F32 tensors, except
/// `attn_q` which may be given an unsupported type.
fn tiny_gguf(q_type: Option<u32>) -> Vec<u8> {
    let tokens = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "a",
        "b",
        "ab",
        "Ġ",
        "Ġa",
    ];
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", 16)
        .u32("llama.feed_forward_length", 32)
        .u32("llama.attention.head_count", 4)
        .u32("llama.attention.head_count_kv", 2)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "gpt-2")
        .str_array("tokenizer.ggml.tokens", &tokens)
        .i32_array("tokenizer.ggml.token_type", &[3, 3, 3, 1, 1, 1, 1, 1])
        .str_array("tokenizer.ggml.merges", &["a b", "Ġ a"])
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .str(
            "tokenizer.chat_template",
            "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        );
    let shapes: [(&str, Vec<usize>); 11] = [
        ("token_embd.weight", vec![8, 16]),
        ("output_norm.weight", vec![16]),
        ("blk.0.attn_norm.weight", vec![16]),
        ("blk.0.attn_q.weight", vec![16, 16]),
        ("blk.0.attn_k.weight", vec![8, 16]),
        ("blk.0.attn_v.weight", vec![8, 16]),
        ("blk.0.attn_output.weight", vec![16, 16]),
        ("blk.0.ffn_norm.weight", vec![16]),
        ("blk.0.ffn_gate.weight", vec![32, 16]),
        ("blk.0.ffn_up.weight", vec![32, 16]),
        ("blk.0.ffn_down.weight", vec![16, 32]),
    ];
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        b = match q_type.filter(|_| name.contains("attn_q")) {
            // IQ2_XS: 74 bytes per 256-element block.
            Some(t) => b.tensor_raw(name, &[16, 16], t, vec![0; 74]),
            None => {
                let v: Vec<f32> = (0..n)
                    .map(|j| ((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.5)
                    .collect();
                b.tensor_f32(name, shape, &v)
            }
        };
    }
    b.build()
}

#[test]
fn import_gguf_then_generate() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    std::fs::write(&gguf, tiny_gguf(None)).unwrap();
    let out = dir.path().join("hf");
    let o = rlhf(&[
        "import",
        "--gguf",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = rlhf(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--chat",
        "--prompt",
        "ab",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let copy = dir.path().join("copy");
    let o = rlhf(&[
        "import",
        "--hf",
        out.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(copy.join("model.safetensors")).unwrap()
    );
}

#[test]
fn gguf_with_an_unsupported_quantisation_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("iq2.gguf");
    std::fs::write(&gguf, tiny_gguf(Some(17))).unwrap();
    let out = dir.path().join("hf");
    let o = rlhf(&[
        "import",
        "--gguf",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("iq2.gguf") && err.contains("blk.0.attn_q.weight") && err.contains("IQ2_XS"),
        "{err}"
    );
    assert!(
        !out.join("model.safetensors").exists(),
        "a failed import left weights behind"
    );
}

/// `rlhf pretrain` on a data dir holding `corpus`; returns (exit code, stderr).
fn pretrain_on(corpus: &str, extra: &[&str]) -> (Option<i32>, String) {
    pretrain_into(corpus, None, extra)
}

fn pretrain_into(corpus: &str, out: Option<&str>, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus.txt"), corpus).unwrap();
    let out = out.map_or_else(|| dir.path().join("model"), std::path::PathBuf::from);
    let args = [
        "pretrain",
        "--data",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = rlhf(&[&args[..], extra].concat());
    (o.status.code(), stderr(&o))
}

#[test]
fn pretrain_rejects_an_empty_corpus() {
    let (code, err) = pretrain_on("\n\n  \n", &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("corpus.txt") && err.contains("the corpus is empty"),
        "{err}"
    );
}

#[test]
fn pretrain_rejects_a_corpus_shorter_than_one_row() {
    let corpus = "Jane has 12 flowers. She gives 2 to her mom.\n\n".repeat(3);
    let (code, err) = pretrain_on(
        &corpus,
        &["--set", "vocab_size=262", "--set", "seq_len=128"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("fewer than one row of seq_len + 1 = 129"),
        "{err}"
    );
}

#[test]
fn pretrain_rejects_bad_config_with_the_key_path() {
    let (code, err) = pretrain_on(CORPUS, &["--set", "trainer.lrr=1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("trainer.lrr"), "{err}");
    let (code, err) = pretrain_on(CORPUS, &["--set", "trainer.lr=\"fast\""]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("trainer.lr"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "[trainer\nlr = 1").unwrap();
    let (code, err) = pretrain_on(CORPUS, &["--config", toml.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("bad.toml") && err.contains("line 1"), "{err}");
}

#[test]
fn pretrain_into_an_unwritable_dir_fails_cleanly() {
    let (code, err) = pretrain_into(CORPUS, Some("/proc/rlhf-cannot-write-here"), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/proc/rlhf-cannot-write-here"), "{err}");
}

#[test]
fn data_then_pretrain_then_resume_then_generate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = rlhf(&[
        "data",
        "--out",
        data.to_str().unwrap(),
        "--seed",
        "3",
        "--set",
        "corpus_docs=400",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("model");
    let (d, m) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = [
        "--preset",
        "nano",
        "--set",
        "trainer.batch_size=4",
        "--set",
        "seq_len=32",
        "--set",
        "vocab_size=300",
    ];
    let first = [
        &["pretrain", "--data", d, "--out", m][..],
        &common,
        &[
            "--set",
            "trainer.max_steps=6",
            "--set",
            "trainer.checkpoint_every=3",
        ],
    ]
    .concat();
    let o = rlhf(&first);
    assert!(o.status.success(), "{}", stderr(&o));
    let more = [
        &["pretrain", "--data", d, "--out", m, "--resume"][..],
        &common,
        &["--set", "trainer.max_steps=8"],
    ]
    .concat();
    let o = rlhf(&more);
    assert!(o.status.success(), "{}", stderr(&o));
    let steps: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some() && v.get("lr").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<_>>(),
        "metrics.jsonl steps after resume"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rlhf.json")).unwrap()).unwrap();
    assert_eq!(info["step"], 8, "{info}");
    assert_eq!(info["stage"], "pretrain", "{info}");
    let g = rlhf(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Jane has",
        "--max-new-tokens",
        "8",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
}

#[test]
fn sample_writes_k_responses_per_prompt() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let prompts = dir.path().join("prompts.jsonl");
    let lines = ["Jane has 12 flowers. How many?", "Sort the list: 3, 1, 2."]
        .map(|p| json!({ "prompt": p, "family": "x" }).to_string());
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let out = dir.path().join("samples.jsonl");
    let (m, p, o) = (
        dir.path().to_str().unwrap(),
        prompts.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let args = [
        "sample",
        "--model",
        m,
        "--prompts",
        p,
        "--out",
        o,
        "--k",
        "3",
        "--max-new-tokens",
        "6",
    ];
    let r = rlhf(&args);
    assert!(r.status.success(), "{}", stderr(&r));
    let samples: Vec<rlhf_data::SampleRecord> = rlhf_data::read_jsonl(&out).unwrap();
    assert!(!samples.is_empty());
    for s in &samples {
        assert!(s.responses.len() >= 2 && s.responses.len() <= 3, "{s:?}");
    }
    let bad = rlhf(&[
        "sample",
        "--model",
        m,
        "--prompts",
        p,
        "--out",
        o,
        "--k",
        "1",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--k must be at least 2"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn label_oracle_ranks_correct_first_and_ties_identical_responses() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.jsonl");
    let prompt = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers does she have left?";
    let right = "Jane gives 2 to her mom, so 12 - 2 = 10. She gives 3 to her dad, so 10 - 3 = 7. The answer is 7.";
    let wrong = "Jane gives 2 to her mom, so 12 - 2 = 10. She gives 3 to her dad, so 10 - 3 = 8. The answer is 8.";
    let line = json!({ "prompt": prompt, "responses": [wrong, right, wrong] }).to_string();
    std::fs::write(&samples, line + "\n").unwrap();
    let out = dir.path().join("rankings.jsonl");
    let (s, o) = (samples.to_str().unwrap(), out.to_str().unwrap());
    // `label --oracle` on these samples into `out`, with `extra` flags.
    let label = |extra: &[&str]| {
        rlhf(
            &[
                &["label", "--oracle", "--samples", s, "--out", o][..],
                extra,
            ]
            .concat(),
        )
    };
    let r = label(&["--tau", "0"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(v["ranking"], json!([1, [0, 2]]), "{v}");
    // With --overlap 1 the one prompt is ranked twice; noise-free labelers agree on both pairs
    // of different responses (the identical pair is not counted) and mark none tied.
    let r = label(&["--tau", "0", "--overlap", "1"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("two labelers agree on 100.0% of 2 pairs"),
        "{}",
        stderr(&r)
    );
    let agreement: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("rankings.agreement.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        agreement,
        json!({ "prompts": 1, "pairs": 2, "agreed": 2, "tied": 0 })
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
    // --keep-overlap writes the second labeler's ranking too, right after the first.
    let keep = |overlap: &str| {
        let r = label(&["--tau", "0", "--overlap", overlap, "--keep-overlap"]);
        assert!(r.status.success(), "{}", stderr(&r));
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let both = keep("1");
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], both[1], "noise-free labelers rank alike");
    assert_eq!(keep("0").len(), 1);
    let r = rlhf(&["label", "--samples", s, "--out", o, "--keep-overlap"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("--oracle"), "{}", stderr(&r));
    let r = label(&["--overlap", "2"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("--overlap"), "{}", stderr(&r));

    // --calibrate picks τ on these samples (between noise-free, 100% agreement on the two
    // pairs, and pure noise, 50%) and says so; the output folder is created.
    let nested = dir.path().join("new/dir/rankings.jsonl");
    let r = rlhf(&[
        "label",
        "--oracle",
        "--samples",
        s,
        "--out",
        nested.to_str().unwrap(),
        "--calibrate",
        "--overlap",
        "1",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("calibrated tau = "), "{}", stderr(&r));
    assert!(nested.exists() && dir.path().join("new/dir/rankings.agreement.json").exists());
    let r = label(&["--calibrate", "--tau", "1"]);
    assert_eq!(r.status.code(), Some(2), "--calibrate and --tau conflict");

    std::fs::write(
        &samples,
        json!({ "prompt": "Tell me a joke.", "responses": ["a", "b"] }).to_string(),
    )
    .unwrap();
    let r = label(&[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains("samples.jsonl: record 1"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn reward_pools_rankings_of_the_same_responses() {
    // A second labeler who agrees with the first: the file read twice over must train the
    // very reward model the file once trains (pooled pairs keep each prompt's weight), and the
    // repeated records must not land in the held-out split as copies of training prompts.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sft");
    checkpoint(&model, None);
    let responses = ["The answer is 7.", "The answer is 8.", "She has 9.", "7"];
    let lines: Vec<String> = (0..12)
        .map(|i| {
            json!({ "prompt": format!("Jane has {} flowers.", i + 3), "responses": responses,
                    "ranking": [i % 4, [(i + 1) % 4, (i + 2) % 4], (i + 3) % 4] })
            .to_string()
        })
        .collect();
    let once = dir.path().join("once.jsonl");
    let twice = dir.path().join("twice.jsonl");
    std::fs::write(&once, lines.join("\n")).unwrap();
    std::fs::write(&twice, [lines.clone(), lines].concat().join("\n")).unwrap();
    let samples = dir.path().join("samples.jsonl");
    let sample = json!({ "prompt": "Jane has 4 flowers.", "responses": responses });
    std::fs::write(&samples, sample.to_string()).unwrap();
    let train = |data: &Path, name: &str| {
        let out = dir.path().join(name);
        let r = rlhf(&[
            "reward",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "trainer.batch_size=2",
        ]);
        assert!(r.status.success(), "{}", stderr(&r));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        let s = rlhf(&[
            "score",
            "--rm",
            out.to_str().unwrap(),
            "--data",
            samples.to_str().unwrap(),
        ]);
        assert!(s.status.success(), "{}", stderr(&s));
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        let rewards: Vec<f64> = (v["rewards"].as_array().unwrap().iter())
            .map(|x| x.as_f64().unwrap())
            .collect();
        (summary, rewards, stderr(&r))
    };
    let (s1, r1, _) = train(&once, "rm-once");
    let (s2, r2, err2) = train(&twice, "rm-twice");
    assert_eq!(s1["pooled_records"], 0);
    assert_eq!(s2["pooled_records"], 12, "{err2}");
    assert!(
        err2.contains("12 records repeat an earlier record's"),
        "{err2}"
    );
    for key in ["train_prompts", "eval_prompts", "steps"] {
        assert_eq!(s1[key], s2[key], "{key}");
    }
    // Pairs counted twice: the held-out accuracy is over twice the label pairs, the same share.
    let (a1, a2) = (&s1["eval_accuracy_end"], &s2["eval_accuracy_end"]);
    assert_eq!(
        2 * a1["label_pairs"].as_u64().unwrap(),
        a2["label_pairs"].as_u64().unwrap()
    );
    assert!((a1["labels"].as_f64().unwrap() - a2["labels"].as_f64().unwrap()).abs() < 1e-9);
    for (x, y) in r1.iter().zip(&r2) {
        assert!((x - y).abs() < 1e-4, "{r1:?} vs {r2:?}");
    }
    // The responses get different rewards: the comparison above is not vacuous.
    let spread =
        r1.iter().cloned().fold(f64::MIN, f64::max) - r1.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 1e-3, "{r1:?}");
}

#[test]
fn reward_then_score_centres_training_rewards() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), None);
    let prompt = "Jane has 12 flowers. She gives 2 to her mom and 3 to her dad. How many flowers does she have left?";
    let responses = [
        "The answer is 7.",
        "The answer is 8.",
        "She has 9. The answer is 9.",
        "7",
    ];
    let rankings = dir.path().join("rankings.jsonl");
    // Twelve rankings of the four responses in four orders (rotations): three labelers' each,
    // which `reward` pools into four prompts.
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let k = i % 4;
            let at = |m: usize| (m + 4 - k) % 4;
            let rotated: Vec<&str> = (0..4).map(|j| responses[(j + k) % 4]).collect();
            json!({ "prompt": prompt, "responses": rotated,
                    "ranking": [at(0), [at(3), at(1)], at(2)] })
            .to_string()
        })
        .collect();
    std::fs::write(&rankings, lines.join("\n")).unwrap();
    let rm = dir.path().join("rm");
    let (m, d, o) = (
        dir.path().to_str().unwrap(),
        rankings.to_str().unwrap(),
        rm.to_str().unwrap(),
    );
    let args = [
        "reward",
        "--model",
        m,
        "--data",
        d,
        "--out",
        o,
        "--set",
        "trainer.batch_size=2",
    ];
    let r = rlhf(&args);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("held-out pairwise accuracy")
            && stderr(&r).contains("8 records repeat an earlier record's prompt and responses")
            && stderr(&r).contains("3 train / 1 held-out prompts"),
        "{}",
        stderr(&r)
    );
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(
        &samples,
        json!({ "prompt": prompt, "responses": responses }).to_string(),
    )
    .unwrap();
    let s = rlhf(&["score", "--rm", o, "--data", samples.to_str().unwrap()]);
    assert!(s.status.success(), "{}", stderr(&s));
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    let r: Vec<f64> = v["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(r.len(), 4);
    // Every training response is one of these four, so their mean reward is centred at 0.
    assert!((r.iter().sum::<f64>() / 4.0).abs() < 1e-4, "{r:?}");
}
