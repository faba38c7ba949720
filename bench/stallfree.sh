#!/usr/bin/env bash
# Latency under load (stall-free steps): spindle-bench against `spindle serve` (default: steps
# sized by the step-time model), `spindle serve --max-step-ms off` (the ablation: a prompt takes
# the whole token budget of a step) and llama.cpp's llama-server, on the same model file, one
# after the other in one run. Two workloads:
#
#   chat   16 concurrent streaming clients, 32 requests of ~100 prompt tokens and 64 output
#          tokens each;
#   long   8 streams decoding 256 tokens each, and prompts of 1,000-2,000 tokens (16 output
#          tokens) arriving among them (a trace replayed at its timestamps).
#
#   bench/stallfree.sh [MODEL_DIR]
#
# Prints one markdown table per workload: output tok/s, TTFT p50/p99, TPOT p50, ITL p50/p99 and
# ITL p99 / TPOT p50 for each server, and the step-time model's median error on Spindle
# (/metrics). Environment: MODEL (preset and type, default "1.1b q8_0"), THREADS (2), PEER (the
# llama.cpp build, default the one for this CPU: amx, avx512 or avx2), SERVERS (a subset of
# "spindle spindle-off llama-server"). Progress on stderr;
# record the output in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
dir=${1:-build/bench-models}
threads=${THREADS:-2}
read -r preset type <<<"${MODEL:-1.1b q8_0}"
model=$dir/$preset-$type.gguf
bench_model "$model" "$preset" "$type" >&2
peers=${PEERS_DIR:-../shared/peers/llama.cpp}
flags=$(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')
peer=avx2
if [[ "$flags" == *avx512_vnni* && "$flags" == *avx512_bf16* && "$flags" == *avx512vbmi* ]]; then
    peer=avx512
    [[ "$flags" == *amx_int8* ]] && peer=amx
fi
peer=${PEER:-$peer}
out=$(mktemp -d)
pid=
cleanup() {
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$out"
}
trap cleanup EXIT

# The long-prompt trace: 8 streams at t = 0, then a long prompt every 3 s from t = 1 s.
python3 - "$out/long.jsonl" <<'EOF'
import json, random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for i in range(8):
        f.write(json.dumps({"timestamp": i * 50, "input_length": 32, "output_length": 256}) + "\n")
    for i in range(4):
        f.write(json.dumps({"timestamp": 1000 + 3000 * i,
                            "input_length": random.randint(1000, 2000),
                            "output_length": 16}) + "\n")
EOF

# start NAME CMD...: starts a server on $port and waits for /health. Each server gets a port of
# its own (the last one's connections linger in TIME_WAIT).
port=18431
start() {
    local name=$1
    shift
    "$@" >"$out/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 1200); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$out/$name.log" >&2
    return 1
}
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

run_workload() { # NAME WORKLOAD -> $out/NAME-WORKLOAD.json
    local name=$1 w=$2 args
    case $w in
    chat) args=(--dataset random --num-prompts 32 --input-len 100 --range-ratio 0.2
        --output-len 64 --max-concurrency 16 --request-rate inf) ;;
    long) args=(--dataset "$out/long.jsonl") ;;
    esac
    echo "[$name, $w]" >&2
    "$bench" --base-url "http://127.0.0.1:$port" "${args[@]}" --seed 0 --timeout 900 \
        --no-progress --label "$name" --result-json "$out/$name-$w.json" >"$out/$name-$w.txt"
    if [[ $name == spindle* ]]; then
        curl -sf "http://127.0.0.1:$port/metrics" |
            awk '/^spindle_step_time_model_median_error_ratio /{print $2}' >"$out/$name-$w.err"
    fi
}

read -r -a servers <<<"${SERVERS:-spindle spindle-off llama-server}"
for name in "${servers[@]}"; do
    port=$((port + 1))
    case $name in
    spindle) start "$name" "$bin" serve -m "$model" --port "$port" -t "$threads" ;;
    spindle-off) start "$name" "$bin" serve -m "$model" --port "$port" -t "$threads" \
        --max-step-ms off ;;
    llama-server) start "$name" "$peers/$peer/llama-server" -m "$model" --port "$port" \
        -t "$threads" -np 16 -c 36864 ;;
    esac
    for w in chat long; do
        run_workload "$name" "$w"
    done
    stop
done

python3 - "$out" "$peer" "$threads" "$model" <<'EOF'
import json, os, sys
out, peer, threads, model = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; {threads} threads; {os.path.basename(model)}; llama-server: the {peer} build, -np 16\n")
names = {"spindle": "spindle serve", "spindle-off": "spindle serve --max-step-ms off",
         "llama-server": "llama-server"}
for w, title in (("chat", "16 concurrent clients, 32 requests of ~100 prompt and 64 output tokens"),
                 ("long", "8 streams of 256 tokens, prompts of 1,000-2,000 tokens arriving")):
    print(f"### {title}\n")
    print("| server | output tok/s | TTFT p50 / p99 (ms) | TPOT p50 (ms) | ITL p50 / p99 (ms) | ITL p99 / TPOT p50 | step model median error |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in ("spindle", "spindle-off", "llama-server"):
        path = f"{out}/{n}-{w}.json"
        if not os.path.exists(path):
            continue
        r = json.loads(open(path).read().splitlines()[-1])
        err = ""
        if os.path.exists(f"{out}/{n}-{w}.err"):
            e = open(f"{out}/{n}-{w}.err").read().strip()
            err = f"{float(e) * 100:.1f}%" if e else ""
        ratio = r["p99_itl_ms"] / r["median_tpot_ms"] if r["median_tpot_ms"] else float("nan")
        print(f"| {names[n]} | {r['output_throughput']:.1f} | {r['median_ttft_ms']:.0f} / {r['p99_ttft_ms']:.0f} "
              f"| {r['median_tpot_ms']:.0f} | {r['median_itl_ms']:.0f} / {r['p99_itl_ms']:.0f} | {ratio:.1f}x | {err} |")
    print()
EOF
