#!/usr/bin/env bash
# Prefix-cache benchmark: the shared-prefix workload (400-token shared system prompts, 50-token
# suffixes) against the same server with and without --no-prefix-cache, in one run, on a
# 1.1B-shape model. Prints the TTFT figures and the server's prefix-cache counters.
# Usage: [BUILD_DIR=build] bench/prefix.sh [MODEL.gguf]   (default: generates a 1.1B Q8_0 model
# under build/bench-models/)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-build/bench-models/1.1b-q8_0.gguf}
bench_model "$model" 1.1b
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # label, extra server flags...
    local label=$1
    shift
    start_server "$out/$label.log" "$model" "$@"
    "$bench" --base-url "http://127.0.0.1:$server_port" --dataset shared-prefix --shared-prefix-len 400 \
        --input-len 50 --output-len 16 --num-groups 2 --num-prompts 8 --request-rate 0.1 \
        --seed 1 --label "$label" --result-json "$out/$label.json" --no-progress >"$out/$label.txt"
    stop_server
    cat "$out/$label.txt"
}
run prefix-cache
run no-prefix-cache --no-prefix-cache
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
a = json.loads(open(f"{d}/prefix-cache.json").read().splitlines()[-1])
b = json.loads(open(f"{d}/no-prefix-cache.json").read().splitlines()[-1])
print(f"TTFT p50: {a['median_ttft_ms']:.0f} ms with the prefix cache, "
      f"{b['median_ttft_ms']:.0f} ms without: {b['median_ttft_ms'] / a['median_ttft_ms']:.1f}x lower")
print(f"TTFT mean: {a['mean_ttft_ms']:.0f} ms vs {b['mean_ttft_ms']:.0f} ms")
PY
