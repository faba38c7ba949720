#!/usr/bin/env bash
# Soak: 64 streaming clients for SOAK_SECONDS (60) against `spindle serve` with a KV pool small
# enough to preempt (tests/e2e/soak.py says what is checked); then a graceful stop must exit 0
# (under AddressSanitizer, a leak at exit fails it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bin=${SP_BUILD_DIR:?}/spindle
shared=${SP_SHARED_DIR:?}
seconds=${SOAK_SECONDS:-60}
log=$(mktemp)
# A small quarantine keeps an AddressSanitizer build's memory comparable run to run.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=16"
"$bin" serve -m "$shared/models/stories260K.gguf" --port 0 --ctx 256 --kv-tokens 768 \
    --max-seqs 16 --admission aggressive --max-conns 256 -t 1 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
wait_port "$log" "$pid"
if ! python3 "$here/soak.py" --port "$port" --pid "$pid" --seconds "$seconds"; then
    tail -50 "$log" >&2
    exit 1
fi
kill -TERM $pid
if ! wait $pid; then
    echo "the server did not exit cleanly" >&2
    tail -80 "$log" >&2
    exit 1
fi
trap 'rm -f "$log"' EXIT
echo "soak: passed"
