//! Hostile GGUF files: whatever the bytes, opening, reading the llama hyper-parameters, planning
//! the conversion, building the tokenizer and dequantizing every tensor each answer within
//! bounded time and memory with a value or an error naming the file, never a panic or an abort.
//!
//! Seeds: the checked-in `quants.gguf` (written by llama.cpp's gguf-py: every quantisation type
//! we read) and a one-layer llama built here with a tokenizer. Mutations (`rlhf_fuzz`):
//! truncation, bit flips, every length and count field of the seed set to huge values, huge
//! bytes anywhere, deep nesting, invalid UTF-8, repeated and deleted slices.
//!
//! Cases: PROPTEST_CASES (default 256); `scripts/fuzz.sh --cases N` runs the long campaign.

mod common;

use common::GgufBuilder;
use rlhf_fuzz::{Bounds, Outcome, Seed, mutations};
use rlhf_gguf::{GgufFile, LlamaHparams, build_tokenizer, plan_tensors};

#[global_allocator]
static ALLOC: rlhf_fuzz::CountingAlloc = rlhf_fuzz::CountingAlloc;

/// A one-layer llama (hidden 8, two heads of 4, MLP 16) with a byte-level tokenizer of 8 tokens.
fn tiny_llama() -> Vec<u8> {
    let tokens = ["<s>", "</s>", "a", "b", "ab", "Ġ", "Ġa", "c"];
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", 8)
        .u32("llama.feed_forward_length", 16)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .str_array("tokenizer.ggml.tokens", &tokens)
        .i32_array("tokenizer.ggml.token_type", &[3, 3, 1, 1, 1, 1, 1, 1])
        .str_array("tokenizer.ggml.merges", &["a b", "Ġ a"])
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", 1)
        .str("tokenizer.chat_template", "{{ messages[0]['content'] }}");
    let shapes: [(&str, &[usize]); 11] = [
        ("token_embd.weight", &[8, 8]),
        ("output_norm.weight", &[8]),
        ("blk.0.attn_norm.weight", &[8]),
        ("blk.0.attn_q.weight", &[8, 8]),
        ("blk.0.attn_k.weight", &[4, 8]),
        ("blk.0.attn_v.weight", &[4, 8]),
        ("blk.0.attn_output.weight", &[8, 8]),
        ("blk.0.ffn_norm.weight", &[8]),
        ("blk.0.ffn_gate.weight", &[16, 8]),
        ("blk.0.ffn_up.weight", &[16, 8]),
        ("blk.0.ffn_down.weight", &[8, 16]),
    ];
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| i as f32 / n as f32).collect();
        b = b.tensor_f32(name, shape, &values);
    }
    b.build()
}

/// The offsets of every length, count, type and offset field of a valid GGUF file: the header
/// counts, each key's length, value type and value (string lengths, array types and counts),
/// each tensor's name length, dimension count, dimensions, type and data offset.
fn gguf_fields(b: &[u8]) -> Vec<(usize, u8)> {
    let mut w = Walker {
        b,
        p: 24,
        fields: vec![(8, 8), (16, 8)],
    };
    let (n_tensors, n_kv) = (w.u64_at(8), w.u64_at(16));
    for _ in 0..n_kv {
        w.string();
        let ty = w.field(4);
        w.value(ty);
    }
    for _ in 0..n_tensors {
        w.string();
        let n_dims = w.field(4);
        for _ in 0..n_dims {
            w.field(8);
        }
        w.field(4);
        w.field(8);
    }
    w.fields
}

/// A cursor over a valid GGUF file that records where its fields are.
struct Walker<'a> {
    b: &'a [u8],
    p: usize,
    fields: Vec<(usize, u8)>,
}

impl Walker<'_> {
    fn u64_at(&self, p: usize) -> usize {
        u64::from_le_bytes(self.b[p..p + 8].try_into().unwrap()) as usize
    }

    /// Records a field of `width` bytes here and returns its value.
    fn field(&mut self, width: u8) -> usize {
        let v = match width {
            4 => u32::from_le_bytes(self.b[self.p..self.p + 4].try_into().unwrap()) as usize,
            _ => self.u64_at(self.p),
        };
        self.fields.push((self.p, width));
        self.p += usize::from(width);
        v
    }

    fn string(&mut self) {
        let len = self.field(8);
        self.p += len;
    }

    fn value(&mut self, ty: usize) {
        match ty {
            0 | 1 | 7 => self.p += 1,
            2 | 3 => self.p += 2,
            4..=6 => self.p += 4,
            8 => self.string(),
            9 => {
                let elem = self.field(4);
                for _ in 0..self.field(8) {
                    self.value(elem);
                }
            }
            _ => self.p += 8,
        }
    }
}

fn seeds() -> &'static [Seed] {
    static SEEDS: std::sync::OnceLock<Vec<Seed>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let quants = std::fs::read(common::fixture("quants.gguf")).unwrap();
        let llama = tiny_llama();
        [("quants.gguf", quants), ("tiny-llama.gguf", llama)]
            .into_iter()
            .map(|(name, bytes)| Seed {
                name: name.into(),
                fields: gguf_fields(&bytes),
                bytes,
            })
            .collect()
    })
}

/// `Ok` when the message names the file, else the message.
fn names_file(e: impl std::fmt::Display) -> Result<(), String> {
    let msg = e.to_string();
    match msg.contains("fuzz.gguf") {
        true => Ok(()),
        false => Err(format!("error does not name the file: {msg}")),
    }
}

/// Everything the importer does short of writing files.
fn read_all(bytes: Vec<u8>) -> Result<Outcome, String> {
    let file = match GgufFile::from_bytes("fuzz.gguf", bytes) {
        Ok(f) => f,
        Err(e) => return names_file(e).map(|()| Outcome::Refused),
    };
    let mut outcome = Outcome::Accepted;
    for info in file.tensor_infos() {
        if let Err(e) = file.dequantize(&info.name) {
            names_file(e)?;
            outcome = Outcome::Refused;
        }
    }
    let hp = match LlamaHparams::from_gguf(&file) {
        Ok(hp) => hp,
        Err(e) => return names_file(e).map(|()| Outcome::Refused),
    };
    if let Err(e) = plan_tensors(&file, &hp) {
        names_file(e)?;
        outcome = Outcome::Refused;
    }
    if let Err(e) = build_tokenizer(&file, hp.n_ctx) {
        names_file(e)?;
        outcome = Outcome::Refused;
    }
    Ok(outcome)
}

#[test]
fn seeds_are_valid() {
    for seed in seeds() {
        let outcome = read_all(seed.bytes.clone());
        assert!(outcome.is_ok(), "{}: {outcome:?}", seed.name);
        assert!(seed.fields.len() > 20, "{}", seed.name);
    }
    assert_eq!(read_all(tiny_llama()), Ok(Outcome::Accepted));
}

#[test]
fn mutated_gguf_reads_or_names_the_file() {
    let strategy = (0..seeds().len(), mutations(4));
    rlhf_fuzz::run("gguf", 256, Bounds::default(), strategy, |(seed, list)| {
        read_all(seeds()[*seed].mutated(list))
    });
}
