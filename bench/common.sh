# Shared by the bench/*.sh scripts (sourced, not run): the build folder, the model, a server.

build=${BUILD_DIR:-build}
bin=$build/spindle
bench=$build/spindle-bench

# bench_model FILE PRESET [TYPE]: generates a random-weight model of that preset and weight type
# (default q8_0) if FILE is absent.
bench_model() {
    if [[ ! -f "$1" ]]; then
        mkdir -p "$(dirname "$1")"
        "$bin" mkmodel -o "$1" --preset "$2" --type "${3:-q8_0}"
    fi
}

# start_server LOG MODEL [serve flags...]: starts `spindle serve` on a free port; sets
# server_pid and server_port.
start_server() {
    local log=$1
    shift
    "$bin" serve --port 0 -m "$@" 2>"$log" &
    server_pid=$!
    server_port=""
    for _ in $(seq 300); do
        server_port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n "$server_port" ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$log" >&2
    return 1
}

# stop_server: SIGTERM and wait (the server exits 0 after a graceful shutdown).
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
}
