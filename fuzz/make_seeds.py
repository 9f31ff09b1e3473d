#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from the test fixtures:

- gguf_header, gguf_model: llama.cpp's own GGUFs of each family (tests/fixtures/gguf_*).
- hf_checkpoint: each family's `config.json`, a NUL byte, `model.safetensors`, shrunk to a few
  kilobytes (8 wide, 2 layers, the fixtures' 320 tokens: random weights saved by transformers) so that the
  fuzzer mutates headers, not weights.
- hf_tokenizer: each fixture's `tokenizer.json`, a NUL byte, `tokenizer_config.json` with its
  chat template inside.

Usage: pip install torch transformers safetensors && python3 fuzz/make_seeds.py
"""
import json
import pathlib
import tempfile

import torch
import transformers

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "tests/fixtures"
corpus = root / "fuzz/corpus"
for target in ["gguf_header", "gguf_model", "hf_checkpoint", "hf_tokenizer"]:
    (corpus / target).mkdir(parents=True, exist_ok=True)

for gguf in sorted(fixtures.glob("gguf_*/*.gguf")):
    if gguf.stat().st_size > 200_000:
        continue
    name = f"{gguf.parent.name}-{gguf.stem}"
    for target in ["gguf_header", "gguf_model"]:
        (corpus / target / name).write_bytes(gguf.read_bytes())

for hf in sorted(fixtures.glob("transformers_*")):
    config = json.loads((hf / "config.json").read_text())
    small = dict(config, hidden_size=8, intermediate_size=8, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=4, num_hidden_layers=2, vocab_size=320)
    if "layer_types" in small:
        small["layer_types"] = small["layer_types"][-2:]
    rope = small.get("rope_parameters") or {}
    for params in [rope, *[v for v in rope.values() if isinstance(v, dict)]]:
        for key in ["short_factor", "long_factor"]:
            if key in params:
                params[key] = params[key][:2]
    cfg = transformers.AutoConfig.for_model(**small)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out)
        out = pathlib.Path(out)
        seed = (out / "config.json").read_bytes() + b"\0" + (out / "model.safetensors").read_bytes()
    (corpus / "hf_checkpoint" / hf.name).write_bytes(seed)
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    template = hf / "chat_template.jinja"
    if template.exists():
        tc["chat_template"] = template.read_text()
    (corpus / "hf_tokenizer" / hf.name).write_bytes(
        (hf / "tokenizer.json").read_bytes() + b"\0" + json.dumps(tc).encode())
    print(f"{hf.name}: {len(seed)} bytes")
