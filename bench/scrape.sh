#!/usr/bin/env bash
# The cost of /metrics scraped at 20 Hz (as the Gateway API Inference Extension's endpoint
# picker does, every 50 ms) under full load: `spindle-bench` at 32 concurrent streams against one
# server, runs alternating without and with a scraper; prints each run's output tok/s and the
# scrapes' latency (p50, p99, max).
#
# Usage: [BUILD_DIR=build] bench/scrape.sh MODEL.gguf [ROUNDS (2)]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
model=${1:?usage: bench/scrape.sh MODEL.gguf [ROUNDS]}
rounds=${2:-2}
work=$(mktemp -d)
"$build/spindle" serve -m "$model" --port 0 --data-dir "$work/data" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/log")
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { echo "the server did not start" >&2; exit 1; }
load() { # one run: its output tok/s
    "$build/spindle-bench" --base-url "http://127.0.0.1:$port" --num-prompts 96 \
        --input-len 64 --output-len 128 --max-concurrency 32 --seed "$1" \
        --result-json "$work/r.json" >/dev/null 2>&1
    /usr/bin/python3 -c "import json; print(json.load(open('$work/r.json'))['output_throughput'])"
}
load 1000 >/dev/null # warm up
scrape() { # GET /metrics every 50 ms until killed, each latency appended to $work/scrapes
    exec /usr/bin/python3 - "$port" "$work/scrapes" <<'PY'
import http.client, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
t_next = time.monotonic()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
while True:
    t_next += 0.05
    t0 = time.monotonic()
    conn.request("GET", "/metrics")
    conn.getresponse().read()
    with open(out, "a") as f:
        f.write(f"{time.monotonic() - t0}\n")
    time.sleep(max(0, t_next - time.monotonic()))
PY
}
# Each run has its own prompts (seeds), so that no run finds another's in the prefix cache;
# the order within a round alternates, so that drift does not favour one mode.
for r in $(seq "$rounds"); do
    if ((r % 2)); then
        plain=$(load $((2 * r)))
        scrape & scraper=$!
        scraped=$(load $((2 * r + 1)))
        kill $scraper 2>/dev/null || true; wait $scraper 2>/dev/null || true
    else
        scrape & scraper=$!
        scraped=$(load $((2 * r + 1)))
        kill $scraper 2>/dev/null || true; wait $scraper 2>/dev/null || true
        plain=$(load $((2 * r)))
    fi
    echo "round $r: output tok/s without scraping $plain, with scraping at 20 Hz $scraped"
done
/usr/bin/python3 - "$work/scrapes" <<'PY'
import sys
x = sorted(float(l) for l in open(sys.argv[1]))
p = lambda q: x[min(len(x) - 1, int(q * (len(x) - 1) + 0.5))] * 1e3
print(f"{len(x)} scrapes: latency p50 {p(.5):.2f} ms, p99 {p(.99):.2f} ms, max {x[-1] * 1e3:.2f} ms")
PY
