//! End-to-end import of a tiny hand-made llama GGUF: config values, tensor names and shapes,
//! q/k un-permutation against llama.cpp's permutation, tokenizer files, and failure modes.
//!
//! Dims: 2 layers, hidden 8, 2 query heads and 1 key/value head of size 4, MLP 16, vocab 8.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::GgufBuilder;
use rlhf_gguf::import_gguf;
use safetensors::SafeTensors;
use serde_json::Value;

const N_EMBD: usize = 8;
const N_HEAD: usize = 2;
const N_HEAD_KV: usize = 1;
const HEAD_DIM: usize = 4;
const N_FF: usize = 16;
const N_LAYER: usize = 2;
const TOKENS: [&str; 8] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "a",
    "b",
    "ab",
    "Ġ",
    "Ġa",
];

/// Distinct values per tensor so any mix-up shows: `seed * 1000 + index`.
fn ramp(seed: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (seed * 1000 + i) as f32).collect()
}

/// llama.cpp's `LlamaModel.permute` (HF rotate_half rows → ggml interleaved rows), per head:
/// GGUF row `2i + p` takes HF row `p * hs/2 + i`.
fn llama_cpp_permute(w: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
    let hs = w.len() / row_len / n_heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for i in 0..hs / 2 {
            for p in 0..2 {
                let dst = (h * hs + 2 * i + p) * row_len;
                let src = (h * hs + p * (hs / 2) + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&w[src..src + row_len]);
            }
        }
    }
    out
}

/// The HF-layout weights of the tiny model: (gguf name, torch shape, HF-order values).
fn weights(with_output: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut w = vec![
        ("token_embd.weight".to_string(), vec![TOKENS.len(), N_EMBD]),
        ("output_norm.weight".into(), vec![N_EMBD]),
    ];
    if with_output {
        w.push(("output.weight".into(), vec![TOKENS.len(), N_EMBD]));
    }
    for l in 0..N_LAYER {
        let q = N_HEAD * HEAD_DIM;
        let kv = N_HEAD_KV * HEAD_DIM;
        for (stem, shape) in [
            ("attn_norm", vec![N_EMBD]),
            ("attn_q", vec![q, N_EMBD]),
            ("attn_k", vec![kv, N_EMBD]),
            ("attn_v", vec![kv, N_EMBD]),
            ("attn_output", vec![N_EMBD, q]),
            ("ffn_norm", vec![N_EMBD]),
            ("ffn_gate", vec![N_FF, N_EMBD]),
            ("ffn_up", vec![N_FF, N_EMBD]),
            ("ffn_down", vec![N_EMBD, N_FF]),
        ] {
            w.push((format!("blk.{l}.{stem}.weight"), shape));
        }
    }
    w.into_iter()
        .enumerate()
        .map(|(seed, (name, shape))| {
            let values = ramp(seed, shape.iter().product());
            (name, shape, values)
        })
        .collect()
}

fn tiny_llama(with_output: bool) -> GgufBuilder {
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", N_LAYER as u32)
        .u32("llama.context_length", 256)
        .u32("llama.embedding_length", N_EMBD as u32)
        .u32("llama.feed_forward_length", N_FF as u32)
        .u32("llama.attention.head_count", N_HEAD as u32)
        .u32("llama.attention.head_count_kv", N_HEAD_KV as u32)
        .f32("llama.rope.freq_base", 100000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u32("llama.rope.dimension_count", HEAD_DIM as u32)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .str_array("tokenizer.ggml.tokens", &TOKENS)
        .i32_array("tokenizer.ggml.token_type", &[3, 3, 3, 1, 1, 1, 1, 1])
        .str_array("tokenizer.ggml.merges", &["a b", "Ġ a"])
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .u32("tokenizer.ggml.unknown_token_id", 0)
        .u32("tokenizer.ggml.padding_token_id", 2)
        .bool("tokenizer.ggml.add_bos_token", false)
        .str("tokenizer.chat_template", "{{ messages[0]['content'] }}");
    for (name, shape, values) in weights(with_output) {
        let stored = if name.contains("attn_q") {
            llama_cpp_permute(&values, N_HEAD, N_EMBD)
        } else if name.contains("attn_k") {
            llama_cpp_permute(&values, N_HEAD_KV, N_EMBD)
        } else {
            values
        };
        b = b.tensor_f32(&name, &shape, &stored);
    }
    b
}

fn write(dir: &Path, b: &GgufBuilder) -> std::path::PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, b.build()).unwrap();
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tiny_llama_round_trips_to_hf_layout() {
    let dir = common::temp_dir("tiny");
    let gguf = write(&dir, &tiny_llama(false));
    let out = dir.join("hf");
    let mut calls = Vec::new();
    let summary = import_gguf(&gguf, &out, |done, total| calls.push((done, total))).unwrap();
    let n = 2 + 9 * N_LAYER;
    assert_eq!(summary.n_tensors, n);
    assert_eq!(calls.last(), Some(&(n, n)));
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    assert!(names.contains("model.layers.1.self_attn.q_proj.weight"));
    assert!(
        !names.contains("lm_head.weight"),
        "tied embeddings must not write lm_head"
    );
    assert_eq!(names.len(), n);
    for (gguf_name, shape, hf_values) in weights(false) {
        let hf_name = rlhf_gguf::hf_tensor_name(&gguf_name).unwrap();
        let t = st.tensor(&hf_name).unwrap();
        assert_eq!(t.shape(), shape.as_slice(), "{hf_name}");
        let got: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // q/k come back in HF order: the un-permutation inverted llama.cpp's permutation.
        assert_eq!(got, hf_values, "{hf_name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_and_tokenizer_files() {
    let dir = common::temp_dir("tinycfg");
    let gguf = write(&dir, &tiny_llama(true));
    let out = dir.join("hf");
    let summary = import_gguf(&gguf, &out, |_, _| {}).unwrap();
    assert!(!summary.hparams.tie_word_embeddings);

    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["hidden_size"], N_EMBD);
    assert_eq!(cfg["intermediate_size"], N_FF);
    assert_eq!(cfg["num_hidden_layers"], N_LAYER);
    assert_eq!(cfg["num_attention_heads"], N_HEAD);
    assert_eq!(cfg["num_key_value_heads"], N_HEAD_KV);
    assert_eq!(cfg["head_dim"], HEAD_DIM);
    assert_eq!(cfg["rms_norm_eps"], 1e-5);
    assert_eq!(cfg["rope_theta"], 100000.0);
    assert_eq!(cfg["max_position_embeddings"], 256);
    assert_eq!(cfg["vocab_size"], TOKENS.len());
    assert_eq!(cfg["tie_word_embeddings"], false);
    assert_eq!(
        (cfg["bos_token_id"].clone(), cfg["eos_token_id"].clone()),
        (1.into(), 2.into())
    );
    assert_eq!(cfg["pad_token_id"], 2);
    assert_eq!(cfg["hidden_act"], "silu");
    assert_eq!(cfg["torch_dtype"], "float32");
    let keys: Vec<&String> = cfg.as_object().unwrap().keys().collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "keys sorted like transformers: {keys:?}"
    );

    let tok = read_json(&out.join("tokenizer.json"));
    assert_eq!(tok["added_tokens"].as_array().unwrap().len(), 3);
    assert_eq!(tok["added_tokens"][1]["content"], "<|im_start|>");
    assert_eq!(tok["added_tokens"][1]["special"], true);
    assert_eq!(tok["model"]["vocab"]["Ġa"], 7);
    assert_eq!(tok["model"]["merges"][1], "Ġ a");
    assert_eq!(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
    assert_eq!(
        tok["post_processor"]["type"], "ByteLevel",
        "add_bos_token is false"
    );

    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["pad_token"], "<|im_end|>");
    assert_eq!(tc["unk_token"], "<|endoftext|>");
    assert_eq!(tc["chat_template"], "{{ messages[0]['content'] }}");
    assert_eq!(tc["model_max_length"], 256);
    assert_eq!(tc["tokenizer_class"], "GPT2Tokenizer");
    assert_eq!(tc["added_tokens_decoder"]["2"]["content"], "<|im_end|>");

    let gen_cfg = read_json(&out.join("generation_config.json"));
    assert_eq!(gen_cfg["eos_token_id"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_leave_no_model_file() {
    let dir = common::temp_dir("tinyfail");
    // Relabel the F32 embedding as I8 (a type rlhf does not dequantize; its smaller byte size
    // still fits the file), so the file opens and the import must refuse before writing.
    let mut bytes = tiny_llama(false).build();
    let name = b"token_embd.weight";
    let pos = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_pos = pos + 4 + 2 * 8; // after n_dims (u32) and two u64 dims
    assert_eq!(bytes[type_pos..type_pos + 4], 0u32.to_le_bytes());
    bytes[type_pos..type_pos + 4].copy_from_slice(&24u32.to_le_bytes());
    let gguf = dir.join("bad.gguf");
    std::fs::write(&gguf, bytes).unwrap();
    let out = dir.join("hf");
    let e = import_gguf(&gguf, &out, |_, _| {}).unwrap_err().to_string();
    assert!(
        e.contains("tensor 'token_embd.weight' has ggml type I8 (24), which rlhf"),
        "{e}"
    );
    assert!(!out.join("model.safetensors").exists());

    let no_layer = tiny_llama(false)
        .remove("llama.block_count")
        .u32("llama.block_count", 3);
    let gguf = write(&dir, &no_layer);
    let e = import_gguf(&gguf, &out, |_, _| {}).unwrap_err().to_string();
    assert!(
        e.contains("tensor 'blk.2.attn_norm.weight': is missing"),
        "{e}"
    );

    // A forged layer count fails at the first missing layer, without building a huge list.
    let forged = tiny_llama(false)
        .remove("llama.block_count")
        .u32("llama.block_count", u32::MAX);
    let gguf = write(&dir, &forged);
    let e = import_gguf(&gguf, &out, |_, _| {}).unwrap_err().to_string();
    assert!(
        e.contains("tensor 'blk.2.attn_norm.weight': is missing"),
        "{e}"
    );

    let mystery = tiny_llama(false)
        .remove("tokenizer.ggml.pre")
        .str("tokenizer.ggml.pre", "mystery");
    let gguf = write(&dir, &mystery);
    let e = import_gguf(&gguf, &out, |_, _| {}).unwrap_err().to_string();
    assert!(
        e.contains("pre-tokenizer 'mystery' (tokenizer.ggml.pre) is not supported"),
        "{e}"
    );
    assert!(!out.join("model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sizes no tensor shape checks (the context) and the float constants are refused with the
/// key that holds them, before anything is written.
#[test]
fn absurd_context_and_constants_name_their_key() {
    let dir = common::temp_dir("tinyscalars");
    let out = dir.join("hf");
    let cases = [
        (
            tiny_llama(false)
                .remove("llama.context_length")
                .u32("llama.context_length", u32::MAX),
            "key 'llama.context_length': 4294967295 is not a context length",
        ),
        (
            tiny_llama(false)
                .remove("llama.context_length")
                .u32("llama.context_length", 0),
            "key 'llama.context_length': 0 is not a context length",
        ),
        (
            tiny_llama(false)
                .remove("llama.rope.freq_base")
                .f32("llama.rope.freq_base", f32::NAN),
            "key 'llama.rope.freq_base': NaN is not a positive RoPE base",
        ),
        (
            tiny_llama(false)
                .remove("llama.attention.layer_norm_rms_epsilon")
                .f32("llama.attention.layer_norm_rms_epsilon", f32::INFINITY),
            "key 'llama.attention.layer_norm_rms_epsilon': inf is not an epsilon",
        ),
    ];
    for (b, want) in cases {
        let gguf = write(&dir, &b);
        let e = import_gguf(&gguf, &out, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("tiny.gguf") && e.contains(want), "{e}");
        assert!(!out.join("model.safetensors").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn add_bos_token_becomes_a_template_post_processor() {
    let dir = common::temp_dir("tinybos");
    let b = tiny_llama(false)
        .remove("tokenizer.ggml.add_bos_token")
        .bool("tokenizer.ggml.add_bos_token", true);
    let gguf = write(&dir, &b);
    let out = dir.join("hf");
    import_gguf(&gguf, &out, |_, _| {}).unwrap();
    let tok = read_json(&out.join("tokenizer.json"));
    let post = &tok["post_processor"];
    assert_eq!(post["type"], "TemplateProcessing");
    assert_eq!(post["single"][0]["SpecialToken"]["id"], "<|im_start|>");
    assert_eq!(post["single"][1]["Sequence"]["id"], "A");
    assert_eq!(post["pair"][2]["SpecialToken"]["type_id"], 1);
    assert_eq!(post["special_tokens"]["<|im_start|>"]["ids"][0], 1);
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["add_bos_token"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pre_tokenizer_names_select_llama_cpp_splits() {
    let dir = common::temp_dir("tinypre");
    let out = dir.join("hf");
    let cases = [
        ("gpt-2", "ByteLevel", Value::Null, false),
        ("llama-bpe", "Sequence", Value::Null, true),
        (
            "qwen2",
            "Sequence",
            serde_json::json!({"type": "NFC"}),
            false,
        ),
    ];
    for (pre, pre_type, normalizer, ignore_merges) in cases {
        let b = tiny_llama(false)
            .remove("tokenizer.ggml.pre")
            .str("tokenizer.ggml.pre", pre);
        import_gguf(&write(&dir, &b), &out, |_, _| {}).unwrap();
        let tok = read_json(&out.join("tokenizer.json"));
        assert_eq!(tok["pre_tokenizer"]["type"], pre_type, "{pre}");
        assert_eq!(tok["normalizer"], normalizer, "{pre}");
        assert_eq!(tok["model"]["ignore_merges"], ignore_merges, "{pre}");
        if pre_type == "Sequence" {
            let split = &tok["pre_tokenizer"]["pretokenizers"][0];
            assert_eq!(split["type"], "Split", "{pre}");
            assert_eq!(split["behavior"], "Isolated", "{pre}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
