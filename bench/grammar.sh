#!/usr/bin/env bash
# Constrained decoding's cost per token: a corpus of JSON documents (records with names, emails,
# numbers, booleans, nested objects and arrays; half compact, half indented), tokenized by the
# 32k Llama SentencePiece vocabulary and the 50k GPT-2 byte-level vocabulary, walked through the
# JSON object grammar (response_format json_object) by `spindle grammar-bench`: per token, the
# check of the token, the full mask of allowed tokens, and the mask through the cache of
# grammar states the engine keeps; and the grammar's compile time. Then the same over the schema
# set of bench/schemas/gen.py (171 JSON Schemas of structured outputs and tool arguments, each
# with 2-3 instances): each schema compiled as the server compiles response_format json_schema
# and its instances walked through its grammar (`spindle grammar-bench --schemas`), with both
# vocabularies.
#
# Usage: [BUILD_DIR=build] [SHARED=../shared] bench/grammar.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BUILD_DIR:-build}/spindle
shared=${SHARED:-../shared}
[[ -x $bin ]] || { echo "build first: make" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
/usr/bin/python3 - "$out" <<'PY'
import json, random, sys
random.seed(1)
words = ("the quick brown fox jumps over lazy dog data model server token cache batch request "
         "stream value").split()
def record(i):
    return {"id": i, "name": " ".join(random.choice(words) for _ in range(3)).title(),
            "email": f"user{i}@example.com", "active": random.random() < 0.5,
            "score": round(random.uniform(-100, 100), 3), "tags": random.sample(words, 3),
            "address": {"street": f"{random.randint(1, 999)} {random.choice(words).title()} St",
                        "city": random.choice(words).title(),
                        "zip": f"{random.randint(10000, 99999)}"},
            "notes": " ".join(random.choice(words) for _ in range(12)) + "."}
for k in range(8):
    doc = {"records": [record(10 * k + i) for i in range(4)], "page": k, "total": 80}
    with open(f"{sys.argv[1]}/doc{k}.json", "w") as f:
        f.write(json.dumps(doc, indent=2) if k % 2 else json.dumps(doc))
PY
for v in llama-spm gpt-2; do
    echo "## $v"
    "$bin" grammar-bench -m "$shared/vocab/ggml-vocab-$v.gguf" "$out"/doc*.json | tail -7
    echo
done
/usr/bin/python3 bench/schemas/gen.py --out "$out/schemas.jsonl"
for v in llama-spm gpt-2; do
    echo "## $v, schema set"
    "$bin" grammar-bench -m "$shared/vocab/ggml-vocab-$v.gguf" --schemas "$out/schemas.jsonl"
    echo
done
