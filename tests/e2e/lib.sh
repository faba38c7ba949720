# Shared by the end-to-end scripts (sourced, not run).

# wait_port LOG PID: waits for the "listening on" line that `spindle serve` (or the load
# generator's stub) writes to LOG and sets $port; fails, printing LOG, if PID exits first or no
# such line comes within 30 s.
wait_port() {
    local log=$1 pid=$2
    port=
    for _ in $(seq 300); do
        port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" 2>/dev/null || true)
        [[ -n "$port" ]] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "no 'listening on' line" >&2
    cat "$log" >&2
    return 1
}

# fail MESSAGE...: says what failed and ends the test.
fail() { echo "FAIL: $*" >&2; exit 1; }
