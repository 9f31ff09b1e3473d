#!/usr/bin/env bash
# GGUFs in the shapes of Llama 3.2 1B (16 layers, 2048 wide, 32 / 8 heads, FFN 8192, tied head)
# and Llama 3.1 8B (32 layers, 4096 wide, 32 / 8 heads, FFN 14336), with the demo model's
# tokenizer and random weights, quantized by llama.cpp's llama-quantize to Q4_0 and Q4_K_M:
#
#   scripts/scale_ggufs.sh [SHAPES...]   (default: 1b 8b)
#   MSN_SCALE_QUANTS="Q4_K.pure Q6_K.pure" scripts/scale_ggufs.sh 1b
#                                        (other types; `.pure`: every matrix that type,
#                                        llama-quantize --pure)
#
# into $MSN_CACHE_DIR/scale (default ~/.cache/msn/scale): llama-<shape>.Q4_0.gguf and
# llama-<shape>.Q4_K_M.gguf (0.6 / 0.7 GB for 1B, 4.3 / 4.6 GB for 8B; the F16 file each is made
# from, 2.2 / 15 GB, is removed). Their text is noise: they measure speed and memory
# (scripts/vs_llamacpp.sh --scale FILE); correctness is checked on the real model.
# Builds llama.cpp first if needed (scripts/vs_llamacpp.sh --build-only).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MSN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msn}"
OUT="$CACHE/scale"
LLAMA="$CACHE/llama.cpp-0.3.36/bin"
bash scripts/vs_llamacpp.sh --build-only
python3 -m pip install -q gguf numpy
cargo build --release --example vs_llamacpp >&2
DEMO="$(target/release/examples/vs_llamacpp --print-model)"
mkdir -p "$OUT"
for shape in "${@:-1b 8b}"; do
  for s in $shape; do
    F16="$OUT/llama-$s.F16.gguf"
    for q in ${MSN_SCALE_QUANTS:-Q4_0 Q4_K_M}; do
      [ -s "$OUT/llama-$s.$q.gguf" ] && continue
      [ -s "$F16" ] || python3 tools/make_scale_gguf.py --shape "$s" --tokenizer "$DEMO" --out "$F16"
      pure=(); [ "${q%.pure}" != "$q" ] && pure=(--pure)
      LD_LIBRARY_PATH="$LLAMA" "$LLAMA/llama-quantize" "${pure[@]}" "$F16" "$OUT/llama-$s.$q.gguf.tmp" "${q%.pure}" >&2
      mv "$OUT/llama-$s.$q.gguf.tmp" "$OUT/llama-$s.$q.gguf"
    done
    rm -f "$F16"
    ls -la "$OUT"/llama-"$s".*.gguf
  done
done
