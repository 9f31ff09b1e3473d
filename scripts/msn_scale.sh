#!/usr/bin/env bash
# MSN at scale on SmolLM2-135M-Instruct: self-distil the 1,104 prompts of
# data/train_prompts.jsonl (256 new tokens, 16 prompts a pass), train with ahead noise on the
# answers (batches of 8 grouped by length, 420 steps: ~600k training tokens), measure the model
# every 105 steps (OUT/growth.jsonl) and before/after (OUT/msn_finetune.json).
#
#   bash scripts/msn_scale.sh [OUT_DIR] [extra msn_finetune flags]   (default results/msn_scale)
#
# Resumable: after a stop, run the same command again. The self-distillation journal, the
# trainer's checkpoints (OUT/train, bit-for-bit resume) and the growth measurements already
# written are all reused; only the "before" measurement is repeated. Hours on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/msn_scale}
shift || true
cargo build --release --example msn_finetune
./target/release/examples/msn_finetune --prompt-file data/train_prompts.jsonl --prompts 1104 \
    --answer-tokens 256 --distill-batch 16 --batch-size 8 --group-by-length --steps 420 \
    --measure-every 105 --eval-tokens 64 --out "$out" "$@"
