//! A minimal GGUF v3 writer for tests: just enough to craft valid files and then break them.
//!
//! Not a general-purpose writer (no big-endian, no nested arrays); real fixtures come from
//! llama.cpp's own `gguf` Python package via `scripts/reference/gguf_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;

const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// Builds a GGUF image in memory.
#[derive(Clone)]
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    fn kv(mut self, key: &str, ty: u32, payload: Vec<u8>) -> Self {
        self.kvs.push((key.to_string(), ty, payload));
        self
    }

    /// Drops a key, so a test can set it to another value.
    pub fn remove(mut self, key: &str) -> Self {
        self.kvs.retain(|(k, _, _)| k != key);
        self
    }

    pub fn u32(self, key: &str, v: u32) -> Self {
        self.kv(key, T_U32, v.to_le_bytes().to_vec())
    }

    pub fn f32(self, key: &str, v: f32) -> Self {
        self.kv(key, T_F32, v.to_le_bytes().to_vec())
    }

    pub fn bool(self, key: &str, v: bool) -> Self {
        self.kv(key, T_BOOL, vec![v as u8])
    }

    pub fn str(self, key: &str, v: &str) -> Self {
        self.kv(key, T_STRING, gguf_string(v))
    }

    pub fn str_array(self, key: &str, items: &[&str]) -> Self {
        let mut p = T_STRING.to_le_bytes().to_vec();
        p.extend((items.len() as u64).to_le_bytes());
        for s in items {
            p.extend(gguf_string(s));
        }
        self.kv(key, T_ARRAY, p)
    }

    pub fn i32_array(self, key: &str, items: &[i32]) -> Self {
        let mut p = T_I32.to_le_bytes().to_vec();
        p.extend((items.len() as u64).to_le_bytes());
        for v in items {
            p.extend(v.to_le_bytes());
        }
        self.kv(key, T_ARRAY, p)
    }

    /// A tensor with explicit ggml dims (innermost first), type id and raw bytes.
    pub fn tensor_raw(
        mut self,
        name: &str,
        ggml_dims: &[u64],
        type_id: u32,
        data: Vec<u8>,
    ) -> Self {
        self.tensors
            .push((name.to_string(), ggml_dims.to_vec(), type_id, data));
        self
    }

    /// An F32 tensor given in PyTorch shape order.
    pub fn tensor_f32(self, name: &str, torch_shape: &[usize], data: &[f32]) -> Self {
        assert_eq!(torch_shape.iter().product::<usize>(), data.len(), "{name}");
        let dims: Vec<u64> = torch_shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor_raw(name, &dims, 0, bytes)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (key, ty, payload) in &self.kvs {
            out.extend(gguf_string(key));
            out.extend(ty.to_le_bytes());
            out.extend(payload);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        for (_, _, _, data) in &self.tensors {
            out.resize(
                (out.len() as u64).next_multiple_of(self.alignment) as usize,
                0,
            );
            out.extend(data);
        }
        out
    }
}

/// A fresh, empty directory under the system temp dir, unique per test and process.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-gguf-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}
