#!/usr/bin/env bash
# msn beside llama.cpp on the same GGUF, the same CPU and thread count, in one invocation.
#
#   scripts/vs_llamacpp.sh [ROUNDS] [QUANT]   (default 2 rounds, interleaved)
#   scripts/vs_llamacpp.sh --scale FILE [ROUNDS] [PROMPTS] [NEW_TOKENS]
#
# --scale FILE: any GGUF (the real-size ones scripts/scale_ggufs.sh writes): process start to
# first token, peak RSS, prefill, decode, the T = 1..64 forward curve (llama-bench's pp1..pp64)
# and greedy end to end (default 2 prompts x 32 new tokens), results in
# results/vs_llamacpp_scale/<file name>/.
#
# QUANT (e.g. Q4_K_M): run on the demo model re-quantized by llama.cpp's llama-quantize from its
# Q4_1 file (--allow-requantize; cached beside it), results in results/vs_llamacpp_<quant>/.
#
# Builds llama.cpp once from the llama-cpp-python source distribution on PyPI (pinned version,
# sha256 checked; its vendor/llama.cpp with cmake + ninja from PyPI, ~15 minutes on 2 cores) into
# $MSN_CACHE_DIR/llama.cpp-<version> (default ~/.cache/msn), then per round runs
#   1. llama-bench (prompt 128, generation 128, generation 128 at depth 700) and msn's
#      bench_forward (prefill, decode at short context and at 700 cached tokens),
#   2. llama-completion greedy and msn greedy / TR-Jacobi (auto budget) / PLD (auto budget) on the
#      same chat prompts (the chat template applied by msn, ids passed to both as text),
# and writes results/vs_llamacpp/{vs_llamacpp.json,vs_llamacpp.md,vs_llamacpp.svg}; it also
# compares the greedy texts of the two engines.
# MSN_COMPARE_ISA=avx2: both engines on the AVX2 path of this CPU (llama.cpp built without
# AVX-512 or AVX-VNNI into llama.cpp-<version>-avx2, msn with MSN_HOST_ISA=avx2): an AVX2-only
# machine's instruction set, measured on this one (results in <out>_avx2).
# Not part of CI (the build alone takes longer than a CI run should).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=""
if [ "${1:-}" = "--scale" ]; then
  SCALE="${2:?--scale takes a GGUF file}"
  shift 2
fi
ROUNDS="${1:-2}"
QUANT="${2:-}"
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE="${MSN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msn}"
LLAMA="$CACHE/llama.cpp-$VERSION"
ISA_FLAGS=(-DGGML_NATIVE=ON)
SUFFIX=""
case "${MSN_COMPARE_ISA:-}" in
  "") ;;
  avx2)
    LLAMA="$LLAMA-avx2"
    ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
      -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF)
    export MSN_HOST_ISA=avx2
    SUFFIX=_avx2 ;;
  *) echo "MSN_COMPARE_ISA: only avx2 (or unset)" >&2; exit 2 ;;
esac
THREADS="${MSN_THREADS:-$(nproc)}"
OUT=results/vs_llamacpp${QUANT:+_$(echo "$QUANT" | tr 'A-Z' 'a-z')}$SUFFIX
mkdir -p "$OUT"

build_llama() {
  if [ -x "$LLAMA/bin/llama-bench" ] && [ -x "$LLAMA/bin/llama-completion" ] \
    && [ -x "$LLAMA/bin/llama-quantize" ]; then return; fi
  echo "== building llama.cpp $VERSION into $LLAMA (once, ~15 minutes)" >&2
  python3 -m pip install -q cmake ninja scikit-build-core
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --no-build-isolation --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$tmp"
  local sdist="$tmp/llama_cpp_python-$VERSION.tar.gz"
  echo "$SHA256  $sdist" | sha256sum -c - >&2
  tar -xzf "$sdist" -C "$tmp"
  local src="$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp"
  cmake -S "$src" -B "$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${ISA_FLAGS[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$tmp/build" --target llama-bench llama-completion llama-lookup llama-quantize >&2
  mkdir -p "$LLAMA/bin"
  for t in llama-bench llama-completion llama-lookup llama-quantize; do
    cp "$tmp/build/bin/$t" "$LLAMA/bin/"
  done
  find "$tmp/build" -name '*.so*' -exec cp -P {} "$LLAMA/bin/" \; || true
  rm -rf "$tmp"
}

build_llama
export LD_LIBRARY_PATH="$LLAMA/bin:${LD_LIBRARY_PATH:-}"
if [ "${1:-}" = "--build-only" ]; then exit 0; fi
cargo build --release --example vs_llamacpp >&2
if [ -n "$SCALE" ]; then
  NAME="$(basename "$SCALE" .gguf)"
  exec target/release/examples/vs_llamacpp --llama "$LLAMA/bin" --gguf "$SCALE" --scale \
    --threads "$THREADS" --rounds "$ROUNDS" --prompts "${2:-2}" --max-new-tokens "${3:-32}" \
    --out "results/vs_llamacpp_scale/$NAME$SUFFIX"
fi
GGUF="$(cargo run -q --release --example vs_llamacpp -- --print-model)"
if [ -n "$QUANT" ]; then
  SRC="$GGUF"
  GGUF="${SRC%.Q4_1.gguf}.$QUANT.gguf"
  if [ ! -s "$GGUF" ]; then
    "$LLAMA/bin/llama-quantize" --allow-requantize "$SRC" "$GGUF.tmp" "$QUANT" >&2
    mv "$GGUF.tmp" "$GGUF"
  fi
fi
exec target/release/examples/vs_llamacpp --llama "$LLAMA/bin" --gguf "$GGUF" \
  --threads "$THREADS" --rounds "$ROUNDS" --out "$OUT"
