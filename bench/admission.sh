#!/usr/bin/env bash
# Admission-policy ablation: bursty arrivals, long-tailed output lengths the server cannot know
# in advance (max_tokens 512, each request ending after a Pareto-drawn length via stop_after),
# a KV pool smaller than the offered load; the three policies in one run. Reports goodput at
# the SLOs (TTFT <= 2 s, TPOT <= 100 ms), preemptions and latencies, and writes plots of the
# latency distributions per policy and of KV use and preemptions over time (all three).
# Usage: [BUILD_DIR=build] [RATE=10] [NUM_PROMPTS=300] [INPUT_LEN=128] [OUTPUT_LEN=64]
#        [MAX_TOKENS=512] [KV_TOKENS=3072] [TTFT_SLO=2000] [TPOT_SLO=100] [DEADLINE_MS=]
#        [TAG=] bench/admission.sh [MODEL.gguf]
# (DEADLINE_MS: each request asks to be refused at once, 503, when its first token cannot come
# within that time, rather than be served late)
# (OUTPUT_LEN is the mean of the Pareto lengths; the plots go to bench/admission-POLICY$TAG.svg)
# (default: a 125M Q8_0 model generated under build/bench-models/)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-build/bench-models/125m-q8_0.gguf}
bench_model "$model" 125m
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for policy in aggressive conservative past-future; do
    start_server "$out/$policy.log" "$model" --kv-tokens "${KV_TOKENS:-3072}" --admission "$policy"
    "$bench" --base-url "http://127.0.0.1:$server_port" --dataset random --num-prompts "${NUM_PROMPTS:-300}" \
        --input-len "${INPUT_LEN:-128}" --range-ratio 0.5 --output-len "${OUTPUT_LEN:-64}" \
        --output-dist pareto --max-tokens "${MAX_TOKENS:-512}" ${DEADLINE_MS:+--deadline-ms "$DEADLINE_MS"} \
        --request-rate "${RATE:-10}" --burstiness 0.3 --seed 11 --goodput "ttft:${TTFT_SLO:-2000}" "tpot:${TPOT_SLO:-100}" \
        --label "$policy" --result-json "$out/$policy.json" --plot "bench/admission-$policy${TAG:-}.svg" \
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
# KV cache use and preemptions over time, the three policies on one picture.
/usr/bin/python3 - "$out" "bench/admission-kv${TAG:-}.svg" <<'PY'
import json, sys
d, path = sys.argv[1], sys.argv[2]
colors = {"aggressive": "#d62728", "conservative": "#1f77b4", "past-future": "#2ca02c"}
series = {}
for p in colors:
    r = json.loads(open(f"{d}/{p}.json").read().splitlines()[-1])
    if "kv_usage" in r:
        series[p] = r["kv_usage"]
if not series:
    sys.exit(0)
W, H, L, R, T, B = 900, 600, 70, 20, 40, 80
ph = (H - T - B - 40) / 2
tmax = max(max(s["t"]) for s in series.values()) or 1
pmax = max(max(s["preemptions"] or [0]) for s in series.values()) or 1
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>']
def panel(y0, title, key, ymax, fmt):
    out.append(f'<text x="{W/2}" y="{y0 - 8}" text-anchor="middle" font-size="14">{title}</text>')
    out.append(f'<rect x="{L}" y="{y0}" width="{W-L-R}" height="{ph}" fill="none" stroke="#888"/>')
    for i in range(5):
        v = ymax * i / 4
        y = y0 + ph - ph * i / 4
        out.append(f'<line x1="{L}" x2="{W-R}" y1="{y}" y2="{y}" stroke="#eee"/>')
        out.append(f'<text x="{L-6}" y="{y+4}" text-anchor="end">{fmt(v)}</text>')
    for p, s in series.items():
        pts = " ".join(f"{L + (W-L-R) * t / tmax:.1f},{y0 + ph - ph * v / ymax:.1f}" for t, v in zip(s["t"], s[key]))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[p]}" stroke-width="1.5"/>')
panel(T + 10, "KV cache blocks held by requests (fraction of the pool)", "used", 1.0, lambda v: f"{v:.2f}")
panel(T + 10 + ph + 40, "Preemptions since the start", "preemptions", pmax, lambda v: f"{v:.0f}")
yb = H - 20
for i in range(5):
    t = tmax * i / 4
    out.append(f'<text x="{L + (W-L-R) * i / 4}" y="{T + 10 + 2 * ph + 58}" text-anchor="middle">{t:.0f} s</text>')
x = L
for p in series:
    out.append(f'<rect x="{x}" y="{yb}" width="14" height="4" fill="{colors[p]}"/><text x="{x + 20}" y="{yb + 6}">{p} ({series[p]["preemptions"][-1]:.0f} preemptions)</text>')
    x += 260
out.append("</svg>")
open(path, "w").write("\n".join(out))
print(f"wrote {path}")
PY
