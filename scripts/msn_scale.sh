#!/usr/bin/env bash
# MSN at scale on SmolLM2-135M-Instruct: self-distil the 1,104 prompts of
# data/train_prompts.jsonl (256 new tokens, 16 prompts a pass), train LoRA adapters (rank 16 on
# all seven projections, peak lr 5e-4) with ahead noise on the answers (batches of 8 grouped by
# length, 450 steps: 652k training tokens in the kept run), measure the model every 150 steps
# (OUT/growth.jsonl, growth_*.svg) and before/after (OUT/msn_finetune.json). The adapter lands in
# OUT/train/adapter; scripts/msn_scale_eval.sh evaluates the one kept in results/msn_scale.
#
#   bash scripts/msn_scale.sh [OUT_DIR] [extra msn_finetune flags]   (default runs/msn_scale)
#
# Resumable: after a stop, run the same command again. The self-distillation journal, the
# trainer's checkpoints (OUT/train, bit-for-bit resume) and the growth measurements already
# written are all reused; only the "before" measurement is repeated. ~2.5 h on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/msn_scale}
shift || true
cargo build --release --example msn_finetune
./target/release/examples/msn_finetune --prompt-file data/train_prompts.jsonl --prompts 1104 \
    --answer-tokens 256 --distill-batch 16 --batch-size 8 --group-by-length --steps 450 \
    --measure-every 150 --eval-tokens 64 --lora-rank 16 --lr 5e-4 --out "$out" "$@"
