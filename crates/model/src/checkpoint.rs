//! Reading and writing `model.safetensors` (single file or sharded with an index) into a
//! `VarStore`, matching tensors by their transformers name.
//!
//! Every error names the file and the tensor and says what was expected. Writes are atomic: a
//! temporary file is renamed into place, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{Kind, Tensor, nn::VarStore};

use crate::config::Family;
use crate::error::{ModelError, Result};

/// The safetensors files of a checkpoint dir: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Err(ModelError::config(
            &single,
            "no model.safetensors (nor model.safetensors.index.json) in the checkpoint directory",
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index.clone(),
            source,
        })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::config(&index, "expected an object field 'weight_map'"))?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The libtorch kind of a safetensors float dtype (`None` for integers and the rest).
pub(crate) fn float_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// The name a variable may have on disk. GPT-2 checkpoints saved from `GPT2Model` (the original
/// `gpt2` release) lack the `transformer.` prefix that `GPT2LMHeadModel` writes.
fn candidates(name: &str, family: Family) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if let Some(rest) = name
        .strip_prefix("transformer.")
        .filter(|_| family == Family::Gpt2)
    {
        names.push(rest.to_string());
    }
    names
}

/// Copies every variable of `vs` from the checkpoint in `dir`. Missing tensors, wrong shapes and
/// unsupported dtypes are errors; extra tensors (e.g. GPT-2's cached causal-mask buffers) are not.
pub fn load_weights(vs: &VarStore, dir: &Path, family: Family) -> Result<()> {
    load_weights_except(vs, dir, family, |_| false)
}

/// As [`load_weights`], but variables for which `fresh(name)` holds may be absent from the
/// checkpoint and keep their initialisation (a new head on a trained body).
pub fn load_weights_except(
    vs: &VarStore,
    dir: &Path,
    family: Family,
    fresh: impl Fn(&str) -> bool,
) -> Result<()> {
    let files = weight_files(dir)?;
    let mut maps = Vec::new();
    for path in &files {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only and lives only for this function; a checkpoint modified
        // while we read it is the user's race, as with any reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        maps.push((path.clone(), mmap));
    }
    let mut parsed = Vec::new();
    for (path, mmap) in &maps {
        let st = SafeTensors::deserialize(mmap).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        parsed.push((path, st));
    }
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, (_, st)) in parsed.iter().enumerate() {
        for name in st.names() {
            index.insert(name.to_string(), i);
        }
    }
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let found = candidates(name, family)
            .into_iter()
            .find_map(|n| index.get(&n).map(|i| (n, *i)));
        let Some((disk_name, i)) = found else {
            if fresh(name) {
                continue;
            }
            return Err(ModelError::Tensor {
                path: files[0].clone(),
                name: name.clone(),
                msg: format!(
                    "missing from the checkpoint (expected shape {:?})",
                    var.size()
                ),
            });
        };
        let (path, st) = &parsed[i];
        let view = st.tensor(&disk_name).map_err(|e| ModelError::Safetensors {
            path: (*path).clone(),
            msg: e.to_string(),
        })?;
        let tensor_err = |msg: String| ModelError::Tensor {
            path: (*path).clone(),
            name: disk_name.clone(),
            msg,
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape != var.size() {
            return Err(tensor_err(format!(
                "has shape {shape:?}, the config implies {:?}",
                var.size()
            )));
        }
        let kind = float_kind(view.dtype()).ok_or_else(|| {
            tensor_err(format!(
                "dtype {:?} is not a float type we can load",
                view.dtype()
            ))
        })?;
        let src = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tch::no_grad(|| var.shallow_clone().f_copy_(&src))?;
    }
    Ok(())
}

/// A tensor already copied to host memory, ready for the safetensors writer.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_host(t: &Tensor) -> Result<HostTensor> {
    let dtype = match t.kind() {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        k => {
            return Err(ModelError::Invalid(format!(
                "cannot save a tensor of kind {k:?}"
            )));
        }
    };
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(HostTensor { dtype, shape, data })
}

/// Writes named tensors to `path` atomically, with the `{"format": "pt"}` metadata transformers
/// checks for.
pub fn save_tensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let host: Vec<(String, HostTensor)> = named
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_host(t)?)))
        .collect::<Result<_>>()?;
    let views: Vec<(&str, &HostTensor)> = host.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| {
        ModelError::Safetensors {
            path: tmp.clone(),
            msg: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

/// Saves every variable of `vs` under its own name, sorted.
pub fn save_weights(vs: &VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(&named, path)
}
