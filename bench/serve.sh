#!/usr/bin/env bash
# The standard serving sweep: spindle-bench's random, shared-prefix and multi-turn workloads
# against `spindle serve` with mkmodel's 125M and 1.1B shapes (random weights, Q8_0), each at a
# few request rates. Appends a section to bench/RESULTS.md: date, machine, command lines and a
# table of the results. Result JSON (vLLM's field names) and SVG plots go to $OUT_DIR.
#
# Environment:
#   BUILD_DIR    where spindle and spindle-bench are built (build)
#   MODELS       presets to run ("125m 1.1b")
#   MODEL_CACHE  where the generated models are kept ($BUILD_DIR/bench-models)
#   OUT_DIR      result JSON and plots ($BUILD_DIR/bench-serve)
#   RESULTS      the markdown file to append to (bench/RESULTS.md)
#   THREADS      server compute threads (all cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
models=${MODELS:-"125m 1.1b"}
cache=${MODEL_CACHE:-$build/bench-models}
out=${OUT_DIR:-$build/bench-serve}
results=${RESULTS:-$root/bench/RESULTS.md}
spindle=$build/spindle
bench=$build/spindle-bench
for b in "$spindle" "$bench"; do
    [[ -x "$b" ]] || { echo "missing $b: build first (make build)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 is needed to write the table" >&2; exit 1; }
mkdir -p "$cache" "$out"

srv_pid=
cleanup() {
    if [[ -n "$srv_pid" ]]; then
        kill -TERM "$srv_pid" 2>/dev/null || true
        wait "$srv_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

threads=()
[[ -n "${THREADS:-}" ]] && threads=(-t "$THREADS")
stamp=$(date -u +%Y%m%d-%H%M%S)
cmds=$out/$stamp-commands.txt
: >"$cmds"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

for preset in $models; do
    gguf=$cache/$preset-q8_0.gguf
    if [[ ! -f "$gguf" ]]; then
        echo "== generating $gguf" >&2
        "$spindle" mkmodel -o "$gguf.tmp" --preset "$preset" --type q8_0 >&2
        mv "$gguf.tmp" "$gguf"
    fi
    # Sizes for a small CPU machine: the 1.1B shape is about eight times slower per token.
    case $preset in
    1.1b)
        random_args=(--num-prompts 6 --input-len 64 --output-len 16 --sweep 0.1,0.25)
        prefix_args=(--num-prompts 6 --shared-prefix-len 128 --num-groups 2 --input-len 16
            --output-len 16 --sweep 0.2)
        multi_args=(--num-prompts 6 --turns 3 --think-time 2 --input-len 32 --output-len 16
            --request-rate 0.2)
        ;;
    *)
        random_args=(--num-prompts 12 --input-len 128 --output-len 32 --sweep 0.25,0.5,1)
        prefix_args=(--num-prompts 12 --shared-prefix-len 256 --num-groups 2 --input-len 32
            --output-len 32 --sweep 0.5,1)
        multi_args=(--num-prompts 12 --turns 3 --think-time 2 --input-len 64 --output-len 32
            --request-rate 0.5)
        ;;
    esac
    log=$out/$stamp-$preset-server.log
    "$spindle" serve -m "$gguf" --port 0 "${threads[@]}" 2>"$log" &
    srv_pid=$!
    port=
    for _ in $(seq 600); do
        port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" 2>/dev/null || true)
        [[ -n "$port" ]] && break
        kill -0 "$srv_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n "$port" ]] || { echo "the server did not start" >&2; exit 1; }
    for ds in random shared-prefix multi-turn; do
        case $ds in
        random) args=("${random_args[@]}") ;;
        shared-prefix) args=("${prefix_args[@]}") ;;
        multi-turn) args=("${multi_args[@]}") ;;
        esac
        json=$out/$stamp-$preset-$ds.json
        cmd=(spindle-bench --base-url http://127.0.0.1:PORT --dataset "$ds" "${args[@]}"
            --seed 0 --num-warmups 2 --timeout 900 --label "$preset")
        echo "${cmd[*]}" >>"$cmds"
        echo "== $preset $ds" >&2
        "$bench" --base-url "http://127.0.0.1:$port" --dataset "$ds" "${args[@]}" --seed 0 --num-warmups 2 \
            --timeout 900 --label "$preset" --no-progress --result-json "$json" \
            --plot "$out/$stamp-$preset-$ds.svg" >"$out/$stamp-$preset-$ds.txt"
    done
    kill -TERM "$srv_pid"
    wait "$srv_pid" || true
    srv_pid=
done

python3 - "$out" "$stamp" "$results" "$cmds" "$load_start" "$models" <<'EOF'
import datetime, glob, json, os, subprocess, sys
out, stamp, results, cmds, load_start, models = sys.argv[1:7]
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
nproc = os.cpu_count()
load_end = " ".join(open("/proc/loadavg").read().split()[:3])
try:
    commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],
                                     cwd=os.path.dirname(results), text=True).strip()
except Exception:
    commit = "?"
rows = []
for preset in models.split():
    for ds in ("random", "shared-prefix", "multi-turn"):
        path = f"{out}/{stamp}-{preset}-{ds}.json"
        if not os.path.exists(path):
            continue
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            sm = r.get("server_metrics", {})
            rate = r["request_rate"]
            rows.append("| %s | %s | %s | %d/%d | %.2f | %.1f | %.0f | %.0f | %.1f | %.1f | %.0f | %d | %d |" % (
                preset, ds, rate if rate == "inf" else "%g" % rate, r["completed"],
                r["completed"] + r["failed"], r["request_throughput"], r["output_throughput"],
                r["mean_ttft_ms"], r["p99_ttft_ms"], r["mean_tpot_ms"], r["p99_tpot_ms"],
                r["median_e2el_ms"], sm.get("prefix_cache_hit_tokens", 0),
                sm.get("num_preemptions", 0)))
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
with open(results, "a") as f:
    if f.tell() == 0:
        f.write("# Serving benchmark results\n\nRows appended by `bench/serve.sh` (spindle-bench "
                "against `spindle serve`, mkmodel random-weight Q8_0 models). Rates are requests "
                "per second (sessions per second for multi-turn); times in ms; TPOT excludes the "
                "first token; prefix hits and preemptions are the server's /metrics deltas.\n")
    f.write(f"\n## {now} (commit {commit})\n\n")
    f.write(f"Machine: {nproc} CPUs, {cpu}; load average {load_start} at the start, "
            f"{load_end} at the end.\n\nCommands (PORT: the server's, `spindle serve -m "
            f"MODEL --port 0`):\n\n```\n")
    f.write(open(cmds).read())
    f.write("```\n\n| model | dataset | rate | ok | req/s | out tok/s | mean TTFT | p99 TTFT "
            "| mean TPOT | p99 TPOT | median E2EL | prefix hits | preemptions |\n")
    f.write("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for row in rows:
        f.write(row + "\n")
print(f"appended {len(rows)} rows to {results}")
EOF
