#!/usr/bin/env bash
# Admission-policy ablation: bursty arrivals, long-tailed output lengths the server cannot know
# in advance (max_tokens 512, each request ending after a Pareto-drawn length via stop_after),
# a KV pool smaller than the offered load; the three policies in one run. Reports goodput at
# the SLOs (TTFT <= 2 s, TPOT <= 100 ms), preemptions and latencies, and writes a plot of
# the latency distributions per policy.
# Usage: [BUILD_DIR=build] [RATE=10] [NUM_PROMPTS=300] bench/admission.sh [MODEL.gguf]
# (default: a 125M Q8_0 model generated under build/bench-models/)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-build/bench-models/125m-q8_0.gguf}
bench_model "$model" 125m
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for policy in aggressive conservative past-future; do
    start_server "$out/$policy.log" "$model" --kv-tokens 3072 --admission "$policy"
    "$bench" --base-url "http://127.0.0.1:$server_port" --dataset random --num-prompts "${NUM_PROMPTS:-300}" \
        --input-len 128 --range-ratio 0.5 --output-len 64 --output-dist pareto --max-tokens 512 \
        --request-rate "${RATE:-10}" --burstiness 0.3 --seed 11 --goodput ttft:2000 tpot:100 \
        --label "$policy" --result-json "$out/$policy.json" --plot "bench/admission-$policy.svg" \
        --no-progress >"$out/$policy.txt"
    stop_server
    echo "== $policy"
    grep -E "duration|Request goodput|Mean TTFT|P99 TTFT|Mean TPOT|P99 TPOT|Preemptions" "$out/$policy.txt"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
rows = {}
for p in ["aggressive", "conservative", "past-future"]:
    rows[p] = json.loads(open(f"{d}/{p}.json").read().splitlines()[-1])
print("| policy | goodput (req/s) | throughput (req/s) | mean TTFT ms | p99 TTFT ms | mean TPOT ms | p99 TPOT ms | preemptions |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for p, r in rows.items():
    pre = r.get("server_metrics", {}).get("num_preemptions", "-")
    print(f"| {p} | {r['request_goodput']:.3f} | {r['request_throughput']:.3f} | {r['mean_ttft_ms']:.0f} "
          f"| {r['p99_ttft_ms']:.0f} | {r['mean_tpot_ms']:.0f} | {r['p99_tpot_ms']:.0f} | {pre} |")
best = max(rows["aggressive"]["request_goodput"], rows["conservative"]["request_goodput"])
pf = rows["past-future"]["request_goodput"]
print(f"past-future goodput / best of the others: {pf / best:.2f}" if best > 0 else "others: 0 goodput")
PY
