#!/usr/bin/env bash
# Installs the Debian 12 packages Spindle needs to build and test. Idempotent: packages already
# present are skipped, and apt-get runs only when something is missing.
set -euo pipefail

packages=(
    build-essential cmake pkg-config git
    clang libclang-rt-14-dev   # libFuzzer and sanitizer runtimes
    llvm-14                    # llvm-symbolizer: source lines in sanitizer and fuzzer reports
    libcmocka-dev              # unit-test framework
    libjansson-dev             # JSON
    libpcre2-dev               # pre-tokenizer regular expressions
    libsqlite3-dev             # batch jobs' durable state
    python3 python3-prometheus-client  # /metrics parsing in tests
    python3-jsonschema         # structured outputs checked against their schemas in tests
    nodejs npm                 # end-to-end tests with the official OpenAI SDK
    nginx                      # replicas behind deploy/nginx/spindle.conf in an e2e test
    curl
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# node/npm may come from elsewhere than Debian's packages; accept them if on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
    filtered=()
    for p in "${missing[@]}"; do
        [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p")
    done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [[ $(id -u) != 0 ]]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The OpenAI SDK for the end-to-end tests, pinned by tests/e2e/node/package-lock.json.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/node"
if [[ ! -d "$node_dir/node_modules/openai" ]]; then
    echo "setup: installing the OpenAI SDK for the end-to-end tests" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
