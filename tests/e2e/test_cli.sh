#!/usr/bin/env bash
# The command line as users run it: generate (greedy ids equal llama.cpp's golden output),
# tokenize, chat-template, mkmodel, and clear errors with the documented exit codes.
set -euo pipefail
bin=${SP_BUILD_DIR:?}/spindle
shared=${SP_SHARED_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"
pass=0

# generate --ids reproduces the golden greedy tokens (first 64).
want=$(/usr/bin/python3 -c "import json; g=json.load(open('$shared/models/golden-greedy.json')); print(' '.join(map(str, g['models']['stories260K.gguf'][0]['greedy_tokens'])))")
got=$("$bin" generate -m "$shared/models/stories260K.gguf" -p "Once upon a time" -n 64 --ids 2>"$tmp/err")
[[ "$got" == "$want" ]] || fail "generate --ids: got '$got', want '$want'"
grep -q "tok/s" "$tmp/err" || fail "generate prints no timing line"
pass=$((pass + 1))

# generate writes text; the story begins as llama.cpp's does.
text=$("$bin" generate -m "$shared/models/stories260K.gguf" -p "Once upon a time" -n 20 2>/dev/null)
[[ "$text" == ", there was a little girl named Lily."* ]] || fail "generate text: '$text'"
pass=$((pass + 1))

# tokenize equals llama.cpp's prompt tokens (BOS added).
[[ $("$bin" tokenize -m "$shared/models/stories260K.gguf" "Once upon a time") == "1 403 407 261 378" ]] ||
    fail "tokenize"
[[ $("$bin" tokenize -m "$shared/models/stories260K.gguf" --no-bos "Once upon a time") == "403 407 261 378" ]] ||
    fail "tokenize --no-bos"
pass=$((pass + 1))

# chat-template renders the model's template.
echo '[{"role":"user","content":"Hi"}]' >"$tmp/m.json"
out=$("$bin" chat-template -m "$shared/models/random/phi3-spm-f32.gguf" --messages "$tmp/m.json" --add-generation-prompt)
[[ "$out" == $'<s><|user|>\nHi<|end|>\n<|assistant|>' ]] || fail "chat-template: '$out'"
out=$("$bin" chat-template -m "$shared/models/stories260K.gguf" --messages "$tmp/m.json")
[[ "$out" == $'<|im_start|>user\nHi<|im_end|>' ]] || fail "chat-template ChatML default: '$out'"
pass=$((pass + 1))

# mkmodel writes a loadable model that generates.
"$bin" mkmodel -o "$tmp/tiny.gguf" --preset tiny --type q8_0 --vocab-from "$shared/vocab/ggml-vocab-llama-spm.gguf" 2>/dev/null
ids=$("$bin" generate -m "$tmp/tiny.gguf" -p "Hello" -n 8 --ids 2>/dev/null)
[[ $(wc -w <<<"$ids") -ge 1 ]] || fail "mkmodel model does not generate"
pass=$((pass + 1))

# Errors: usage errors exit 2, runtime errors exit 1, both say what is wrong.
set +e
"$bin" generate -p x 2>"$tmp/err"; rc=$?
[[ $rc == 2 ]] && grep -q "required" "$tmp/err" || fail "missing -m: rc $rc"
"$bin" generate -m "$tmp/nope.gguf" -p x 2>"$tmp/err"; rc=$?
[[ $rc == 1 ]] && grep -q "nope.gguf" "$tmp/err" || fail "missing file: rc $rc"
head -c 1000 "$shared/models/stories260K.gguf" >"$tmp/trunc.gguf"
"$bin" generate -m "$tmp/trunc.gguf" -p x 2>"$tmp/err"; rc=$?
[[ $rc == 1 ]] || fail "truncated file: rc $rc"
"$bin" frobnicate 2>/dev/null; rc=$?
[[ $rc == 2 ]] || fail "unknown command: rc $rc"
"$bin" generate -m "$shared/models/stories260K.gguf" -p x --temp abc 2>/dev/null; rc=$?
[[ $rc == 2 ]] || fail "bad --temp: rc $rc"
set -e
pass=$((pass + 1))

# serve accepts every engine option; a bad value is a usage error.
"$bin" serve -m "$shared/models/stories260K.gguf" --port 0 --admission conservative \
    --session-ttl 0 --kv-tokens 4096 --max-seqs 8 --max-batch-tokens 64 -t 1 --no-prefix-cache \
    --kv-type f32 --ctx 512 2>"$tmp/serve.log" &
spid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$tmp/serve.log" && break
    sleep 0.1
done
grep -q "listening on" "$tmp/serve.log" || fail "serve with engine options: $(cat "$tmp/serve.log")"
kill -TERM $spid
wait $spid || fail "serve did not exit 0 on SIGTERM"
set +e
for bad in "--admission nope" "--session-ttl -1" "--kv-memory lots" "--max-seqs 0"; do
    "$bin" serve -m "$shared/models/stories260K.gguf" --port 0 $bad 2>/dev/null; rc=$?
    [[ $rc == 2 ]] || fail "serve $bad: rc $rc"
done
set -e
pass=$((pass + 1))

# serve and bench with a draft model: a draft model of another vocabulary is a runtime error
# that names the problem; one of the same vocabulary drafts (bench prints the accepted share).
set +e
"$bin" serve -m "$shared/models/TinyStories-656K-F32.gguf" --port 0 \
    --draft-model "$shared/models/stories260K.gguf" 2>"$tmp/err"; rc=$?
set -e
[[ $rc == 1 ]] && grep -q "another vocabulary" "$tmp/err" || fail "draft vocabulary: rc $rc, $(cat "$tmp/err")"
"$bin" bench -m "$shared/models/TinyStories-656K-F32.gguf" \
    --draft-model "$shared/models/TinyStories-656K-Q8_0.gguf" --spec fixed:4 --requests 2 \
    --concurrency 2 --prompt-len 8 --gen-len 32 -t 1 >"$tmp/bench" 2>/dev/null || fail "bench --draft-model"
/usr/bin/python3 - "$tmp/bench" <<'PY' || fail "bench --draft-model: $(cat "$tmp/bench")"
import sys
rows = [f for f in map(str.split, open(sys.argv[1])) if len(f) == 8 and f[0] == "2"]
assert len(rows) == 1 and rows[0][-2].endswith("%"), rows
assert float(rows[0][-2].rstrip("%")) > 50 and float(rows[0][-1]) > 0, rows  # the Q8_0 file agrees with the F32 one
PY
pass=$((pass + 1))

# roofline with a model: a row per batch (1, 8, 32, 64) and the prefill, each bound the smaller
# of its bandwidth and arithmetic bounds; decode's bandwidth bound grows with the batch.
"$bin" roofline -m "$shared/models/stories260K.gguf" --mem-mib 16 >"$tmp/roof" 2>&1 || fail "roofline"
/usr/bin/python3 - "$tmp/roof" <<'PY' || fail "roofline table: $(cat "$tmp/roof")"
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 6 and f[0] in ("1", "8", "32", "64", "prefill"):
        rows[f[0]] = [float(x) for x in f[1:]]
assert list(rows) == ["1", "8", "32", "64", "prefill"], rows
for name, (mb, gop, bw, op, bound) in rows.items():
    assert mb > 0 and gop > 0 and bw > 0 and op > 0, name
    assert abs(bound - min(bw, op)) <= 0.05 + 1e-3 * bound, name
assert rows["1"][2] < rows["8"][2] < rows["32"][2] < rows["64"][2]
PY
pass=$((pass + 1))

for c in generate mkmodel bench tokenize chat-template serve roofline; do
    help=$("$bin" "$c" --help) || fail "$c --help exits $?"
    grep -q usage <<<"$help" || fail "$c --help"
done
pass=$((pass + 1))
echo "cli: $pass passed, 0 failed"
