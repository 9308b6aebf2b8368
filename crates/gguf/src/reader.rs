//! The GGUF container reader: header, metadata table, tensor infos and tensor byte ranges.
//!
//! Follows the GGUF spec in ggml's `docs/gguf.md` (v2/v3, little-endian): magic `GGUF`, version,
//! tensor count, key/value count, the key/values, the tensor infos, padding to `general.alignment`
//! (default 32), then the tensor data. Every length and offset read from the file is checked
//! against the file size before use, so a hostile or truncated file yields an error, never a panic
//! or a huge allocation. Decoding tensor bytes into floats is `dequant.rs`'s job, not this one's.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dequant;
use crate::error::{GgufError, Result};
use crate::metadata::{MetaValue, Metadata};
use crate::types::{GgmlType, supported_list};

/// Alignment of the data section when `general.alignment` is absent (GGUF spec).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but never deep in practice; the cap keeps a crafted file from
/// recursing the parser into a stack overflow.
const MAX_ARRAY_NESTING: usize = 8;

/// Where one tensor lives in the file and how to read it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored: innermost (contiguous) first, i.e. ggml's `ne[0], ne[1], ...`.
    pub ggml_dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Absolute byte range of the data in the file.
    pub file_range: std::ops::Range<u64>,
}

impl TensorInfo {
    /// The shape in PyTorch order (outermost first): the reverse of `ggml_dims`.
    pub fn shape(&self) -> Vec<usize> {
        // Dims were checked to fit in usize (their product fits in the file) at open time.
        self.ggml_dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn n_elements(&self) -> u64 {
        self.ggml_dims.iter().product()
    }
}

/// File bytes: memory-mapped for real files, owned for in-memory parsing (tests, small blobs).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open GGUF file: parsed header, metadata and tensor infos over the mapped bytes.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.entries().len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`. Tensor data is not touched until it is dequantized.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |op, source| GgufError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len == 0 {
            // mmap of an empty file fails with an unhelpful EINVAL; report truncation instead.
            return Self::from_bytes(path, Vec::new());
        }
        // SAFETY: the map is read-only. As with every mmap-based loader, another process
        // truncating the file while we read it is undefined behaviour we accept; llama.cpp,
        // safetensors and candle make the same trade for zero-copy access to multi-GB files.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io("memory-map", e))?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// Parses a GGUF image held in memory; `path` is only used in error messages.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.as_ref(), Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<Self> {
        let mut cur = Cursor::new(&bytes, path);
        let (version, n_tensors, n_kv) = parse_header(&mut cur)?;
        let mut entries = Vec::with_capacity(cur.capacity_hint(n_kv, 13));
        let mut keys = HashSet::new();
        for i in 0..n_kv {
            let (key, value) = parse_kv(&mut cur, i)?;
            if !keys.insert(key.clone()) {
                // llama.cpp rejects this too; silently keeping one value would hide a bad file.
                return Err(GgufError::BadMetadata {
                    path: path.to_path_buf(),
                    what: format!("key '{key}'"),
                    reason: "appears twice".into(),
                });
            }
            entries.push((key, value));
        }
        let metadata = Metadata::new(path, entries);
        let alignment = alignment(&metadata, path)?;
        let mut raw = Vec::with_capacity(cur.capacity_hint(n_tensors, 24));
        for i in 0..n_tensors {
            raw.push(parse_tensor_info(&mut cur, i)?);
        }
        let data_offset = (cur.pos as u64).next_multiple_of(alignment);
        let tensors = place_tensors(path, raw, alignment, data_offset, bytes.len() as u64)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::TensorNotFound {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The raw bytes of a tensor (bounds were checked at open time).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info_or_err(name)?;
        let r = &info.file_range;
        Ok(&self.bytes[r.start as usize..r.end as usize])
    }

    /// Decodes a tensor to f32. Returns the shape in PyTorch order (outermost first) and the
    /// values in row-major order, exactly as ggml lays them out.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.info_or_err(name)?;
        if !info.ggml_type.is_dequantizable() {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                tensor: name.to_string(),
                type_name: info.ggml_type.name(),
                id: info.ggml_type.id(),
                supported: supported_list(),
            });
        }
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0f32; info.n_elements() as usize];
        dequant::dequantize_into(info.ggml_type, bytes, &mut out).map_err(|reason| {
            GgufError::BadTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                reason,
            }
        })?;
        Ok((info.shape(), out))
    }
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Cursor { buf, pos: 0, path }
    }

    /// A `Vec` capacity for `count` items of at least `min_bytes` each that the remaining bytes
    /// could actually hold, so a forged count cannot trigger a huge allocation.
    fn capacity_hint(&self, count: u64, min_bytes: u64) -> usize {
        let remaining = (self.buf.len() - self.pos) as u64;
        count.min(remaining / min_bytes.max(1)) as usize
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let start = self.pos as u64;
        let end = start.saturating_add(n);
        if end > self.buf.len() as u64 {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                start,
                end,
                file_len: self.buf.len() as u64,
            });
        }
        let bytes = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::BadMetadata {
            path: self.path.to_path_buf(),
            what: what(),
            reason: format!("string is not valid UTF-8 ({e})"),
        })
    }
}

fn parse_header(cur: &mut Cursor) -> Result<(u32, u64, u64)> {
    let magic: [u8; 4] = cur.array(&|| "the magic bytes".into())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            path: cur.path.to_path_buf(),
            found: magic,
        });
    }
    let version = cur.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        let hint = if version == 1 {
            " (v1 files predate August 2023; re-convert with a current llama.cpp)"
        } else if matches!(version.swap_bytes(), 1..=3) {
            " (this looks like a big-endian file; convert it to little-endian)"
        } else {
            ""
        };
        return Err(GgufError::UnsupportedVersion {
            path: cur.path.to_path_buf(),
            version,
            hint,
        });
    }
    let n_tensors = cur.u64(&|| "the tensor count".into())?;
    let n_kv = cur.u64(&|| "the metadata count".into())?;
    Ok((version, n_tensors, n_kv))
}

fn parse_kv(cur: &mut Cursor, index: u64) -> Result<(String, MetaValue)> {
    let key = cur.string(&|| format!("the key of metadata entry #{index}"))?;
    let ty = cur.u32(&|| format!("the value type of metadata key '{key}'"))?;
    let value = parse_value(cur, ty, &key, 0)?;
    Ok((key, value))
}

fn parse_value(cur: &mut Cursor, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
    let what = || format!("the value of metadata key '{key}'");
    Ok(match ty {
        0 => MetaValue::U8(u8::from_le_bytes(cur.array(&what)?)),
        1 => MetaValue::I8(i8::from_le_bytes(cur.array(&what)?)),
        2 => MetaValue::U16(u16::from_le_bytes(cur.array(&what)?)),
        3 => MetaValue::I16(i16::from_le_bytes(cur.array(&what)?)),
        4 => MetaValue::U32(u32::from_le_bytes(cur.array(&what)?)),
        5 => MetaValue::I32(i32::from_le_bytes(cur.array(&what)?)),
        6 => MetaValue::F32(f32::from_le_bytes(cur.array(&what)?)),
        7 => MetaValue::Bool(cur.array::<1>(&what)?[0] != 0),
        8 => MetaValue::String(cur.string(&what)?),
        9 => parse_array(cur, key, depth)?,
        10 => MetaValue::U64(u64::from_le_bytes(cur.array(&what)?)),
        11 => MetaValue::I64(i64::from_le_bytes(cur.array(&what)?)),
        12 => MetaValue::F64(f64::from_le_bytes(cur.array(&what)?)),
        other => {
            return Err(GgufError::BadMetadata {
                path: cur.path.to_path_buf(),
                what: format!("key '{key}'"),
                reason: format!("unknown value type {other}; expected 0..=12"),
            });
        }
    })
}

fn parse_array(cur: &mut Cursor, key: &str, depth: usize) -> Result<MetaValue> {
    if depth >= MAX_ARRAY_NESTING {
        return Err(GgufError::BadMetadata {
            path: cur.path.to_path_buf(),
            what: format!("key '{key}'"),
            reason: format!("arrays nested deeper than {MAX_ARRAY_NESTING} levels"),
        });
    }
    let elem_ty = cur.u32(&|| format!("the element type of array '{key}'"))?;
    let count = cur.u64(&|| format!("the length of array '{key}'"))?;
    let mut items = Vec::with_capacity(cur.capacity_hint(count, 1));
    for _ in 0..count {
        items.push(parse_value(cur, elem_ty, key, depth + 1)?);
    }
    Ok(MetaValue::Array(items))
}

fn alignment(metadata: &Metadata, path: &Path) -> Result<u64> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => Err(GgufError::BadMetadata {
            path: path.to_path_buf(),
            what: "key 'general.alignment'".into(),
            reason: format!("{value:?} is not a power of two"),
        }),
    }
}

/// A tensor info as read, before its offset is checked against the file.
struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn parse_tensor_info(cur: &mut Cursor, index: u64) -> Result<RawTensorInfo> {
    let name = cur.string(&|| format!("the name of tensor info #{index}"))?;
    let n_dims = cur.u32(&|| format!("the dimension count of tensor '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::BadTensor {
            path: cur.path.to_path_buf(),
            tensor: name,
            reason: format!("has {n_dims} dimensions; ggml allows at most {MAX_DIMS}"),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&|| format!("the dimensions of tensor '{name}'"))?);
    }
    let type_id = cur.u32(&|| format!("the type of tensor '{name}'"))?;
    let offset = cur.u64(&|| format!("the data offset of tensor '{name}'"))?;
    Ok(RawTensorInfo {
        name,
        dims,
        type_id,
        offset,
    })
}

/// Resolves types and checks every tensor's byte range: aligned, whole blocks, inside the file.
fn place_tensors(
    path: &Path,
    raw: Vec<RawTensorInfo>,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for t in raw {
        let bad = |reason: String| GgufError::BadTensor {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            reason,
        };
        if !seen.insert(t.name.clone()) {
            return Err(bad("appears twice in the tensor table".into()));
        }
        let ggml_type = GgmlType::from_id(t.type_id).ok_or_else(|| {
            bad(format!(
                "has ggml type id {}, unknown to rlhf (written by a newer llama.cpp?); \
                 supported: {}",
                t.type_id,
                supported_list()
            ))
        })?;
        let n_bytes = tensor_byte_size(&t.dims, ggml_type).map_err(bad)?;
        if t.offset % alignment != 0 {
            return Err(bad(format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                t.offset
            )));
        }
        let file_range = data_offset
            .checked_add(t.offset)
            .and_then(|start| Some(start..start.checked_add(n_bytes)?))
            .filter(|r| r.end <= file_len);
        let Some(file_range) = file_range else {
            return Err(bad(format!(
                "data at offset {} + {n_bytes} bytes (from data section start {data_offset}) lies \
                 outside the file of {file_len} bytes (truncated download?)",
                t.offset
            )));
        };
        out.push(TensorInfo {
            name: t.name,
            ggml_dims: t.dims,
            ggml_type,
            offset: t.offset,
            file_range,
        });
    }
    Ok(out)
}

/// Bytes a tensor of these dims occupies; rows must be whole blocks, as ggml requires.
fn tensor_byte_size(dims: &[u64], ty: GgmlType) -> std::result::Result<u64, String> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let row = dims.first().copied().unwrap_or(1);
    if row % ty.block_size() != 0 {
        return Err(format!(
            "row length {row} (ne[0]) is not a multiple of the {} block size {}",
            ty.name(),
            ty.block_size()
        ));
    }
    ty.byte_size(n)
        .ok_or_else(|| format!("byte size of dimensions {dims:?} overflows"))
}
