#!/usr/bin/env bash
# Runs `.ci/run` the way CI does: on a fresh clone of HEAD (committed work only), with CI=true
# and an empty model cache, so the model is fetched and checked as on a new machine. The clone
# and the cache are removed afterwards, pass or fail; the build reuses this checkout's target dir
# (or $CARGO_TARGET_DIR) to stay warm. Do not run another cargo command while it runs.
#
#   bash scripts/ci_local.sh [LOG]      (default target/ci_local.log; exit status: CI's)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log=${1:-target/ci_local.log}
mkdir -p "$(dirname "$log")"
log=$(cd "$(dirname "$log")" && pwd)/$(basename "$log")
clone=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$clone" "$cache"' EXIT
git clone -q "$root" "$clone"
echo "CI on $(git rev-parse --short HEAD) in $clone, log $log"
status=0
(cd "$clone" && CI=true CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" \
    MSN_CACHE_DIR="$cache" MSN_SMOLLM2_GGUF= bash .ci/run) > "$log" 2>&1 || status=$?
tail -n 3 "$log"
echo "rc=$status"
exit "$status"
