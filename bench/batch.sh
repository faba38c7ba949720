#!/usr/bin/env bash
# Batch jobs against online serving (bench/batch.py), on the 125M and 1.1B Q8_0 random-weight
# models: 512 chat requests over 16 shared ~1,000-token system prompts (32 questions each,
# lines shuffled, 64 output tokens each), online by 32 concurrent clients in file order and as
# one batch through /v1/batches; then the TTFT of short online requests on an idle server and
# while a batch runs.
#
# Usage: [BUILD_DIR=build] [THREADS=N] bench/batch.sh [MODEL.gguf...]
# (default: bench/models/125m-q8_0.gguf and bench/models/1.1b-q8_0.gguf, generated if absent)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
models=("$@")
if ((${#models[@]} == 0)); then
    bench_model bench/models/125m-q8_0.gguf 125m q8_0
    bench_model bench/models/1.1b-q8_0.gguf 1.1b q8_0
    models=(bench/models/125m-q8_0.gguf bench/models/1.1b-q8_0.gguf)
fi
for m in "${models[@]}"; do
    echo "## $m"
    /usr/bin/python3 bench/batch.py "$bin" "$m" --requests 512 --groups 16 --clients 32 \
        --gen-len 64 ${THREADS:+--threads "$THREADS"}
    echo
done
