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
    let value = crate::config::read_json_file(&index)?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::config(&index, "expected an object field 'weight_map'"))?;
    let mut files = Vec::new();
    for (tensor, file) in map {
        // A shard is a file next to the index, as transformers writes it; a path elsewhere
        // would make the index a way to read any file.
        let name = file
            .as_str()
            .filter(|f| !f.is_empty() && Path::new(f).file_name() == Some(f.as_ref()))
            .ok_or_else(|| {
                ModelError::config(
                    &index,
                    format!(
                        "weight_map['{tensor}']: expected the file name of a shard next to the \
                         index, got {file}"
                    ),
                )
            })?;
        files.push(dir.join(name));
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ModelError::config(&index, "weight_map names no shard"));
    }
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

/// A checkpoint's safetensors files, memory-mapped and with their headers parsed (every name,
/// dtype and shape, no tensor data read): enough to check a config against the weights before
/// anything is allocated ([`Checkpoint::check`]), then to copy them ([`Checkpoint::copy_into`]).
pub struct Checkpoint {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// Tensor name -> where it is and what it holds.
    index: HashMap<String, Entry>,
}

/// One tensor's header entry: the index of its file in `Checkpoint::files`, dtype and shape.
type Entry = (usize, Dtype, Vec<usize>);

impl Checkpoint {
    /// Maps `dir`'s `model.safetensors` (or its shards) and reads their headers.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in weight_files(dir)? {
            let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: the map is read-only and lives as long as this value; a checkpoint
            // modified while we read it is the user's race, as with any reader.
            let mmap =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                msg: e.to_string(),
            })?;
            for (name, view) in st.tensors() {
                index.insert(name, (files.len(), view.dtype(), view.shape().to_vec()));
            }
            files.push((path, mmap));
        }
        Ok(Self { files, index })
    }

    /// The name `name` has in this checkpoint (see [`candidates`]), with its header entry.
    fn find(&self, name: &str, family: Family) -> Option<(String, &Entry)> {
        candidates(name, family)
            .into_iter()
            .find_map(|n| self.index.get(&n).map(|e| (n, e)))
    }

    /// Checks, from the headers alone, that every tensor in `expected` (a config's implied
    /// tensors, `crate::footprint::expected_tensors`) is present with that shape and a float
    /// dtype; names for which `fresh` holds may be absent. The first problem is the error, and
    /// it names `config` as what implied the tensor.
    pub fn check(
        &self,
        expected: impl Iterator<Item = (String, Vec<i64>)>,
        family: Family,
        fresh: &dyn Fn(&str) -> bool,
        config: &Path,
    ) -> Result<()> {
        let implied_by = config.display().to_string();
        for (name, want) in expected {
            self.check_one(&name, &want, family, fresh, &implied_by)?;
        }
        Ok(())
    }

    /// One tensor of [`Self::check`]: its name on disk and file index, `None` when it is absent
    /// and `fresh`.
    fn check_one(
        &self,
        name: &str,
        want: &[i64],
        family: Family,
        fresh: &dyn Fn(&str) -> bool,
        implied_by: &str,
    ) -> Result<Option<(String, usize)>> {
        let Some((disk_name, (i, dtype, shape))) = self.find(name, family) else {
            if fresh(name) {
                return Ok(None);
            }
            return Err(ModelError::Tensor {
                path: self.files[0].0.clone(),
                name: name.to_string(),
                msg: format!(
                    "missing from the checkpoint, but {implied_by} implies it (shape {want:?}); \
                     do the config and the weights belong together?"
                ),
            });
        };
        let err = |msg: String| ModelError::Tensor {
            path: self.files[*i].0.clone(),
            name: disk_name.clone(),
            msg,
        };
        let have: Vec<i64> = shape
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(-1))
            .collect();
        if have != want {
            return Err(err(format!(
                "has shape {have:?}, {implied_by} implies {want:?}"
            )));
        }
        if float_kind(*dtype).is_none() {
            return Err(err(format!(
                "dtype {dtype:?} is not a float type we can load"
            )));
        }
        Ok(Some((disk_name, *i)))
    }

    /// Copies every variable of `vs` from the checkpoint; names for which `fresh` holds may be
    /// absent and keep their initialisation. Each tensor is checked as in [`Self::check`], so
    /// this is safe on a store that was not checked first.
    pub fn copy_into(
        &self,
        vs: &VarStore,
        family: Family,
        fresh: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let parsed = self
            .files
            .iter()
            .map(|(path, mmap)| {
                SafeTensors::deserialize(mmap).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let vars = vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let want = var.size();
            let found = self.check_one(name, &want, family, fresh, "the model being loaded")?;
            let Some((disk_name, i)) = found else {
                continue;
            };
            let view = parsed[i]
                .tensor(&disk_name)
                .map_err(|e| ModelError::Safetensors {
                    path: self.files[i].0.clone(),
                    msg: e.to_string(),
                })?;
            // The dtype was checked by `check_one`.
            let kind = float_kind(view.dtype()).unwrap_or(Kind::Float);
            let src = Tensor::f_from_data_size(view.data(), &want, kind)?;
            tch::no_grad(|| var.shallow_clone().f_copy_(&src))?;
        }
        Ok(())
    }
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
    Checkpoint::open(dir)?.copy_into(vs, family, &fresh)
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
