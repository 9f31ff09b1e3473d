#!/usr/bin/env bash
# Runs every cargo-fuzz target for RUNS inputs each (default 1,000,000) from seeds written by
# fuzz/make_seeds.py, with memory bounded (2 GiB RSS, 512 MiB per allocation), and prints each
# target's count of inputs, rate and new crashes. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`), and torch + transformers for the seeds.
# Usage: scripts/fuzz.sh [RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_header gguf_model hf_checkpoint hf_tokenizer)
[ -d fuzz/corpus/hf_checkpoint ] || python3 fuzz/make_seeds.py
(cd fuzz && cargo +nightly fuzz build -s none)
export TMPDIR="${TMPDIR:-/dev/shm}"
for t in "${targets[@]}"; do
    log="fuzz/artifacts/$t.log"
    mkdir -p "fuzz/artifacts/$t"
    start=$(date +%s)
    set +e
    (cd fuzz && cargo +nightly fuzz run -s none "$t" -- -runs="$runs" -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -timeout=10 -print_final_stats=1) >"$log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    done_runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    crashes=$(ls "fuzz/artifacts/$t" | grep -c -E '^(crash|oom|timeout|leak)-' || true)
    printf '%-14s exit %d  %s inputs in %d s  %s findings (fuzz/artifacts/%s)\n' \
        "$t" "$rc" "$done_runs" "$secs" "$crashes" "$t"
done
