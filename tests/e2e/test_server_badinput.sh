#!/usr/bin/env bash
# Bad input and misbehaving clients against a real server (tests/e2e/badinput.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Debian's interpreter: it has python3-prometheus-client (setup-debian.sh).
exec /usr/bin/python3 "$here/badinput.py" "${SP_BUILD_DIR:?}/spindle" "${SP_SHARED_DIR:?}/models/stories260K.gguf"
