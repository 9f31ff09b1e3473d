#!/usr/bin/env bash
# The MSN-at-scale evaluation of SmolLM2-135M-Instruct from a fresh clone: the stock model against
# the stock model with the LoRA adapter trained by scripts/msn_scale.sh (results/msn_scale/adapter,
# checked against its sha256), same code, same f32 weights and dense f32 host products (the
# merged model cannot keep the GGUF's Q4_1 blocks, so the stock model runs without them too),
# one table at the end:
#   - HumanEval, all 164 problems, pass@1 (batched greedy: the answers of plain greedy decoding);
#   - clean loss on the 110 held-out self-distilled answers, top-1 at ahead noise, and the MAT of
#     Jacobi and TR-Jacobi on the Spec-Bench CPU subset (13 questions) at 64 and 256 new tokens.
#
#   bash scripts/msn_scale_eval.sh [OUT_DIR]   (default results/msn_scale/eval)
#
# On a 2-core Zen 4: ~10 min per HumanEval run, 40 min for the two MAT steps (2026-11-30).
#
# Executes code the model wrote (HumanEval's tests): run it where that is acceptable.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/msn_scale/eval}
adapter=results/msn_scale/adapter
(cd "$adapter" && sha256sum -c ../adapter.sha256)
cargo build --release --example humaneval --example msn_finetune
bin=./target/release/examples
for run in stock msn; do
    lora=()
    [ "$run" = msn ] && lora=(--lora "$adapter")
    [ -f "$out/humaneval_$run/summary.json" ] ||
        "$bin/humaneval" --dtype f32 --host-kernels converted --batch 16 "${lora[@]}" --out "$out/humaneval_$run"
done
# The held-out loss and top-1 at noise do not depend on the answer length: measured once, at 64.
for tokens in 64 256; do
    only=()
    [ "$tokens" = 256 ] && only=(--mat-only)
    [ -f "$out/mat$tokens/msn_finetune.json" ] ||
        "$bin/msn_finetune" --tuned "$adapter" --distilled results/msn_scale/distilled.jsonl \
            --eval-tokens "$tokens" "${only[@]}" --out "$out/mat$tokens"
done
python3 tools/msn_scale_table.py "$out"
