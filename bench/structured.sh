#!/usr/bin/env bash
# Constrained decoding's cost in the engine: output tokens/s of the same requests with and
# without a grammar, at 1 and 32 streams, in one run. Two grammars:
# - json: the JSON object grammar (response_format json_object). With random weights the
#   model's own choice breaks the grammar at most tokens, so nearly every token takes the
#   allowed-token mask: the worst case for constraints; but the grammar also ends requests
#   early (the model closes the object), so its outputs are shorter than unconstrained ones.
# - records: a list of at least 40 JSON records (an extraction task's output), longer than the
#   generation length, so every request generates exactly as many tokens as without a grammar:
#   the ratio is the constraint's cost alone.
#
# Usage: [BUILD_DIR=build] [THREADS=N] bench/structured.sh [MODEL.gguf]
# (default model: a random-weight 1.1B Q8_0 generated into bench/models/ if absent)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-bench/models/1.1b-q8_0.gguf}
[[ $# -ge 1 ]] || bench_model "$model" 1.1b q8_0
threads=${THREADS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/records.gbnf" <<'GBNF'
root   ::= "[" ws record ("," ws record){39,} "]" ws
record ::= "{" ws "\"name\":" ws string "," ws "\"age\":" ws number "," ws "\"email\":" ws string "," ws "\"tags\":" ws "[" ws (string ("," ws string)*)? "]" ws "}" ws
string ::= "\"" char* "\"" ws
char   ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
GBNF
# One stream: 8 requests; 32 streams: 64 requests (the batch kept full).
for level in "1 8" "32 64"; do
    set -- $level
    for g in none json records; do
        args=()
        [[ $g == none ]] || args=(--grammar "$g")
        [[ $g == records ]] && args=(--grammar "$work/records.gbnf")
        echo "## streams $1, grammar: $g"
        "$bin" bench -m "$model" --requests "$2" --prompt-len 32 --gen-len 64 --concurrency "$1" \
            -t "$threads" "${args[@]}" | tail -2
        echo
    done
done
