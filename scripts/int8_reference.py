#!/usr/bin/env python3
"""Float64 reference of SmolLM2 (or any llama GGUF) as msn's integer products define it.

Every matrix product's input row is quantized to 8-bit blocks of 32 values the way msn's
`HostKernels::Native` does (f32 scale d = amax / 127, q = round-half-even(x * (127 / amax)) in
f32), then multiplied in float64 with the dequantized weights; everything else is a plain float64
llama forward. Against it the integer mode is checked for implementation errors, apart from the
quantization itself, and it says whether a greedy flip against the plain float64 reference is
the 8-bit activations' doing.

Usage: int8_reference.py MODEL.gguf --ids 1 2 3 [--greedy N] [--plain]
Prints JSON: top-5 per position, the first 16 logits of the last position, the greedy
continuation and the margin (top-1 minus top-2 logit) at each of its steps.
Needs `pip install gguf numpy`.
"""
import argparse, json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def load(path):
    r = GGUFReader(path)
    f = r.fields
    val = lambda k: f[k].contents()
    cfg = dict(n_layer=val('llama.block_count'), d=val('llama.embedding_length'),
               n_head=val('llama.attention.head_count'), n_kv=val('llama.attention.head_count_kv'),
               theta=val('llama.rope.freq_base'), eps=val('llama.attention.layer_norm_rms_epsilon'))
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in reversed(t.shape)]
        w[t.name] = a.reshape(shape) if len(shape) > 1 else a.reshape(-1)
    return cfg, w


def q8(x):
    """Rows of x as their 8-bit blocks' values (d * q), in float64."""
    x32 = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    amax = np.abs(x32).max(-1, keepdims=True)
    with np.errstate(divide='ignore'):
        inv = np.float32(127.0) / amax
    ok = (amax > 0) & np.isfinite(inv)
    d = np.where(ok, amax / np.float32(127.0), np.float32(0))
    inv = np.where(ok, inv, np.float32(0))
    q = np.clip(np.rint(x32 * inv), -127, 127)  # rint rounds half to even
    return (d.astype(np.float64) * q.astype(np.float64)).reshape(x.shape)


def rmsnorm(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope(x, pos, theta):
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


def forward(cfg, w, ids, act):
    T, d, H, KV = len(ids), cfg['d'], cfg['n_head'], cfg['n_kv']
    hd = d // H
    mm = lambda a, name: act(a) @ w[name].T
    x = w['token_embd.weight'][ids]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg['n_layer']):
        p = f'blk.{l}.'
        h = rmsnorm(x, w[p + 'attn_norm.weight'], cfg['eps'])
        q = mm(h, p + 'attn_q.weight').reshape(T, H, hd)
        k = mm(h, p + 'attn_k.weight').reshape(T, KV, hd)
        v = mm(h, p + 'attn_v.weight').reshape(T, KV, hd)
        q, k = rope(q, pos, cfg['theta']), rope(k, pos, cfg['theta'])
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        att = np.einsum('thd,shd->hts', q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum('hts,shd->thd', att, v).reshape(T, d)
        x = x + mm(o, p + 'attn_output.weight')
        h = rmsnorm(x, w[p + 'ffn_norm.weight'], cfg['eps'])
        g, u = mm(h, p + 'ffn_gate.weight'), mm(h, p + 'ffn_up.weight')
        x = x + mm((g / (1 + np.exp(-g))) * u, p + 'ffn_down.weight')
    x = rmsnorm(x, w['output_norm.weight'], cfg['eps'])
    return mm(x, 'output.weight' if 'output.weight' in w else 'token_embd.weight')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model')
    ap.add_argument('--ids', nargs='+', type=int, required=True)
    ap.add_argument('--greedy', type=int, default=0)
    ap.add_argument('--plain', action='store_true', help='no activation quantization')
    a = ap.parse_args()
    cfg, w = load(a.model)
    act = (lambda v: v) if a.plain else q8
    logits = forward(cfg, w, a.ids, act)
    top = [[[int(i), float(r[i])] for i in np.argsort(-r)[:5]] for r in logits]
    cont, margins = [], []
    for _ in range(a.greedy):
        last = forward(cfg, w, a.ids + cont, act)[-1]
        best = np.argsort(-last)[:2]
        cont.append(int(best[0]))
        margins.append(float(last[best[0]] - last[best[1]]))
    json.dump({'top5_per_position': top, 'last_logits_first_16': [float(v) for v in logits[-1][:16]],
               'greedy_continuation': cont, 'greedy_margins': margins}, sys.stdout)


if __name__ == '__main__':
    main()
