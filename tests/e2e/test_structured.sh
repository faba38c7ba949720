#!/usr/bin/env bash
# Structured output and tool calls on random-weight models, checked against the schemas by
# Debian's python3-jsonschema (tests/e2e/structured.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec /usr/bin/python3 "$here/structured.py" "${SP_BUILD_DIR:?}/spindle" "$work" \
    "${SP_SHARED_DIR:?}/models/stories260K.gguf" "$SP_SHARED_DIR/templates"
