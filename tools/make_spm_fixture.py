#!/usr/bin/env python3
"""Writes tests/fixtures/gguf_spm/: a SentencePiece BPE vocabulary trained here with
`sentencepiece` in Llama 2's settings (byte fallback, digits split, a dummy prefix, no
normalisation), put beside a tiny random llama and converted by llama.cpp's own
`convert_hf_to_gguf.py` (f32; `tokenizer.ggml.model = llama`, pieces, scores and types), with
`ids.json`: sentencepiece's own ids for held-out texts (questions and code the vocabulary was not
trained on, unicode the pieces do not cover, runs of spaces, digits). Trained on Spec-Bench's
questions and HumanEval's prompts from the data folder beside the repository. The GGUF SentencePiece tokenizer is checked against the library it imitates.

Usage: python3 tools/make_spm_fixture.py LLAMA_CPP_SOURCE
Needs: pip install torch transformers safetensors sentencepiece
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import sentencepiece as spm
import torch
import transformers

src = pathlib.Path(sys.argv[1]).resolve()
out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/gguf_spm"
out.mkdir(parents=True, exist_ok=True)
# The corpus: Spec-Bench's questions and HumanEval's prompts (the shared data folder beside the
# repository), all but the last 12 of each; those 24 are held out as test texts.
shared = pathlib.Path(__file__).resolve().parent.parent.parent / "shared/data"
questions = [json.loads(l)["turns"][0] for l in (shared / "spec_bench/question.jsonl").open()]
prompts = [json.loads(l)["prompt"] for l in (shared / "humaneval/HumanEval.jsonl").open()]
corpus = questions[:-12] + prompts[:-12]
texts = questions[-12:] + prompts[-12:] + [
    "Hello world!",
    "  leading spaces and  double  spaces",
    "def fib(n):\n    return n",
    "naïve café 日本語 🦀 42",
    "tabs\tand\nnewlines\n\n",
    "Numbers 2024 and 3.14159",
]
with tempfile.TemporaryDirectory() as tmp:
    corpus_file = pathlib.Path(tmp) / "corpus.txt"
    corpus_file.write_text("\n".join(corpus))
    prefix = str(pathlib.Path(tmp) / "sp")
    spm.SentencePieceTrainer.train(
        input=str(corpus_file), model_prefix=prefix, model_type="bpe", vocab_size=2000,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, allow_whitespace_only_pieces=True)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    hf = pathlib.Path(tmp) / "hf"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=sp.vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).save_pretrained(hf)
    (hf / "tokenizer.model").write_bytes(pathlib.Path(prefix + ".model").read_bytes())
    (hf / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}))
    gguf = out / "vocab.f32.gguf"
    subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf), "--outtype",
                    "f32", "--outfile", str(gguf)], check=True, cwd=src, capture_output=True)
(out / "ids.json").write_text(json.dumps({
    "sentencepiece": spm.__version__,
    "bos": 1,
    "texts": texts,
    "ids": [sp.encode(t) for t in texts],
}, ensure_ascii=False))
print(f"{gguf.stat().st_size} bytes; {sp.vocab_size()} pieces; {sp.encode(texts[3], out_type=str)}")
