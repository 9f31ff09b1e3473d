#!/usr/bin/env python3
"""Writes tests/fixtures/transformers_{qwen2,qwen3,phi3,phi3_longrope,gemma,gemma2,gemma3_text}/:
tiny random Qwen 2, Qwen 3, Phi-3 (also with Phi-3.5's long-context RoPE), Gemma 1, 2 and 3 models saved by transformers (`config.json`, `model.safetensors`), a byte-level BPE tokenizer
with Qwen 2's own pre-tokenizer regex and ChatML special tokens (trained here on a few lines:
Qwen's real vocabulary cannot be downloaded here) and a ChatML chat template, and `logits.json`:
transformers' float64 logits for 24 random ids, its float64 greedy continuation of them, and its
tokenizer's ids for texts (unicode, code) and a rendered chat prompt. Every bias, norm gain and per-head q/k norm gain is drawn
at random (transformers initialises them to 0 and 1, which would hide a missing one). The Rust
loaders are checked against code they share nothing with.

Usage: pip install torch transformers safetensors && python3 tools/make_family_fixtures.py [FAMILY...]
"""
import json
import pathlib
import sys

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

# Qwen 2's pre-tokenizer (its tokenizer.json; llama.cpp's `qwen2`).
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🦀 and numbers 12345.",
    "    for i in range(10):\n        print(i ** 2)  # squares\n",
] * 8
VOCAB = 320


def bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(TEXTS, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


root = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures"
common = dict(
    vocab_size=VOCAB,
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
    # Phi-3: q, k, v fused into qkv_proj and gate, up into gate_up_proj (stored so).
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
             dict(common, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                  original_max_position_embeddings=128, sliding_window=None)),
    # Phi-3.5's long context (longrope): random short and long divisors per frequency, a
    # pre-training context of 16 positions stretched to 128 (attention factor from the ratio).
    # The 24-token prompt is longer than 16, so transformers uses the long divisors for it;
    # `short_ids` (12 tokens) get the short ones.
    "phi3_longrope": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
                      dict(common, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                           original_max_position_embeddings=16, sliding_window=None,
                           rope_parameters={
                               "rope_type": "longrope", "rope_theta": 10000.0,
                               "short_factor": [1.0, 1.3, 2.1, 3.7],
                               "long_factor": [1.2, 2.9, 7.5, 19.0]})),
    # Gemma 1: (1 + w) norms, scaled embedding, GELU gate; nothing around the sublayers.
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM,
              dict(common, head_dim=16, hidden_activation="gelu_pytorch_tanh",
                   tie_word_embeddings=True, pad_token_id=0, bos_token_id=None,
                   eos_token_id=None,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # Gemma 2: (1 + w) norms, scaled embedding, GELU gate, norms around both sublayers, scores
    # scaled by query_pre_attn_scalar and soft-capped, logits soft-capped, every other layer
    # attending to a window of 4 positions (short, so the 24-token prompt crosses it).
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(common, num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=12,
                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0, sliding_window=4,
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    pad_token_id=0, bos_token_id=None, eos_token_id=None,
                    # Gemma 2's base (llama.cpp's converter does not write one for Gemma 2).
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # Gemma 3 (text): Gemma 2 without soft caps, with per-head q/k norms, five sliding layers of
    # six, their own RoPE base, and linear RoPE scaling on the global layer.
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
                    dict(common, num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16,
                         sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=None,
                         eos_token_id=None, rope_parameters={
                             "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default",
                                                   "rope_theta": 10000.0}})),
    # Gemma 3 4B and up: the Gemma 3 text model inside Gemma3ForConditionalGeneration (its
    # config under `text_config`, its tensors under `language_model.`), with a tiny SigLIP vision
    # tower the text model must not read. Built below from `gemma3_text`'s settings.
    "gemma3_mm": None,
}
only = sys.argv[1:]  # family names to write (default: all)
text3 = families["gemma3_text"][2]
families["gemma3_mm"] = (
    transformers.Gemma3Config, transformers.Gemma3ForConditionalGeneration,
    dict(text_config=transformers.Gemma3TextConfig(**text3).to_dict(),
         vision_config=transformers.SiglipVisionConfig(
             hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             image_size=28, patch_size=14).to_dict(),
         mm_tokens_per_image=4, image_token_index=VOCAB, boi_token_index=VOCAB - 2,
         eoi_token_index=VOCAB - 1, tie_word_embeddings=True))
for name, (Config, Model, kwargs) in families.items():
    if only and name not in only:
        continue
    out = root / f"transformers_{name}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2406_17404)
    model = Model._from_config(
        Config(**kwargs), attn_implementation="eager").eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif "norm" in pname:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    fast = bpe_tokenizer()
    fast.save_pretrained(out)
    texts = ["Hello world!", "def fib(n):\n    return n", "naïve café 日本語 🦀 42", "  spaces\tand\ttabs  "]
    text_ids = [fast(t)["input_ids"] for t in texts]
    chat = [{"role": "user", "content": "Say hi, café 🦀"}]
    chat_text = fast.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    chat_ids = fast(chat_text)["input_ids"]
    ids = [int(i) for i in torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(7))]
    model = model.double()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, len(ids):]
    short = {}
    if name == "phi3_longrope":
        with torch.no_grad():
            short_logits = model(torch.tensor([ids[:12]])).logits[0]
        short = {"short_ids": ids[:12],
                 "short_logits": [[round(v, 9) for v in row] for row in short_logits.tolist()]}
    if name.startswith("phi3"):
        # llama.cpp's converter reads a Phi-3 vocabulary from tokenizer.model (SentencePiece)
        # unless the config names the GPT-2 tokenizer, as Phi-4's does.
        tc = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**tc, "tokenizer_class": "GPT2Tokenizer"}))
    (out / "logits.json").write_text(json.dumps({
        "transformers": transformers.__version__,
        "ids": ids,
        "logits": [[round(v, 9) for v in row] for row in logits.tolist()],
        "greedy": [int(t) for t in greedy],
        "texts": texts,
        "text_ids": text_ids,
        "chat_user": chat[0]["content"],
        "chat_text": chat_text,
        "chat_ids": chat_ids,
        **short,
    }))
    params = sorted(n for n, _ in model.named_parameters() if ".layers.0." in n)
    print(f"{name}: transformers {transformers.__version__}; layer 0: {params}")

# A Gemma 3 4B config.json as transformers 4.50 saved it: `text_config` holds only what differs
# from Gemma3TextConfig's defaults. `resolved`: the text config transformers makes of it.
SPARSE_GEMMA3 = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}}
if not only or "gemma3_sparse" in only:
    resolved = transformers.Gemma3Config(
        **{k: v for k, v in SPARSE_GEMMA3.items() if k != "model_type"}).text_config.to_dict()
    keep = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
            "max_position_embeddings", "query_pre_attn_scalar", "sliding_window",
            "tie_word_embeddings", "rope_parameters", "layer_types", "hidden_activation"]
    (root / "gemma3_sparse_config.json").write_text(json.dumps({
        "transformers": transformers.__version__, "config": SPARSE_GEMMA3,
        "resolved": {k: resolved[k] for k in keep}}, indent=1))
