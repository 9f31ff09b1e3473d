#!/usr/bin/env python3
"""The training step of `examples/train_bench.rs`, timed in PyTorch on the same machine.

Same model (a Hugging Face directory that this crate exported: `LlamaForCausalLM` from its
`config.json` and `model.safetensors`), same shapes (batch x seq_len random tokens, the second
half of each sequence the response), same step: forward, causal-LM cross-entropy on the
response positions, backward, gradient clipping at 1.0, AdamW. f32 on the CPU, with as many
threads as the machine has cores. Ahead noise is left out: it rewrites a few input ids and costs
nothing next to the step.

Prints one JSON line with the same fields as train_bench (tokens_per_s counts every token of the
batch, prompt and response alike).

    python3 scripts/torch_train_bench.py --model DIR --steps 6 --batch-size 4 --seq-len 256
"""

import argparse
import json
import os
import resource
import time

import torch
from transformers import LlamaForCausalLM


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    after_load = peak_rss_mib()
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    half = args.seq_len // 2

    def step() -> float:
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len))
        labels = ids.clone()
        labels[:, :half] = -100  # prompt positions: no loss
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    s_per_step = (time.perf_counter() - started) / args.steps
    print(
        json.dumps(
            {
                "framework": f"pytorch {torch.__version__}",
                "threads": args.threads,
                "model": args.model,
                "parameters": params,
                "batch_size": args.batch_size,
                "seq_len": args.seq_len,
                "steps": args.steps,
                "s_per_step": s_per_step,
                "tokens_per_s": args.batch_size * args.seq_len / s_per_step,
                "peak_rss_mib_after_load": after_load,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


if __name__ == "__main__":
    main()
