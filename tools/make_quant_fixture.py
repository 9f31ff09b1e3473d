#!/usr/bin/env python3
"""Writes tests/fixtures/quant_blocks.json: random GGML blocks of each supported type and their
values as dequantized by the `gguf` Python package (llama.cpp's own reference implementation),
so the Rust dequantiser is checked against code it shares nothing with.

Usage: pip install gguf numpy && python3 tools/make_quant_fixture.py
"""
import json
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

rng = np.random.default_rng(2406_17404)
# (type, block bytes, offsets of f16 scale fields that must be finite)
TYPES = {
    "Q4_0": (T.Q4_0, 18, [0]),
    "Q4_1": (T.Q4_1, 20, [0, 2]),
    "Q8_0": (T.Q8_0, 34, [0]),
    "Q4_K": (T.Q4_K, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 210, [208]),
    "F16": (T.F16, 2, [0]),
    "BF16": (T.BF16, 2, []),
    # Appended (the types above keep their blocks): llama.cpp's fallbacks for the K-quants on
    # rows that are not whole 256-value super-blocks.
    "Q5_0": (T.Q5_0, 22, [0]),
    "Q5_1": (T.Q5_1, 24, [0, 2]),
}
out = {}
for name, (ty, size, scales) in TYPES.items():
    n_blocks = 64 if size <= 2 else 3
    raw = bytearray(rng.integers(0, 256, size=size * n_blocks, dtype=np.uint8).tobytes())
    for b in range(n_blocks):
        for off in scales:
            v = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
            raw[b * size + off: b * size + off + 2] = v
    if name == "BF16":
        vals = rng.uniform(-4, 4, size=n_blocks).astype(np.float32)
        raw = bytearray((vals.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    data = np.frombuffer(bytes(raw), dtype=np.uint8)
    values = dequantize(data, ty).astype(np.float32).reshape(-1)
    out[name] = {"hex": bytes(raw).hex(), "values": [float(x) for x in values]}
with open("tests/fixtures/quant_blocks.json", "w") as f:
    json.dump(out, f)
print({k: len(v["values"]) for k, v in out.items()})
