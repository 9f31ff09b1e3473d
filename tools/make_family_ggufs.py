#!/usr/bin/env python3
"""Writes tests/fixtures/gguf_{qwen2,qwen3,phi3,phi3_longrope,gemma,gemma2,gemma3_text}/: the transformers fixtures of
tools/make_family_fixtures.py converted by llama.cpp's own `convert_hf_to_gguf.py` (f32) and
quantized by its `llama-quantize` (Q8_0), each with `logits.json`: transformers' float64 logits of
the model whose weights are the GGUF's own, read back and dequantized by llama.cpp's `gguf`
package (for Q8_0, the quantized weights are the reference). The Rust GGUF loader is checked
against llama.cpp's converter, its quantizer and its tensor names.

The fixtures' word-level tokenizer is no BPE vocabulary llama.cpp knows, so the converter is told
the pre-tokenizer (`qwen2`) instead of hashing it; the tokenizer is not what these files test.

Usage: python3 tools/make_family_ggufs.py LLAMA_CPP_SOURCE LLAMA_QUANTIZE [FAMILY...]
  LLAMA_CPP_SOURCE: llama.cpp's source tree (the `vendor/llama.cpp` of the llama-cpp-python
  source distribution scripts/vs_llamacpp.sh downloads); LLAMA_QUANTIZE: its built binary.
Needs: pip install torch transformers safetensors sentencepiece
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import torch
import transformers

src = pathlib.Path(sys.argv[1]).resolve()
quantize = sys.argv[2]
root = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures"
sys.path.insert(0, str(src))
sys.path.insert(0, str(src / "gguf-py"))
import gguf  # noqa: E402  (llama.cpp's own copy)


def convert(hf_dir: pathlib.Path, out: pathlib.Path) -> None:
    """convert_hf_to_gguf.py --outtype f32, with the pre-tokenizer named instead of hashed."""
    code = f"""
import sys
sys.argv = ["convert_hf_to_gguf.py", {str(hf_dir)!r}, "--outtype", "f32", "--outfile", {str(out)!r}]
sys.path.insert(0, {str(src)!r})
import convert_hf_to_gguf
from conversion import base
def no_sentencepiece(self):
    raise FileNotFoundError("no tokenizer.model")
base.TextModel._set_vocab_sentencepiece = no_sentencepiece
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
from conversion import gemma
gemma.Gemma2Model.set_vocab = base.TextModel._set_vocab_gpt2
gemma.GemmaModel.set_vocab = base.TextModel._set_vocab_gpt2
convert_hf_to_gguf.main()
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=src)


def reference_logits(hf_dir: pathlib.Path, gguf_path: pathlib.Path, ids: list) -> list:
    """transformers' float64 logits with every weight replaced by the GGUF's, dequantized."""
    # llama.cpp scales Gemma's attention scores by head_dim^-1/2 (hidden / heads for the 27B
    # models): the GGUF does not carry query_pre_attn_scalar, so its reference uses that.
    config = transformers.AutoConfig.from_pretrained(hf_dir)
    extra = {}
    if config.model_type in ("gemma2", "gemma3_text"):
        extra["query_pre_attn_scalar"] = config.head_dim
    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, attn_implementation="eager", **extra).double().eval()
    reader = gguf.GGUFReader(gguf_path)
    stored = {t.name: t for t in reader.tensors}
    arch = reader.fields["general.architecture"]
    arch = bytes(arch.parts[arch.data[0]]).decode()
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, model.config.num_hidden_layers)
    state = model.state_dict()
    for hf_name, value in state.items():
        base, suffix = hf_name.rsplit(".", 1)
        g = names.get_name(base)
        if g is None or f"{g}.{suffix}" not in stored:
            if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue
            raise SystemExit(f"{hf_name}: not in {gguf_path.name}")
        t = stored[f"{g}.{suffix}"]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        if model.config.model_type.startswith("gemma") and hf_name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's 1 + w
        state[hf_name] = torch.from_numpy(w.reshape(value.shape).copy())
    model.load_state_dict(state)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].tolist()


FAMILIES = ["qwen2", "qwen3", "phi3", "phi3_longrope", "gemma", "gemma2", "gemma3_text"]
for family in sys.argv[3:] or FAMILIES:
    hf_dir = root / f"transformers_{family}"
    out = root / f"gguf_{family}"
    out.mkdir(exist_ok=True)
    f32 = out / "model.f32.gguf"
    q8 = out / "model.q8_0.gguf"
    convert(hf_dir, f32)
    env = {**os.environ, "LD_LIBRARY_PATH": str(pathlib.Path(quantize).resolve().parent)}
    subprocess.run([quantize, str(f32), str(q8), "Q8_0"], check=True, capture_output=True, env=env)
    ids = json.loads((hf_dir / "logits.json").read_text())["ids"]
    refs = {p.name: reference_logits(hf_dir, p, ids) for p in [f32, q8]}
    (out / "logits.json").write_text(json.dumps({
        "llama.cpp": str(src.name),
        "ids": ids,
        "logits": {k: [[round(v, 9) for v in row] for row in rows] for k, rows in refs.items()},
    }))
    print(f"{family}: {f32.stat().st_size} + {q8.stat().st_size} bytes")
