#!/usr/bin/env bash
# The admission ablation (bench/admission.sh) at several arrival rates, same workload and SLOs:
# a table of goodput per policy and rate, and a plot of goodput against the rate.
# Usage: [BUILD_DIR=build] [RATES="3 5 6 7 8 10"] [NUM_PROMPTS=200] bench/admission-sweep.sh [MODEL.gguf]
# (the other knobs of bench/admission.sh pass through; plots: bench/admission-goodput.svg and,
# per rate R, bench/admission-kv-rR.svg and the latency plots bench/admission-POLICY-rR.svg)
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${RATES:-3 5 6 7 8 10}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $rates; do
    echo "== rate $r" >&2
    RATE=$r NUM_PROMPTS=${NUM_PROMPTS:-200} TAG=-r$r bench/admission.sh "$@" | tee "$out/r$r.txt" >&2
done
/usr/bin/python3 - "$out" "bench/admission-goodput.svg" $rates <<'PY'
import math, re, sys
d, path, rates = sys.argv[1], sys.argv[2], [float(r) for r in sys.argv[3:]]
policies = ["aggressive", "conservative", "past-future"]
colors = {"aggressive": "#d62728", "conservative": "#1f77b4", "past-future": "#2ca02c"}
good = {p: [] for p in policies}
pre = {p: [] for p in policies}
for r in sys.argv[3:]:
    for line in open(f"{d}/r{r}.txt"):
        m = re.match(r"\| (\S+) \| ([0-9.]+) \| [0-9.]+ \|.*\| ([0-9.]+) \|$", line.strip())
        if m and m.group(1) in good:
            good[m.group(1)].append(float(m.group(2)))
            pre[m.group(1)].append(float(m.group(3)))
print("| rate (req/s) | " + " | ".join(f"{p} goodput (preemptions)" for p in policies) + " | past-future / best other |")
print("| ---: | " + " | ".join("---:" for _ in policies) + " | ---: |")
for i, r in enumerate(rates):
    best = max(good["aggressive"][i], good["conservative"][i])
    ratio = good["past-future"][i] / best if best > 0 else float("inf")
    print(f"| {r:g} | " + " | ".join(f"{good[p][i]:.3f} ({pre[p][i]:.0f})" for p in policies) + f" | {ratio:.2f} |")
W, H, L, R, T, B = 700, 420, 70, 20, 40, 70
ymax = math.ceil(max(max(v) for v in good.values()) * 1.1) or 1
xmax = max(rates) * 1.05
X = lambda x: L + (W - L - R) * x / xmax
Y = lambda y: T + (H - T - B) * (1 - y / ymax)
o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
     '<rect width="100%" height="100%" fill="white"/>',
     f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">Goodput at the SLOs against the arrival rate</text>',
     f'<rect x="{L}" y="{T}" width="{W-L-R}" height="{H-T-B}" fill="none" stroke="#888"/>']
nt = ymax if ymax <= 10 else 5
for i in range(nt + 1):
    v = ymax * i / nt
    o.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/><text x="{L-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v:g}</text>')
for r in rates:
    o.append(f'<text x="{X(r):.1f}" y="{H-B+16}" text-anchor="middle">{r:g}</text>')
o.append(f'<text x="{W/2}" y="{H-B+34}" text-anchor="middle">offered load (requests/s)</text>')
o.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">goodput (requests/s)</text>')
for p in policies:
    pts = " ".join(f"{X(r):.1f},{Y(g):.1f}" for r, g in zip(rates, good[p]))
    o.append(f'<polyline points="{pts}" fill="none" stroke="{colors[p]}" stroke-width="2"/>')
    for r, g in zip(rates, good[p]):
        o.append(f'<circle cx="{X(r):.1f}" cy="{Y(g):.1f}" r="3" fill="{colors[p]}"/>')
x = L
for p in policies:
    o.append(f'<rect x="{x}" y="{H-18}" width="14" height="4" fill="{colors[p]}"/><text x="{x+20}" y="{H-12}">{p}</text>')
    x += 180
o.append("</svg>")
open(path, "w").write("\n".join(o))
print(f"wrote {path}", file=sys.stderr)
PY
