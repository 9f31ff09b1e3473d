#!/usr/bin/env bash
# The CUDA half of the decoding benchmarks, for a session that is lent a GPU machine: the forward
# latency curve T = 1..128 (why the full TR-Jacobi tree pays on a GPU and not on a CPU) and
# Spec-Bench on CUDA (MAT and speedup over greedy per category, every decoder checked equal to
# greedy; per decoder the host time of a step besides the forward, and the reads back from the
# device and their bytes per step).
#
# Prepare here, on the CPU machine (the build needs no GPU and no CUDA toolkit):
#
#   bash scripts/gpu_check.sh prepare
#
# which builds the examples with `--features cuda`, strips and compresses them into `.gpu/bin`
# (ignored by git), and splits the model into 30 MiB parts `.gpu/model.part0..3`: the GGUF
# (94 MiB) is over the 64 MiB a device call may carry (the checkout included), so it travels in
# two calls. On the device machine an ignored folder of the checkout stays between calls while
# the machine is warm (it is given back after ~30 s idle: make the second call straight after
# the first):
#
#   run(carry=[".gpu/model.part0", ".gpu/model.part1"], command="bash scripts/gpu_check.sh stash")
#   run(carry=[".gpu/bin", ".gpu/model.part2", ".gpu/model.part3"],
#       command="bash scripts/gpu_check.sh run", timeout_s=540)
#
# The second call writes the latency curve (JSON + SVG), Spec-Bench's `summary.json`, its plot
# and both logs (the tables) under $OUT: seven files, within the eight that come back.
set -euo pipefail
cd "$(dirname "$0")/.."
here=.gpu
case "${1:-}" in
prepare)
    cargo build --release --features cuda --example specbench --example bench_forward
    mkdir -p "$here/bin"
    for d in /.gpu/ /.gpu_keep/; do
        grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
    done
    for e in specbench bench_forward; do
        cp "target/release/examples/$e" "$here/bin/$e"
        strip "$here/bin/$e"
        gzip -f "$here/bin/$e"
    done
    gguf=${MSN_SMOLLM2_GGUF:-${MSN_CACHE_DIR:-$HOME/.cache/msn}/SmolLM2-135M-Instruct.Q4_1.gguf}
    [ -f "$gguf" ] || { echo "no model at $gguf: run 'cargo run --release --example generate' once" >&2; exit 1; }
    rm -f "$here"/model.part*
    split -b 30M -d -a 1 "$gguf" "$here/model.part"
    sha256sum "$gguf" | cut -d' ' -f1 >"$here/bin/model.sha256"
    du -sh "$here"/bin "$here"/model.part*
    ;;
stash)
    # Keep the parts where the next call finds them (an ignored folder stays while warm).
    mkdir -p .gpu_keep
    cp .gpu/model.part* .gpu_keep/
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    ;;
run)
    out=${OUT:-results/gpu}
    mkdir -p "$out"
    cp .gpu/model.part* .gpu_keep/
    cat .gpu_keep/model.part? >/tmp/smollm2.gguf
    echo "$(cat .gpu/bin/model.sha256)  /tmp/smollm2.gguf" | sha256sum -c -
    mkdir -p /tmp/bin
    for e in specbench bench_forward; do
        gunzip -c ".gpu/bin/$e.gz" >"/tmp/bin/$e"
        chmod +x "/tmp/bin/$e"
    done
    export MSN_SMOLLM2_GGUF=/tmp/smollm2.gguf
    # Latency of a forward of T tokens over a cached context: flat on a GPU up to large T.
    timeout 150 /tmp/bin/bench_forward --devices cuda --dtypes f16 --host off \
        --out "$out" 2>&1 | tee "$out/bench_forward.log" || true
    # Spec-Bench, 2 questions per category, first turns, 128 new tokens: greedy and every decoder
    # in one run; the example stops with an error if any output differs from greedy's.
    # (Its per-decoder JSONL stay on the machine: at most 8 files come back from $OUT.)
    timeout 330 /tmp/bin/specbench --device cuda --per-category 2 --first-turn-only \
        --max-new-tokens 128 --decoders pld,lookahead,tr-jacobi-jacobi+fixed,tr-jacobi+fixed,tr-jacobi,suffix \
        --out /tmp/specbench 2>&1 | tee "$out/specbench.log"
    cp /tmp/specbench/summary.json /tmp/specbench/specbench_mat.svg /tmp/specbench/specbench_speedup.svg "$out/"
    ;;
*)
    echo "usage: bash scripts/gpu_check.sh prepare|stash|run" >&2
    exit 2
    ;;
esac
