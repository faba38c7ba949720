#!/usr/bin/env bash
# Session time-to-live benchmark: multi-turn agent sessions (think time between turns) sharing
# a small KV cache with background one-shot traffic that churns it, against the same server
# with session pins (--session-ttl 30) and with plain LRU caching (--session-ttl 0), in one
# run. Prints the multi-turn figures and the server's cache and session counters.
# Usage: [BUILD_DIR=build] bench/sessions.sh [MODEL.gguf]   (default: generates a 125M Q8_0
# model under build/bench-models/)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-build/bench-models/125m-q8_0.gguf}
bench_model "$model" 125m
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # label, ttl
    local label=$1 ttl=$2
    start_server "$out/$label.log" "$model" --kv-tokens 4096 --session-ttl "$ttl"
    local port=$server_port
    "$bench" --base-url "http://127.0.0.1:$port" --dataset random --num-prompts 80 --input-len 200 \
        --output-len 8 --request-rate 1.5 --seed 7 --no-progress --label background \
        >"$out/$label-bg.txt" &
    local bg=$!
    "$bench" --base-url "http://127.0.0.1:$port" --dataset multi-turn --num-prompts 32 --turns 4 \
        --think-time 3 --input-len 120 --output-len 24 --request-rate 0.5 --seed 3 --no-progress \
        --label "$label" --result-json "$out/$label.json" >"$out/$label.txt"
    wait $bg || true
    curl -s "http://127.0.0.1:$port/metrics" | grep -E "^spindle_(session|prefix_cache|kv_cache_evictions)" \
        >"$out/$label.metrics"
    stop_server
    echo "== $label (--session-ttl $ttl)"
    grep -E "duration|Mean TTFT|Median TTFT|Mean E2EL|hit tokens|computed" "$out/$label.txt"
    cat "$out/$label.metrics"
}
run ttl 30
run lru 0
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
a = json.loads(open(f"{d}/ttl.json").read().splitlines()[-1])
b = json.loads(open(f"{d}/lru.json").read().splitlines()[-1])
print(f"multi-turn: all sessions done in {a['duration']:.1f} s with TTL pins, {b['duration']:.1f} s "
      f"with LRU; mean TTFT {a['mean_ttft_ms']:.0f} vs {b['mean_ttft_ms']:.0f} ms; "
      f"mean E2EL {a['mean_e2el_ms']:.0f} vs {b['mean_e2el_ms']:.0f} ms")
PY
