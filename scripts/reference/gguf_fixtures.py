#!/usr/bin/env python3
"""Builds the GGUF dequantization fixtures of crates/gguf from llama.cpp's own Python package.

Writes, under crates/gguf/tests/fixtures/:
  quants.gguf                     one small tensor per ggml type rlhf dequantizes, plus metadata of
                                  every GGUF value type, with a non-default alignment (64);
  quants_reference.safetensors    for each tensor, the f32 values `gguf.quants.dequantize` (numpy,
                                  gguf==0.19.0) gives, in PyTorch shape order.

Float and legacy types are quantized from random normals with gguf-py's own quantizers. gguf-py
cannot quantize K-quants, so those tensors are random bytes (every bit pattern is a valid block)
with the f16 scale fields overwritten by small positive values so the outputs stay finite.

Run from the repository root with the project venv (pip install gguf==0.19.0 numpy safetensors):
    .venv/bin/python scripts/reference/gguf_fixtures.py
The output is deterministic (fixed seed); the Rust test crates/gguf/tests/dequant_parity.rs
compares against it.
"""

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parents[2] / "crates" / "gguf" / "tests" / "fixtures"

# Legacy and float types: quantize these shapes (rows, row length) of random normals.
QUANTIZED = {
    T.F16: (4, 64),
    T.BF16: (4, 64),
    T.Q8_0: (4, 64),
    T.Q4_0: (4, 64),
    T.Q4_1: (4, 64),
    T.Q5_0: (4, 64),
    T.Q5_1: (4, 64),
}

# K-quants: byte offsets of the f16 scale fields (d, and dmin where there is one) in a block.
K_SCALE_OFFSETS = {
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}
K_ROWS = 2  # each row is one 256-element super-block


def random_k_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    """Random raw K-quant blocks with sane f16 scales, shape (n_blocks, bytes per block)."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in K_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
        blocks[:, off : off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def add_metadata(w: GGUFWriter) -> None:
    """One key per GGUF value type, checked by the Rust reader test."""
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_uint64("test.u64", 2**40)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", -2.5)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_str", ["a", "bc", ""])


def main() -> None:
    rng = np.random.default_rng(20240611)
    OUT.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(OUT / "quants.gguf", arch="fixture")
    add_metadata(w)
    reference: dict[str, np.ndarray] = {}

    # A 3-d F32 tensor checks that GGUF's innermost-first dims come back in PyTorch order.
    f32 = rng.standard_normal((2, 3, 32)).astype(np.float32)
    w.add_tensor("f32", f32)
    reference["f32"] = f32

    for qtype, shape in QUANTIZED.items():
        x = rng.standard_normal(shape).astype(np.float32)
        raw = x.astype(np.float16) if qtype == T.F16 else quantize(x, qtype)
        name = qtype.name.lower()
        w.add_tensor(name, raw, raw_dtype=None if qtype == T.F16 else qtype)
        raw_u8 = raw.view(np.uint8)
        reference[name] = dequantize(raw_u8, qtype).astype(np.float32).reshape(shape)

    for qtype in K_SCALE_OFFSETS:
        blocks = random_k_blocks(rng, qtype, K_ROWS)
        name = qtype.name.lower()
        w.add_tensor(name, blocks, raw_dtype=qtype)
        reference[name] = dequantize(blocks, qtype).astype(np.float32).reshape(K_ROWS, 256)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v) for k, v in reference.items()},
              str(OUT / "quants_reference.safetensors"))
    for name, values in reference.items():
        assert np.isfinite(values).all(), name
        print(f"{name:6s} {list(values.shape)}")


if __name__ == "__main__":
    main()
