#!/usr/bin/env bash
# `spindle grammar-bench` as bench/grammar.sh runs it, and the schema set as a compiler test:
# every schema of bench/schemas/gen.py compiles and its grammar takes every instance (each valid
# against its schema by jsonschema), token by token with the 32k Llama and 50k GPT-2
# vocabularies, and with masks on a small vocabulary (every token taken must be in the full
# mask and in the cached one). A schema that does not compile or an instance that is rejected
# is named and fails the run; the text mode still reports its rows.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${SP_BUILD_DIR:?}/spindle
shared=${SP_SHARED_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$here/lib.sh"
pass=0

/usr/bin/python3 "$here/../../bench/schemas/gen.py" --out "$tmp/set.jsonl"
n=$(wc -l <"$tmp/set.jsonl")
[[ $n -ge 100 ]] || fail "the schema set has $n schemas, fewer than 100"
pass=$((pass + 1))

# The whole set, check only, with both vocabularies of bench/grammar.sh.
for v in llama-spm gpt-2; do
    "$bin" grammar-bench -m "$shared/vocab/ggml-vocab-$v.gguf" --schemas "$tmp/set.jsonl" \
        --check-only >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "schema set ($v)"; }
    grep -q "^schemas: $n (0 do not compile); instances: [0-9]* (0 rejected)" "$tmp/out" ||
        fail "schema set ($v): $(head -1 "$tmp/out")"
    grep -q "^check the token " "$tmp/out" || fail "no check row ($v)"
done
pass=$((pass + 1))

# The whole set with masks (a small vocabulary keeps it quick): every row is printed.
"$bin" grammar-bench -m "$shared/models/stories260K.gguf" --schemas "$tmp/set.jsonl" \
    >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "schema set with masks"; }
for row in "per schema" "check the token" "full mask" "mask with the cache" "  first instance" \
    "  later instances" "mask cache hits:" "slowest to compile:" "slowest full mask:"; do
    grep -q "^$row" "$tmp/out" || fail "no '$row' row: $(cat "$tmp/out")"
done
pass=$((pass + 1))

# Failures are named and fail the run: an unsupported keyword, an instance the schema rejects.
{
    echo '{"name": "fine", "schema": {"type": "integer"}, "instances": ["42"]}'
    echo '{"name": "not-compiling", "schema": {"type": "string", "format": "hostname"},' \
        '"instances": ["\"a\""]}'
    echo '{"name": "wrong-instance", "schema": {"enum": ["low", "high"]},' \
        '"instances": ["\"high\"", "\"medium\""]}'
} >"$tmp/bad.jsonl"
set +e
"$bin" grammar-bench -m "$shared/models/stories260K.gguf" --schemas "$tmp/bad.jsonl" \
    >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[[ $rc == 1 ]] || fail "failures: rc $rc"
grep -q "^schema not-compiling: does not compile: .*hostname" "$tmp/err" ||
    fail "$(cat "$tmp/err")"
grep -q "^schema wrong-instance, instance 1: rejected at byte 1 " "$tmp/err" ||
    fail "$(cat "$tmp/err")"
grep -q "^schemas: 3 (1 do not compile); instances: 4 (1 rejected)" "$tmp/out" ||
    fail "$(cat "$tmp/out")"
pass=$((pass + 1))

# The text mode: JSON documents through the JSON object grammar.
printf '{"name": "Zoë", "tags": ["a", "b"], "n": -1.5e3}' >"$tmp/doc.json"
"$bin" grammar-bench -m "$shared/vocab/ggml-vocab-gpt-2.gguf" "$tmp/doc.json" >"$tmp/out"
grep -q "doc.json: [0-9]* tokens, [0-9]* taken by the grammar$" "$tmp/out" ||
    fail "$(cat "$tmp/out")"
grep -q "^mask with the cache " "$tmp/out" || fail "text mode rows: $(cat "$tmp/out")"
set +e
"$bin" grammar-bench -m "$shared/models/stories260K.gguf" --schemas "$tmp/set.jsonl" \
    "$tmp/doc.json" 2>/dev/null
rc=$?
set -e
[[ $rc == 2 ]] || fail "--schemas with text files: rc $rc"
"$bin" grammar-bench --help | grep -q -- "--schemas FILE" || fail "--help does not say --schemas"
pass=$((pass + 1))

echo "ok: $pass checks"
