#!/usr/bin/env bash
# Constrained decoding's cost in the engine: output tokens/s of the same requests with and
# without the JSON object grammar (response_format json_object), at 1 and 32 streams, in one
# run. With random weights the model's own choice breaks the grammar at most tokens, so nearly
# every token takes the allowed-token mask (from the cache of grammar states or a trie walk):
# the worst case for constraints.
#
# Usage: [BUILD_DIR=build] [THREADS=N] bench/structured.sh [MODEL.gguf]
# (default model: a random-weight 1.1B Q8_0 generated into bench/models/ if absent)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
model=${1:-bench/models/1.1b-q8_0.gguf}
[[ $# -ge 1 ]] || bench_model "$model" 1.1b q8_0
threads=${THREADS:-$(nproc)}
for g in none json; do
    args=()
    [[ $g == none ]] || args=(--grammar "$g")
    echo "## grammar: $g"
    "$bin" bench -m "$model" --requests 32 --prompt-len 32 --gen-len 64 --concurrency 1 32 \
        -t "$threads" "${args[@]}" | tail -3
    echo
done
