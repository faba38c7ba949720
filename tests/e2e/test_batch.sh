#!/usr/bin/env bash
# The Files and Batch APIs through a real server (tests/e2e/batch.py): every endpoint, bad
# uploads, validation, cancellation, kill -9 and resume, deleted inputs, damaged databases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec /usr/bin/python3 "$here/batch.py" "${SP_BUILD_DIR:?}/spindle" "$work" \
    "${SP_SHARED_DIR:?}/models/stories260K.gguf"
