#!/usr/bin/env bash
# Runs the OpenAI SDK suite (tests/e2e/node, `node --test`) against a real `spindle serve`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bin=${SP_BUILD_DIR:?}/spindle
shared=${SP_SHARED_DIR:?}
if [[ ! -d "$here/node/node_modules/openai" ]]; then
    echo "the OpenAI SDK is not installed: run scripts/setup-debian.sh (npm ci in tests/e2e/node)" >&2
    exit 1
fi
log=$(mktemp)
data=$(mktemp -d)
key=test-key-$$
"$bin" serve -m "$shared/models/stories260K.gguf" --port 0 --api-key "$key" --ctx 512 \
    --spec fixed:8 --data-dir "$data" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$log" "$data"' EXIT
wait_port "$log" "$pid"
cd "$here/node"
SPINDLE_URL="http://127.0.0.1:$port" SPINDLE_KEY="$key" node --test
kill -TERM $pid
wait $pid
