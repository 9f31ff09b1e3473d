#!/usr/bin/env python3
"""Writes an F16 GGUF in the shape of a real llama (Llama 3.2 1B, Llama 3.1 8B) with random
weights and the demo model's tokenizer, for measuring speed and memory at real sizes.

    python3 tools/make_scale_gguf.py --shape 1b --tokenizer SmolLM2.Q4_1.gguf --out llama-1b.F16.gguf

The text such a model writes is noise: these files test speed and memory only (correctness is
checked on the real model). llama.cpp's `llama-quantize` turns the file into Q4_0 or Q4_K_M
(`scripts/scale_ggufs.sh` does both). Tensors are streamed to the file one at a time, so an 8B
file (16 GB of f16) needs little memory; the values are slices of one pool of normal(0, 0.02)
draws (speed and memory do not depend on them), norms are 1.
"""

import argparse
import math
import sys
import time

import gguf
import numpy as np

# (layers, hidden, heads, kv heads, ffn, tied embeddings): the published configs.
SHAPES = {
    "1b": (16, 2048, 32, 8, 8192, True),  # Llama 3.2 1B
    "8b": (32, 4096, 32, 8, 14336, False),  # Llama 3.1 8B
}
CONTEXT = 131072
ROPE_THETA = 500000.0
# Llama 3.1 / 3.2's llama3 RoPE scaling, as rope_freqs.weight (what llama.cpp's converter
# writes): factor 32 for 1B / 8 for 8B, low 1, high 4, original context 8192.
ROPE_FACTOR = {"1b": 32.0, "8b": 8.0}


def rope_freqs(head_dim, factor, low=1.0, high=4.0, old_ctx=8192):
    """The per-frequency divisors llama.cpp's converter stores for llama3 scaling."""
    freqs = 1.0 / (ROPE_THETA ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def tensors(shape_name, vocab):
    layers, d, h, kv, ff, tied = SHAPES[shape_name]
    hd = d // h
    yield "token_embd.weight", (vocab, d), np.float16
    if not tied:
        yield "output.weight", (vocab, d), np.float16
    yield "output_norm.weight", (d,), np.float32
    yield "rope_freqs.weight", (hd // 2,), np.float32
    for i in range(layers):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (d,), np.float32
        yield p + "attn_q.weight", (h * hd, d), np.float16
        yield p + "attn_k.weight", (kv * hd, d), np.float16
        yield p + "attn_v.weight", (kv * hd, d), np.float16
        yield p + "attn_output.weight", (d, h * hd), np.float16
        yield p + "ffn_norm.weight", (d,), np.float32
        yield p + "ffn_gate.weight", (ff, d), np.float16
        yield p + "ffn_up.weight", (ff, d), np.float16
        yield p + "ffn_down.weight", (d, ff), np.float16


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--tokenizer", required=True, help="a GGUF whose tokenizer.* keys are copied")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    layers, d, h, kv, ff, tied = SHAPES[a.shape]
    src = gguf.GGUFReader(a.tokenizer)
    vocab = len(src.fields["tokenizer.ggml.tokens"].contents())

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"random llama, {a.shape} shape")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(h)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(d // h)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, field in src.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, field.contents(), vtype, sub)

    specs = list(tensors(a.shape, vocab))
    for name, shape, dt in specs:
        n = int(np.prod(shape))
        w.add_tensor_info(name, shape, np.dtype(dt), n * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(1 << 26, dtype=np.float32) * 0.02).astype(np.float16)
    total = sum(int(np.prod(s)) * np.dtype(t).itemsize for _, s, t in specs)
    done, start, shown = 0, time.time(), 0.0
    for i, (name, shape, dt) in enumerate(specs):
        n = int(np.prod(shape))
        if name == "rope_freqs.weight":
            data = rope_freqs(d // h, ROPE_FACTOR[a.shape])
        elif dt == np.float32:
            data = np.ones(shape, dtype=np.float32)
        else:
            # Cyclic slices of the pool from a per-tensor offset.
            off = (i * 7919) % pool.size
            idx = (np.arange(n, dtype=np.int64) + off) % pool.size if n > pool.size - off else None
            flat = pool[idx] if idx is not None else pool[off:off + n]
            data = flat.reshape(shape)
        w.write_tensor_data(data)
        done += data.nbytes
        now = time.time()
        if now - shown < 1.0 and i + 1 < len(specs):
            continue
        shown = now
        rate = done / max(now - start, 1e-9)
        print(f"\r{done / 1e9:6.2f} / {total / 1e9:.2f} GB  {rate / 1e6:6.0f} MB/s  "
              f"ETA {(total - done) / max(rate, 1):5.0f} s", end="", file=sys.stderr)
    w.close()
    print(f"\nwrote {a.out}: {a.shape} shape, vocabulary {vocab}, {total / 1e9:.2f} GB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
