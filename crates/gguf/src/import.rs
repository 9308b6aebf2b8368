//! `import_gguf`: one GGUF file in, one Hugging Face checkpoint directory out
//! (`config.json`, `generation_config.json`, `model.safetensors` in f32, `tokenizer.json`,
//! `tokenizer_config.json`).
//!
//! Everything that can be checked is checked before the first byte is written (architecture,
//! shapes, completeness, quantisation types, tokenizer). Weights are then dequantized one tensor
//! at a time while `safetensors` streams them to disk, so peak memory is about one f32 tensor plus
//! the memory-mapped file, not the whole model. This module orchestrates; the pieces live in
//! `llama.rs`, `names.rs`, `tokenizer.rs` and `dequant.rs`.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, View};

use crate::error::{GgufError, Result};
use crate::llama::{LlamaHparams, hf_config_json, hf_generation_config_json};
use crate::names::{TensorPlan, plan_tensors, unpermute_rope_rows};
use crate::reader::GgufFile;
use crate::tokenizer::build_tokenizer;
use crate::types::supported_list;

/// What `import_gguf` wrote, for the caller to print or check.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    /// The hyper-parameters `config.json` was written from.
    pub hparams: LlamaHparams,
    /// Number of tensors in `model.safetensors`.
    pub n_tensors: usize,
    pub n_parameters: u64,
    /// How many source tensors had each ggml type, e.g. `{"F32": 61, "Q4_1": 210, "Q8_0": 1}`.
    pub source_types: BTreeMap<String, usize>,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    /// Conversions that succeeded but may not match the original model exactly.
    pub warnings: Vec<String>,
}

/// Converts the llama-architecture GGUF file `gguf` into a transformers checkpoint in `out_dir`
/// (created if needed; existing files of the same names are replaced). `progress(done, total)` is
/// called after each tensor is written.
pub fn import_gguf(
    gguf: &Path,
    out_dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportSummary> {
    let file = GgufFile::open(gguf)?;
    let hparams = LlamaHparams::from_gguf(&file)?;
    let plan = plan_tensors(&file, &hparams)?;
    check_types(&file, &plan)?;
    let tokenizer = build_tokenizer(&file, hparams.n_ctx)?;

    std::fs::create_dir_all(out_dir).map_err(|source| GgufError::Io {
        path: out_dir.to_path_buf(),
        op: "create the output directory",
        source,
    })?;
    let weights = out_dir.join("model.safetensors");
    write_safetensors(&file, &plan, &weights, &mut progress)?;
    let mut files = vec![weights];
    let json_files = [
        ("config.json", hf_config_json(&hparams)),
        (
            "generation_config.json",
            hf_generation_config_json(&hparams),
        ),
        ("tokenizer.json", tokenizer.tokenizer_json),
        ("tokenizer_config.json", tokenizer.tokenizer_config_json),
    ];
    for (name, value) in json_files {
        let path = out_dir.join(name);
        write_json(&path, &value)?;
        files.push(path);
    }

    let mut source_types = BTreeMap::new();
    for t in &plan {
        *source_types.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    Ok(ImportSummary {
        out_dir: out_dir.to_path_buf(),
        n_tensors: plan.len(),
        n_parameters: plan
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum(),
        hparams,
        source_types,
        files,
        warnings: tokenizer.warnings,
    })
}

/// Fails before writing anything if some tensor has a type we cannot dequantize.
fn check_types(gguf: &GgufFile, plan: &[TensorPlan]) -> Result<()> {
    match plan.iter().find(|t| !t.ggml_type.is_dequantizable()) {
        None => Ok(()),
        Some(t) => Err(GgufError::UnsupportedType {
            path: gguf.path().to_path_buf(),
            tensor: t.gguf_name.clone(),
            type_name: t.ggml_type.name(),
            id: t.ggml_type.id(),
            supported: supported_list(),
        }),
    }
}

/// Pretty-printed JSON with a trailing newline, like `save_pretrained`.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| GgufError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| GgufError::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    })
}

/// State shared by the lazily materialised tensors while `safetensors` writes them.
struct Streamer<'a> {
    gguf: &'a GgufFile,
    progress: RefCell<&'a mut dyn FnMut(usize, usize)>,
    done: Cell<usize>,
    total: usize,
    /// The first failure; later tensors are skipped once it is set.
    failure: RefCell<Option<GgufError>>,
}

impl Streamer<'_> {
    /// Dequantizes (and un-permutes) one tensor into little-endian f32 bytes.
    fn materialize(&self, t: &TensorPlan) -> Result<Vec<u8>> {
        let (_, mut values) = self.gguf.dequantize(&t.gguf_name)?;
        if let Some(heads) = t.rope_heads {
            let row_len = if t.shape.len() == 2 { t.shape[1] } else { 1 };
            values = unpermute_rope_rows(&values, heads, row_len).ok_or_else(|| {
                GgufError::BadTensor {
                    path: self.gguf.path().to_path_buf(),
                    tensor: t.gguf_name.clone(),
                    reason: format!("shape {:?} does not split into {heads} heads", t.shape),
                }
            })?;
        }
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Ok(bytes)
    }
}

/// A tensor whose bytes are produced only when `safetensors` asks for them.
struct LazyTensor<'a> {
    plan: &'a TensorPlan,
    streamer: &'a Streamer<'a>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.plan.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let s = self.streamer;
        // `View::data` cannot fail, so a failure is parked and reported after the write; the
        // zeros written meanwhile are discarded with the temporary file.
        let bytes = if s.failure.borrow().is_some() {
            None
        } else {
            match s.materialize(self.plan) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    *s.failure.borrow_mut() = Some(e);
                    None
                }
            }
        };
        s.done.set(s.done.get() + 1);
        (s.progress.borrow_mut())(s.done.get(), s.total);
        Cow::Owned(bytes.unwrap_or_else(|| vec![0; self.data_len()]))
    }

    fn data_len(&self) -> usize {
        self.plan.shape.iter().product::<usize>() * 4
    }
}

/// Streams all planned tensors into `path` via a temporary file, so an interrupted or failed
/// import never leaves a plausible-looking but broken `model.safetensors`.
fn write_safetensors(
    gguf: &GgufFile,
    plan: &[TensorPlan],
    path: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let streamer = Streamer {
        gguf,
        progress: RefCell::new(progress),
        done: Cell::new(0),
        total: plan.len(),
        failure: RefCell::new(None),
    };
    let tensors = plan.iter().map(|t| {
        let view = LazyTensor {
            plan: t,
            streamer: &streamer,
        };
        (t.hf_name.clone(), view)
    });
    // transformers refuses safetensors files whose metadata lacks a known "format".
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.partial");
    let written = safetensors::serialize_to_file(tensors, Some(metadata), &tmp);
    let result = match (written, streamer.failure.take()) {
        (_, Some(e)) => Err(e),
        (Err(source), None) => Err(GgufError::Safetensors {
            path: path.to_path_buf(),
            source,
        }),
        (Ok(()), None) => std::fs::rename(&tmp, path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            op: "rename the finished temporary file to",
            source,
        }),
    };
    if result.is_err() {
        // Best effort: the temporary file is garbage either way.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
