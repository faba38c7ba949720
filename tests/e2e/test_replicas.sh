#!/usr/bin/env bash
# Three replicas behind nginx with deploy/nginx/spindle.conf (tests/e2e/replicas.py says what is
# checked). nginx comes with scripts/setup-debian.sh; where it cannot be installed the test says
# so and is skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${SP_BUILD_DIR:?}/spindle
if ! command -v nginx >/dev/null; then
    nginx=$(command -v /usr/sbin/nginx || true)
    if [[ -z $nginx ]]; then
        echo "SKIPPED: nginx is not installed (scripts/setup-debian.sh installs it)"
        exit 0
    fi
    export PATH="/usr/sbin:$PATH"
fi
python3 "$here/replicas.py" "$bin" "${SP_SHARED_DIR:?}/models/stories260K.gguf" \
    "$here/../../deploy/nginx/spindle.conf"
