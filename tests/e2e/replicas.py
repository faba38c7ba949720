"""Three `spindle serve` replicas behind nginx with deploy/nginx/spindle.conf (its servers pointed
at them), on loopback:

1. a multi-turn session workload (the session in the X-Session-Id header) through nginx gets
   as many cached prompt tokens per turn as on a single server (>= 90%): each session's turns
   reach the replica where its KV cache is pinned; the same workload without the header
   (least_conn alone) is measured and printed, not asserted;
2. a replica killed (SIGKILL) in the middle of a long streamed request: that request ends with an
   error, requests sent afterwards all succeed on the other two, and requests already running
   on them are undisturbed;
3. the replica restarted on its port rejoins: nginx sends it requests again.

Usage: python3 replicas.py SPINDLE_BINARY MODEL.gguf NGINX_CONF_TEMPLATE"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN, MODEL, TEMPLATE = sys.argv[1:4]
WORK = tempfile.mkdtemp(prefix="spindle-replicas-")
HANG_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, port):
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [BIN, "serve", "-m", MODEL, "--port", str(self.port), "-t", "1", "--max-seqs", "8",
             "--ctx", "4096",  # (long streams: one is still running when its replica dies)
             "--data-dir", f"{WORK}/data-{self.port}", "--session-ttl", "60"],
            stderr=subprocess.DEVNULL)
        deadline = time.time() + HANG_S
        while time.time() < deadline:
            try:
                if request(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"replica on {self.port} did not start")

    def metric(self, name):
        _, text = request(self.port, "GET", "/metrics")
        m = re.search(rf"^{re.escape(name)} (\S+)$", text.decode(), re.M)
        return float(m.group(1))


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_S)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def chat(port, messages, session=None, max_tokens=8):
    headers = {"X-Session-Id": session} if session else {}
    status, data = request(port, "POST", "/v1/chat/completions",
                           {"messages": messages, "max_tokens": max_tokens, "temperature": 0},
                           headers)
    assert status == 200, (status, data[:300])
    return json.loads(data)


def workload(port, tag, use_header, n_sessions=7, n_turns=4):
    """Multi-turn sessions, turns interleaved across sessions (7: not a multiple of the
    replicas, so that rotating requests do not keep a session on one replica by chance); the
    cached prompt tokens of the turns after the first, summed."""
    history = {s: [{"role": "system", "content": f"You are story teller {tag} {s}. " * 8}]
               for s in range(n_sessions)}
    cached = 0
    for turn in range(n_turns):
        for s in range(n_sessions):
            history[s].append({"role": "user", "content": f"Tell me part {turn} of story {s}."})
            out = chat(port, history[s], f"{tag}-{s}" if use_header else None)
            history[s].append(out["choices"][0]["message"])
            if turn > 0:
                cached += out["usage"]["prompt_tokens_details"]["cached_tokens"]
    return cached


def start_nginx(ports, listen):
    conf = open(TEMPLATE).read()
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n" for p in ports)
    conf = re.sub(r"(?:    server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, conf)
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    os.makedirs(f"{WORK}/nginx/logs", exist_ok=True)
    with open(f"{WORK}/nginx/spindle.conf", "w") as f:
        f.write(conf)
    with open(f"{WORK}/nginx/nginx.conf", "w") as f:
        f.write(f"worker_processes 1;\ndaemon off;\npid {WORK}/nginx/nginx.pid;\n"
                f"error_log {WORK}/nginx/logs/error.log;\nevents {{}}\nhttp {{\n"
                f"    access_log off;\n    client_body_temp_path {WORK}/nginx/body;\n"
                f"    proxy_temp_path {WORK}/nginx/proxy;\n"
                f"    include {WORK}/nginx/spindle.conf;\n}}\n")
    proc = subprocess.Popen(["nginx", "-c", f"{WORK}/nginx/nginx.conf", "-p", f"{WORK}/nginx"],
                            stderr=subprocess.PIPE)
    deadline = time.time() + HANG_S
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start: " + proc.stderr.read().decode())


def main():
    replicas = [Replica(free_port()) for _ in range(3)]
    single = Replica(free_port())
    nginx = None
    try:
        for r in replicas + [single]:
            r.start()
        listen = free_port()
        nginx = start_nginx([r.port for r in replicas], listen)

        # 1. Sessions: through nginx with the header, as a single server; without, less.
        base = workload(single.port, "a", True)
        routed = workload(listen, "a", True)
        spread = workload(listen, "b", False)
        print(f"cached prompt tokens after the first turn: single server {base}, "
              f"3 replicas with session affinity {routed} ({routed / base:.0%}), "
              f"least_conn only {spread} ({spread / base:.0%})")
        assert base > 0 and routed >= 0.9 * base, (base, routed)

        # 2. A long stream on one replica; that replica killed in the middle of it.
        victim = replicas[0]
        errors = []

        def long_stream():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=HANG_S)
                conn.request("POST", "/v1/completions", json.dumps(
                    {"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True,
                     "stream": True}), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                errors.append((resp.status, "[DONE]" in body))
            except (OSError, http.client.HTTPException) as e:
                errors.append(("closed", type(e).__name__))

        # Every replica idle (a request can count as running a moment after its answer), then
        # streams sent until one runs on the victim (least_conn spreads them).
        deadline = time.time() + HANG_S
        while any(r.metric("spindle_num_requests_running") for r in replicas):
            assert time.time() < deadline, "the replicas did not go idle"
            time.sleep(0.05)
        threads = []
        while not threads or victim.metric("spindle_num_requests_running") < 1:
            assert time.time() < deadline, "no stream reached the victim"
            t = threading.Thread(target=long_stream)
            t.start()
            threads.append(t)
            time.sleep(0.2)
        others_before = sum(r.metric("spindle_num_requests_running") for r in replicas[1:])
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        for t in threads:
            t.join(HANG_S)
        # The victim's stream failed (a cut stream without [DONE], or a 502); the others' ended.
        failed = [e for e in errors if e[0] != 200 or not e[1]]
        assert len(failed) >= 1, errors
        assert len(errors) - len(failed) >= others_before, (errors, others_before)
        # Every request from now on succeeds on the two left, sessions or not.
        for i in range(12):
            chat(listen, [{"role": "user", "content": f"after {i}"}],
                 f"after-{i}" if i % 2 else None)
        for r in replicas[1:]:
            assert r.proc.poll() is None

        # 3. The victim restarted on its port rejoins.
        victim.start()
        deadline = time.time() + HANG_S
        i = 0
        while victim.metric("spindle_http_requests_total") < 3:  # health, metrics, then ours
            assert time.time() < deadline, "the restarted replica got no requests"
            chat(listen, [{"role": "user", "content": f"rejoin {i}"}], f"rejoin-{i}")
            i += 1
        print(f"replica killed: {len(failed)} request(s) failed with it, 12 after it all "
              f"served; restarted, it served again after {i} request(s)")
    finally:
        if nginx:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        for r in replicas + [single]:
            if r.proc and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
                r.proc.wait(30)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    # A test runner that gives up on the test (SIGTERM) still gets nginx and the replicas
    # stopped: the signal becomes an exception, and main's cleanup runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
