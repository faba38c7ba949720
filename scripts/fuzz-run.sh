#!/usr/bin/env bash
# Runs libFuzzer targets (built by `make fuzz`) for a fixed time each, starting from the seed
# corpus checked in under tests/fuzz/corpus/<target>/ and the seeds tests/fuzz/corpus/make_seeds.py
# writes at each run (the GGUF seeds, small model files among them, are generated, not kept).
#
#   scripts/fuzz-run.sh [-t SECONDS] [-j JOBS] [-b BUILD_DIR] [TARGET...]
#
# SECONDS per target (default $FUZZ_SECONDS, else 60); JOBS targets at once, one core each
# (default 1); BUILD_DIR holds the fuzz binaries in tests/ (default build-fuzz); TARGET defaults
# to every tests/fuzz/fuzz_*.c. `make fuzz-run` calls this.
#
# The checked-in corpus is only read: new inputs go to a temporary directory given to libFuzzer
# as its first (writable) corpus. Every target runs even when another fails; a crash, sanitizer
# report, leak or timeout fails the run, prints the report and the reproducer, and keeps the
# reproducer under BUILD_DIR/fuzz-artifacts/<target>/. Once the bug is fixed, add the reproducer
# to the target's corpus as crash-<what> so that it stays fixed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
jobs=1
build="$root/build-fuzz"
while getopts "t:j:b:h" opt; do
    case "$opt" in
    t) seconds="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    b) build="$(cd "$OPTARG" && pwd)" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
if ((${#targets[@]} == 0)); then
    for src in "$root"/tests/fuzz/fuzz_*.c; do
        targets+=("$(basename "$src" .c)")
    done
fi

# fuzz_tok reads its vocabularies from ../shared. UBSan must stop at the first report, or
# undefined behaviour would only be printed; leaks fail like crashes.
export SP_SHARED_DIR="${SP_SHARED_DIR:-$root/../shared}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
if ! command -v llvm-symbolizer >/dev/null && [[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
    export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/spindle-fuzz.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]+"${pids[@]}"}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Fuzzes one target; its output goes to $work/$t/log, its exit status to $work/$t/status.
fuzz_one() {
    local t="$1" rc=0
    local corpora=("$work/$t/corpus")
    for d in "$root/tests/fuzz/corpus/$t" "$work/generated/$t"; do
        [[ -d "$d" ]] && corpora+=("$d")
    done
    # -timeout: one input running this long is a hang; -rss_limit_mb: the default, stated.
    "$build/tests/$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" "${corpora[@]}" \
        >"$work/$t/log" 2>&1 || rc=$?
    echo "$rc" >"$work/$t/status"
}

python3 "$root/tests/fuzz/corpus/make_seeds.py" "$work/generated" >/dev/null
running=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
    if [[ ! -x "$build/tests/$t" ]]; then
        echo "$build/tests/$t is missing (run make fuzz)" >"$work/$t/log"
        echo 1 >"$work/$t/status"
        continue
    fi
    n_seeds=0
    for d in "$root/tests/fuzz/corpus/$t" "$work/generated/$t"; do
        [[ -d "$d" ]] && n_seeds=$((n_seeds + $(find "$d" -type f | wc -l)))
    done
    if ((n_seeds > 0)); then
        echo "fuzz-run: $t for ${seconds}s from $n_seeds seeds"
    else
        echo "fuzz-run: warning: $t has no seed corpus; starting from nothing" >&2
    fi
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    pids+=($!)
    running=$((running + 1))
done
wait || true

failed=()
for t in "${targets[@]}"; do
    log="$work/$t/log"
    if [[ "$(cat "$work/$t/status")" == 0 ]]; then
        grep -E '^#[0-9]+[[:space:]]+DONE|^stat::new_units_added' "$log" | sed "s/^/  $t: /"
        continue
    fi
    failed+=("$t")
    echo "fuzz-run: $t FAILED; the end of its log:" >&2
    tail -n 120 "$log" >&2
    keep="$build/fuzz-artifacts/$t"
    for a in "$work/$t/artifacts"/*; do
        [[ -e "$a" ]] || continue
        mkdir -p "$keep"
        cp "$a" "$keep/"
        echo "fuzz-run: reproducer $keep/$(basename "$a") ($(stat -c %s "$a") bytes);" \
            "run: $build/tests/$t $keep/$(basename "$a")" >&2
        echo "fuzz-run: its bytes, base64:" >&2
        base64 -w 100 "$a" | head -n 200 >&2
    done
done

if ((${#failed[@]})); then
    echo "fuzz-run: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-run: ${#targets[@]} targets, ${seconds}s each: no crash"
