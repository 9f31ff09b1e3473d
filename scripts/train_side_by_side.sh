#!/usr/bin/env bash
# Training throughput side by side: this crate (burn, flex backend, autodiff) and PyTorch, the
# same step (batch x seq_len tokens, forward + cross-entropy on the response half + backward +
# clip + AdamW) on the same weights, on this machine, one after the other in one invocation.
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
./target/release/examples/train_bench --steps "$steps" --batch-size "$batch" --seq-len "$seq" \
    --export-hf "$hf/model" | tail -n 1 > "$out/msn.json"
"$venv/bin/python" scripts/torch_train_bench.py --model "$hf/model" --steps "$steps" \
    --batch-size "$batch" --seq-len "$seq" | tail -n 1 > "$out/pytorch.json"
python3 - "$out" <<'PY' | tee "$out/table.md"
import json, sys
out = sys.argv[1]
m = json.load(open(f"{out}/msn.json"))
t = json.load(open(f"{out}/pytorch.json"))
print("| framework | tokens/s | s/step | peak RSS (MiB) |")
print("| --- | ---: | ---: | ---: |")
print(f"| msn (burn 0.21, flex, f32) | {m['tokens_per_s']:.1f} | {m['s_per_step']:.2f} | {m['peak_rss_mib']:.0f} |")
print(f"| {t['framework']} ({t['threads']} threads, f32) | {t['tokens_per_s']:.1f} | {t['s_per_step']:.2f} | {t['peak_rss_mib']:.0f} |")
print(f"\nmsn / PyTorch throughput: {m['tokens_per_s'] / t['tokens_per_s']:.2f}x")
PY
