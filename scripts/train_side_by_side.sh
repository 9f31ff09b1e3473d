#!/usr/bin/env bash
# Training throughput side by side: this crate (burn, flex backend, autodiff) and PyTorch, the
# same step (batch x seq_len tokens, forward + cross-entropy on the response half + backward +
# clip + AdamW) on the same weights, on this machine, one after the other in one invocation.
# msn runs three ways: full fine-tuning with the C allocator's defaults, full fine-tuning with
# `msn::train::reuse_freed_memory` (what the training examples use), and LoRA (rank 16, all
# seven projections) with it.
#
#   bash scripts/train_side_by_side.sh [OUT_DIR]      (default results/train_side_by_side)
#
# PyTorch comes from PyPI into a virtual environment (MSN_TORCH_VENV, default
# ~/.cache/msn/torch-venv); the first run downloads it (a few GB with its CUDA libraries, which
# the CPU run does not use).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/train_side_by_side}
venv=${MSN_TORCH_VENV:-$HOME/.cache/msn/torch-venv}
steps=${STEPS:-4}
batch=${BATCH:-4}
seq=${SEQ:-256}
mkdir -p "$out"
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch transformers safetensors
fi
cargo build --release --example train_bench
hf=$(mktemp -d)
trap 'rm -rf "$hf"' EXIT
bench() { ./target/release/examples/train_bench --steps "$steps" --batch-size "$batch" --seq-len "$seq" "$@" | tail -n 1; }
bench --export-hf "$hf/model" --default-allocator > "$out/msn_default_alloc.json"
bench > "$out/msn.json"
bench --lora-rank 16 > "$out/msn_lora16.json"
"$venv/bin/python" scripts/torch_train_bench.py --model "$hf/model" --steps "$steps" \
    --batch-size "$batch" --seq-len "$seq" | tail -n 1 > "$out/pytorch.json"
python3 - "$out" <<'PY' | tee "$out/table.md"
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/pytorch.json"))
rows = [("msn full, allocator defaults", "msn_default_alloc"), ("msn full", "msn"),
        ("msn LoRA r=16 (all projections)", "msn_lora16")]
print("| run (f32) | tokens/s | s/step | peak RSS (MiB) | vs PyTorch |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, f in rows:
    m = json.load(open(f"{out}/{f}.json"))
    print(f"| {name} | {m['tokens_per_s']:.1f} | {m['s_per_step']:.2f} | {m['peak_rss_mib']:.0f} | {m['tokens_per_s'] / t['tokens_per_s']:.2f}x |")
print(f"| {t['framework']} ({t['threads']} threads) | {t['tokens_per_s']:.1f} | {t['s_per_step']:.2f} | {t['peak_rss_mib']:.0f} | 1.00x |")
PY
