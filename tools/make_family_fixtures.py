#!/usr/bin/env python3
"""Writes tests/fixtures/transformers_qwen2/ and transformers_qwen3/: a tiny random Qwen 2 and
Qwen 3 saved by transformers (`config.json`, `model.safetensors`), the word-level tokenizer of
the llama fixture, and `logits.json`: transformers' float64 logits for 24 random ids and its
float64 greedy continuation of them. Every bias, norm gain and per-head q/k norm gain is drawn
at random (transformers initialises them to 0 and 1, which would hide a missing one). The Rust
loaders are checked against code they share nothing with.

Usage: pip install torch transformers safetensors && python3 tools/make_family_fixtures.py
"""
import json
import pathlib
import shutil

import torch
import transformers

root = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures"
common = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    initializer_range=0.25,
    tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
)
families = {
    # Qwen 2: q, k, v biases; tied embeddings as the small Qwen 2.5 models have them.
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(common, tie_word_embeddings=True)),
    # Qwen 3: per-head RMSNorm of q and k, a head wider than hidden / heads.
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
              dict(common, head_dim=16, attention_bias=False)),
}
for name, (Config, Model, kwargs) in families.items():
    out = root / f"transformers_{name}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2406_17404)
    model = Model(Config(**kwargs)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif "norm" in pname:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(root / "transformers_llama3" / f, out / f)
    ids = [int(i) for i in torch.randint(0, 64, (24,), generator=torch.Generator().manual_seed(7))]
    model = model.double()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, len(ids):]
    (out / "logits.json").write_text(json.dumps({
        "transformers": transformers.__version__,
        "ids": ids,
        "logits": [[round(v, 9) for v in row] for row in logits.tolist()],
        "greedy": [int(t) for t in greedy],
    }))
    params = sorted(n for n, _ in model.named_parameters() if ".layers.0." in n)
    print(f"{name}: transformers {transformers.__version__}; layer 0: {params}")
