#!/usr/bin/env bash
# Speculative decoding against load: predicted outputs whose tokens are right with probability
# A, at S streams, for each --spec policy; output tokens/s and its ratio to --spec off (no
# drafts at all) at the same point, all in one run. Prints a markdown table and writes
# bench/spec-sweep.svg (speedup against streams, one panel per accuracy, one line per policy).
#
# It runs `spindle bench --predict A` (in-process: each request sends its own greedy output,
# found by an untimed first pass, with each token kept with probability A): the accuracy is
# exact in tokens. spindle-bench's prediction dataset does the same over HTTP, where the
# prediction is text the server tokenizes again: a random-weight model's outputs do not
# survive that round trip (measured: 59% of the drafts accepted with the exact output as the
# prediction, 1.1B Q8_0), a trained model's do (96%, TinyStories-656K).
#
# Usage: [BUILD_DIR=build] [ACCURACY="0.3 0.6 0.9"] [STREAMS="1 8 32 64"]
#        [POLICIES="off fixed:2 fixed:4 fixed:8 auto"] [OUTPUT_LEN=48] [INPUT_LEN=32]
#        [THREADS=N] bench/spec-sweep.sh [MODEL.gguf]
# (default model: a random-weight 1.1B Q8_0 generated into bench/models/ if absent; requests
# per point: max(8, 2S), so that each point's requests start and finish at every load)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-bench/models/1.1b-q8_0.gguf}
[[ $# -ge 1 ]] || bench_model "$model" 1.1b q8_0
accs=${ACCURACY:-0.3 0.6 0.9}
streams=${STREAMS:-1 8 32 64}
policies=${POLICIES:-off fixed:2 fixed:4 fixed:8 auto}
threads=${THREADS:-$(nproc)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for a in $accs; do
    for s in $streams; do
        for p in $policies; do
            n=$((2 * s < 8 ? 8 : 2 * s))
            printf '%-8s accuracy %s, %2d streams ... ' "$p" "$a" "$s" >&2
            "$bin" bench -m "$model" --predict "$a" --spec "$p" --requests "$n" --concurrency "$s" \
                --prompt-len "${INPUT_LEN:-32}" --gen-len "${OUTPUT_LEN:-48}" -t "$threads" \
                >"$out/r.txt" 2>"$out/err.txt" || { cat "$out/r.txt" "$out/err.txt" >&2; exit 1; }
            # concurrency prefill decode step peak output-tok/s accepted mean-draft
            awk -v p="$p" -v a="$a" -v s="$s" '$1 == s && NF == 8 {
                sub("%", "", $7); print p, a, s, $6, $7 / 100, $8 }' "$out/r.txt" >>"$out/points.txt"
            tail -1 "$out/points.txt" |
                awk '{printf "%s tok/s, drafts accepted %.0f%%, mean draft %s\n", $4, 100*$5, $6}' >&2
        done
    done
done
/usr/bin/python3 - "$out/points.txt" bench/spec-sweep.svg "$policies" <<'PY'
import sys
pts = [l.split() for l in open(sys.argv[1])]
path, policies = sys.argv[2], sys.argv[3].split()
tok = {(p, a, int(s)): float(t) for p, a, s, t, _, _ in pts}
acc = {(p, a, int(s)): float(x) for p, a, s, _, x, _ in pts}
mk = {(p, a, int(s)): float(k) for p, a, s, _, _, k in pts}
accs = sorted({x[1] for x in pts}, key=float)
streams = sorted({int(x[2]) for x in pts})
base = "off" if "off" in policies else policies[0]
others = [p for p in policies if p != base]
fixed = [p for p in others if p.startswith("fixed:")]
print("| accuracy | streams | " + " | ".join(f"{p} tok/s" for p in policies) + " | " +
      " | ".join(f"{p} / {base}" for p in others) +
      (" | auto / best fixed |" if "auto" in others and fixed else " |"))
print("| ---: | ---: | " + " | ".join("---:" for _ in policies) + " | " + " | ".join("---:" for _ in others) +
      (" | ---: |" if "auto" in others and fixed else " |"))
for a in accs:
    for s in streams:
        b = tok[(base, a, s)]
        row = f"| {a} | {s} | " + " | ".join(f"{tok[(p, a, s)]:.1f}" for p in policies) + " | "
        row += " | ".join(f"{tok[(p, a, s)] / b:.2f}x ({100 * acc[(p, a, s)]:.0f}%, k {mk[(p, a, s)]:.1f})"
                          for p in others)
        if "auto" in others and fixed:
            row += f" | {tok[('auto', a, s)] / max(tok[(p, a, s)] for p in fixed):.2f}"
        print(row + " |")
# One panel per accuracy: speedup over the base policy against streams (log scale).
import math
W, H, L, T, B, PW, GAP = 900, 380, 60, 50, 80, 250, 30
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
ys = [tok[(p, a, s)] / tok[(base, a, s)] for p in policies for a in accs for s in streams]
ymax = max(1.5, math.ceil(max(ys) * 2) / 2)
o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
     '<rect width="100%" height="100%" fill="white"/>',
     f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">Speculative decoding: output tok/s over --spec {base}, against load</text>']
lx = [math.log2(s) for s in streams]
for k, a in enumerate(accs):
    x0 = L + k * (PW + GAP)
    X = lambda s: x0 + PW * (math.log2(s) - min(lx)) / ((max(lx) - min(lx)) or 1)
    Y = lambda y: T + (H - T - B) * (1 - y / ymax)
    o.append(f'<rect x="{x0}" y="{T}" width="{PW}" height="{H-T-B}" fill="none" stroke="#888"/>')
    o.append(f'<text x="{x0 + PW/2}" y="{T-8}" text-anchor="middle">predictions {float(a)*100:.0f}% right</text>')
    for i in range(int(ymax * 2) + 1):
        v = i / 2
        o.append(f'<line x1="{x0}" x2="{x0+PW}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="{"#999" if v == 1 else "#eee"}"/>')
        if k == 0:
            o.append(f'<text x="{x0-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v:g}x</text>')
    for s in streams:
        o.append(f'<text x="{X(s):.1f}" y="{H-B+16}" text-anchor="middle">{s}</text>')
    o.append(f'<text x="{x0 + PW/2}" y="{H-B+32}" text-anchor="middle">streams</text>')
    for j, p in enumerate(policies):
        c = colors[j % len(colors)]
        pts = " ".join(f"{X(s):.1f},{Y(tok[(p, a, s)] / tok[(base, a, s)]):.1f}" for s in streams)
        o.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
x = L
for j, p in enumerate(policies):
    o.append(f'<rect x="{x}" y="{H-22}" width="14" height="4" fill="{colors[j % len(colors)]}"/><text x="{x+20}" y="{H-16}">{p}</text>')
    x += 120
o.append("</svg>")
open(path, "w").write("\n".join(o) + "\n")
PY
echo "plot: bench/spec-sweep.svg" >&2
