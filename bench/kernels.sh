#!/usr/bin/env bash
# Kernel benchmark: for 1.1B Q8_0, 1.1B Q4_0, 1.1B Q4_K_M and 125M Q8_0 models (random weights,
# real shapes), this machine's roofline, then aggregate decode tok/s at 1, 8, 32 and 64 concurrent
# sequences (32-token prompts, 32 generated tokens) and the prefill of a 512-token prompt, each
# next to its roofline bound (the highest of three roofline runs; Q4_K_M's too assume the int8
# peak of the Q8_0 kernel). Prints a Markdown table on stdout, progress on stderr. Takes about 13
# minutes.
# Usage: [BUILD_DIR=build] bench/kernels.sh [MODELS_DIR]   (default build/bench-models; models
# are generated there if absent: ~2.3 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
dir=${1:-build/bench-models}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "| model | measure | tok/s | x batch 1 | roofline bound tok/s | fraction of bound |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for spec in "1.1b q8_0" "1.1b q4_0" "1.1b q4_k_m" "125m q8_0"; do
    read -r preset type <<<"$spec"
    model=$dir/$preset-$type.gguf
    echo "[$preset $type] model" >&2
    bench_model "$model" "$preset" "$type"
    # Decode contexts run from 32 to 64 tokens: their bounds at 48; the prefill's at 512. The
    # roofline runs three times and each row keeps its highest bound: a shared machine's speed
    # varies from minute to minute, and a bound must not come from a slow minute.
    for r in 1 2 3; do
        echo "[$preset $type] roofline $r/3" >&2
        "$bin" roofline -m "$model" --ctx 48 >"$out/roof-decode-$r.txt"
        "$bin" roofline -m "$model" --ctx 512 >"$out/roof-prefill-$r.txt"
    done
    for c in 1 8 32 64; do
        echo "[$preset $type] decode, $c sequences" >&2
        "$bin" bench -m "$model" --requests $((c < 4 ? 4 : c)) --prompt-len 32 --gen-len 32 \
            --concurrency "$c" | tail -1 >"$out/decode-$c.txt"
    done
    echo "[$preset $type] prefill, 512-token prompt" >&2
    "$bin" bench -m "$model" --requests 2 --prompt-len 512 --gen-len 4 --concurrency 1 |
        tail -1 >"$out/prefill.txt"
    /usr/bin/python3 - "$out" "$preset $type" <<'PY'
import sys
d, name = sys.argv[1], sys.argv[2]
def bounds(kind):  # row label -> the highest bound tok/s (last column) of the three runs
    rows = {}
    for r in (1, 2, 3):
        for line in open(f"{d}/roof-{kind}-{r}.txt"):
            f = line.split()
            if len(f) == 6 and f[0] in ("1", "8", "32", "64", "prefill"):
                rows[f[0]] = max(rows.get(f[0], 0.0), float(f[5]))
    return rows
dec, pre = bounds("decode"), bounds("prefill")
b1 = None
for c in ("1", "8", "32", "64"):
    tok = float(open(f"{d}/decode-{c}.txt").read().split()[2])
    b1 = b1 or tok
    print(f"| {name} | decode, {c} seq | {tok:.1f} | {tok / b1:.1f} | {dec[c]:.1f} | {tok / dec[c]:.2f} |")
tok = float(open(f"{d}/prefill.txt").read().split()[1])
print(f"| {name} | prefill, 512 tokens | {tok:.1f} | | {pre['prefill']:.1f} | {tok / pre['prefill']:.2f} |")
PY
done
