#!/usr/bin/env bash
# `spindle batch`: a batch input file run without a server; killed with -9 in the middle and run
# again, it resumes and ends with every line answered exactly once; a bad input says which line
# is wrong; on a terminal it shows a progress bar.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${SP_BUILD_DIR:?}/spindle
model=${SP_SHARED_DIR:?}/models/stories260K.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
/usr/bin/python3 - "$work/in.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(120):
        f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                            "body": {"messages": [
                                {"role": "system", "content": "You tell stories. " * (1 + i % 4)},
                                {"role": "user", "content": f"Tell story {i}"}],
                                "max_tokens": 200, "ignore_eos": True}}) + "\n")
PY
out=$work/out.jsonl
"$bin" batch -m "$model" --input "$work/in.jsonl" --output "$out" 2>"$work/log1" &
pid=$!
# Killed once some lines are recorded (the job's database is in out.jsonl.state/).
for _ in $(seq 400); do
    n=$(/usr/bin/python3 -c "
import sqlite3, sys
try:
    print(sqlite3.connect('file:$out.state/spindle.db?mode=ro', uri=True).execute(
        'select count(*) from lines where state > 0').fetchone()[0])
except Exception:
    print(0)")
    ((n >= 10)) && break
    sleep 0.02
done
kill -9 $pid
wait $pid 2>/dev/null || true
[[ -d $out.state && ! -f $out ]] || fail "the killed job left no state, or an output"
((n < 120)) || fail "the job finished before it was killed"
"$bin" batch -m "$model" --input "$work/in.jsonl" --output "$out" 2>"$work/log2" ||
    { cat "$work/log2" >&2; fail "the resumed job failed"; }
grep -q "resuming: [0-9]* of 120 lines already done" "$work/log2" || fail "no resume: $(cat "$work/log2")"
/usr/bin/python3 - "$out" <<'PY' || fail "the output is not every line exactly once"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ids = sorted(r["custom_id"] for r in rows)
assert ids == sorted(f"r{i}" for i in range(120)), ids[:5]
assert all(r["response"]["status_code"] == 200 for r in rows)
assert all(r["response"]["body"]["usage"]["completion_tokens"] == 200 for r in rows)
PY
[[ ! -e $out.state ]] || fail "the state directory was not removed"
# A bad input: exit 1 and the line that is wrong.
printf '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\nnot json\n' \
    >"$work/bad.jsonl"
if "$bin" batch -m "$model" --input "$work/bad.jsonl" --output "$work/bad.out" 2>"$work/log3"; then
    fail "a bad input was accepted"
fi
grep -q "line 2" "$work/log3" || fail "the error does not name the line: $(cat "$work/log3")"
# On a terminal: a progress bar with a rate.
if command -v script >/dev/null; then
    head -20 "$work/in.jsonl" >"$work/small.jsonl"
    script -qec "'$bin' batch -m '$model' --input '$work/small.jsonl' --output '$work/s.out'" \
        /dev/null >"$work/tty.log" 2>&1 || fail "the job failed on a terminal"
    grep -q "lines/s" "$work/tty.log" || fail "no progress bar on a terminal"
fi
echo "batch cli: ok"
