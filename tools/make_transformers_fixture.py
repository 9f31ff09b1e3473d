#!/usr/bin/env python3
"""Writes tests/fixtures/transformers_llama3/: a tiny random llama saved by transformers 5
(`config.json` in its `rope_parameters` layout, llama3 RoPE scaling, grouped-query attention, an
untied head; `model.safetensors`), a word-level tokenizer saved the way transformers 5 saves one
(BOS added by `tokenizer.json`'s post-processor, not `add_bos_token`; the chat template in
`chat_template.jinja`), and `logits.json`: the logits transformers computes for a prompt in
float64, and the token ids its tokenizer gives for a text and for a chat prompt. The Rust loader
is checked against code it shares nothing with.

Usage: pip install torch transformers safetensors && python3 tools/make_transformers_fixture.py
"""
import json
import pathlib

import torch
import transformers
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/transformers_llama3"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(2406_17404)
config = transformers.LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    initializer_range=0.25,
    tie_word_embeddings=False,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 50000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
)
model = transformers.LlamaForCausalLM(config).eval()
model.save_pretrained(out)
(out / "generation_config.json").unlink(missing_ok=True)
words = ["<s>", "</s>", "<unk>", "hello", "world", "hi", "user", "assistant", ":", " ", "\n"]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|\s|[^\w\s]"), behavior="isolated")
tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
tok.add_special_tokens(["<s>", "</s>"])
fast = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
fast.chat_template = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}")
fast.save_pretrained(out)
text = "hello world"
text_ids = fast(text)["input_ids"]
chat_ids = list(fast.apply_chat_template(
    [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)["input_ids"])
ids = [int(i) for i in torch.randint(0, 64, (24,), generator=torch.Generator().manual_seed(7))]
with torch.no_grad():
    logits = model.double()(torch.tensor([ids])).logits[0]
    unscaled = transformers.LlamaConfig(**{**config.to_dict(), "rope_parameters": {
        "rope_type": "default", "rope_theta": 50000.0}})
    plain = transformers.LlamaForCausalLM(unscaled).double().eval()
    plain.load_state_dict(model.state_dict())
    effect = (plain(torch.tensor([ids])).logits[0] - logits).abs().max().item()
(out / "logits.json").write_text(json.dumps({
    "transformers": transformers.__version__,
    "ids": ids,
    "logits": [[round(v, 9) for v in row] for row in logits.tolist()],
    "llama3_scaling_effect": effect,
    "text": text,
    "text_ids": text_ids,
    "chat_user": "hi",
    "chat_ids": chat_ids,
}))
print(f"transformers {transformers.__version__}: {len(ids)} positions; llama3 scaling moves the logits by up to {effect:.4f}")
print(f"{text!r}: {text_ids}; chat 'hi': {chat_ids}")
