#!/usr/bin/env python3
"""Cross-checks msn's LoRA adapter files against PEFT: PEFT loads the adapter msn wrote onto the
base model (read by transformers from the GGUF msn also reads) and merges it by its own rules;
its logits must equal those of the merged model msn exported (both in f32).

    python scripts/peft_crosscheck.py GGUF ADAPTER_DIR MERGED_HF_DIR

Needs torch, transformers, peft and gguf (e.g. the venv of scripts/train_side_by_side.sh).
"""
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

gguf, adapter, merged_dir = sys.argv[1:4]
ids = torch.tensor([[1, 4093, 28, 2114, 314, 260, 3575, 282, 4649, 47, 2]])
with torch.no_grad():
    import os
    base = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32)
    plain = base(ids).logits.clone()
    peft_model = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    theirs = peft_model(ids).logits
    ours = AutoModelForCausalLM.from_pretrained(merged_dir, torch_dtype=torch.float32)(ids).logits
moved = (theirs - plain).abs().max().item()
diff = (theirs - ours).abs().max().item()
print(f"adapter moves the logits by up to {moved:.4f}; PEFT's merge vs msn's: {diff:.2e}")
sys.exit(0 if diff < 1e-3 < moved else 1)
