"""Batch jobs against online serving, on one server build and model, in one run:

1. throughput: N chat requests over G shared system prompts (~1,000 tokens each, Q questions
   each, lines shuffled), run (a) online by C concurrent clients in file order, and (b) as one
   batch through /v1/batches; output tokens per second of each, and their ratio;
2. online TTFT while a large batch runs: short streamed requests, one every INTERVAL seconds,
   on an idle server and then during the batch; TTFT p50/p99 of each, and their ratio.

Each phase runs on a fresh server (an empty prefix cache). Progress goes to stderr.

Usage: python3 batch.py SPINDLE_BINARY MODEL.gguf [--requests N] [--groups G] [--clients C]
       [--gen-len T] [--threads N] [--ttft-requests K] [--skip-throughput] [--skip-ttft]
       [--server-arg ARG ...]"""
import argparse
import http.client
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

WORDS = ("time story girl boy dog cat house tree river sun moon star friend happy sad big small "
         "red blue green play run jump walk talk look find give take make good bad old new day "
         "night morning school park garden ball book toy cake apple water fire wind rain snow "
         "mountain sea ship car bird fish flower king queen castle dragon magic forest").split()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Server:
    def __init__(self, binary, model, data, threads, extra=()):
        args = [binary, "serve", "-m", model, "--port", "0", "--data-dir", data, *extra]
        if threads:
            args += ["-t", str(threads)]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.proc.stderr.readline())
            if m:
                self.port = int(m.group(1))
                threading.Thread(target=self.drain, daemon=True).start()
                return
        raise RuntimeError("the server did not start")

    def drain(self):
        for _ in self.proc.stderr:
            pass

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        if isinstance(body, dict):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def metric(self, name):
        status, data = self.request("GET", "/metrics")
        for line in data.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def make_lines(n, groups, gen_len, seed):
    rng = random.Random(seed)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(760)) for _ in range(groups)]
    lines = []
    for i in range(n):
        g = i % groups
        body = {"messages": [{"role": "system", "content": f"Prompt {g}. " + prompts[g]},
                             {"role": "user", "content": f"Question {i}: what happens to the "
                              f"{rng.choice(WORDS)} and the {rng.choice(WORDS)}?"}],
                "max_tokens": gen_len, "ignore_eos": True, "temperature": 0}
        lines.append({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": body})
    rng.shuffle(lines)
    return lines


def run_online(srv, lines, clients):
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "tokens": 0}

    def worker():
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(lines):
                return
            status, data = srv.request("POST", "/v1/chat/completions", lines[i]["body"])
            assert status == 200, data
            with lock:
                state["done"] += 1
                state["tokens"] += json.loads(data)["usage"]["completion_tokens"]
                if state["done"] % 32 == 0:
                    log(f"  online: {state['done']}/{len(lines)}")

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["tokens"], time.time() - t0


def upload(srv, lines):
    boundary = uuid.uuid4().hex
    content = "".join(json.dumps(l) + "\n" for l in lines).encode()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"in.jsonl\"\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()
    status, data = srv.request("POST", "/v1/files", body,
                               {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, data
    return json.loads(data)["id"]


def start_batch(srv, lines):
    fid = upload(srv, lines)
    status, data = srv.request("POST", "/v1/batches", {
        "input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert status == 200, data
    return json.loads(data)["id"]


def batch_state(srv, bid):
    status, data = srv.request("GET", f"/v1/batches/{bid}")
    assert status == 200, data
    return json.loads(data)


def run_batch(srv, lines):
    t0 = time.time()
    bid = start_batch(srv, lines)
    last = -1
    while True:
        b = batch_state(srv, bid)
        done = b["request_counts"]["completed"] + b["request_counts"]["failed"]
        if done // 32 != last // 32:
            log(f"  batch: {done}/{len(lines)}")
        last = done
        if b["status"] in ("completed", "failed", "cancelled", "expired"):
            break
        time.sleep(0.1)
    wall = time.time() - t0  # (from the upload to the poll that saw it complete: +0.1 s)
    assert b["status"] == "completed" and b["request_counts"]["failed"] == 0, b
    status, data = srv.request("GET", f"/v1/files/{b['output_file_id']}/content")
    tokens = sum(json.loads(l)["response"]["body"]["usage"]["completion_tokens"]
                 for l in data.decode().splitlines())
    return tokens, wall, bid


def ttft_once(srv, seed):
    rng = random.Random(seed)
    body = {"messages": [{"role": "user", "content": " ".join(rng.choice(WORDS)
                                                               for _ in range(60))}],
            "max_tokens": 8, "stream": True, "temperature": 0}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
    t0 = time.time()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    ttft = None
    for line in r:
        if line.startswith(b"data: ") and b"content" in line and b'"content":""' not in line:
            ttft = time.time() - t0
            break
    r.read()
    conn.close()
    return ttft


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


def run_ttft(srv, k, interval, seed):
    out = []
    for i in range(k):
        out.append(ttft_once(srv, seed + i))
        time.sleep(interval)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--gen-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ttft-requests", type=int, default=60)
    ap.add_argument("--ttft-interval", type=float, default=0.3)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-ttft", action="store_true")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="an argument for every `spindle serve` (repeat for more)")
    a = ap.parse_args()
    lines = make_lines(a.requests, a.groups, a.gen_len, 1)
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        if not a.skip_throughput:
            log(f"online: {a.requests} requests, {a.clients} clients, file order")
            srv = Server(a.binary, a.model, f"{tmp}/d1", a.threads, a.server_arg)
            tok_on, t_on = run_online(srv, lines, a.clients)
            pre_on = srv.metric("spindle_prompt_tokens_computed_total")
            srv.stop()
            log(f"batch: the same {a.requests} requests through /v1/batches")
            srv = Server(a.binary, a.model, f"{tmp}/d2", a.threads, a.server_arg)
            tok_b, t_b, _ = run_batch(srv, lines)
            pre_b = srv.metric("spindle_prompt_tokens_computed_total")
            srv.stop()
            res.update(online_tok_s=tok_on / t_on, batch_tok_s=tok_b / t_b,
                       online_s=t_on, batch_s=t_b, online_prefill_tokens=pre_on,
                       batch_prefill_tokens=pre_b)
            print(f"throughput: online {tok_on / t_on:.1f} output tok/s ({t_on:.1f} s, "
                  f"{pre_on:.0f} prompt tokens computed), batch {tok_b / t_b:.1f} tok/s "
                  f"({t_b:.1f} s, {pre_b:.0f} prompt tokens computed): {t_on / t_b:.2f}x")
        if a.skip_ttft:
            print(json.dumps(res))
            return
        log(f"TTFT: {a.ttft_requests} online requests on an idle server, then during a batch")
        srv = Server(a.binary, a.model, f"{tmp}/d3", a.threads, a.server_arg)
        idle = run_ttft(srv, a.ttft_requests, a.ttft_interval, 100)
        bid = start_batch(srv, lines)
        while batch_state(srv, bid)["request_counts"]["completed"] < 1:
            time.sleep(0.1)  # the batch is running at full tilt
        busy = run_ttft(srv, a.ttft_requests, a.ttft_interval, 1000)  # (other prompts)
        b = batch_state(srv, bid)
        srv.stop()
        print(f"online TTFT idle: p50 {pct(idle, .5) * 1e3:.0f} ms, p99 {pct(idle, .99) * 1e3:.0f} "
              f"ms; during the batch ({b['request_counts']['completed']} lines done by then): p50 "
              f"{pct(busy, .5) * 1e3:.0f} ms, p99 {pct(busy, .99) * 1e3:.0f} ms: p99 "
              f"{pct(busy, .99) / pct(idle, .99):.2f}x")
        res.update(ttft_idle_p50=pct(idle, .5), ttft_idle_p99=pct(idle, .99),
                   ttft_busy_p50=pct(busy, .5), ttft_busy_p99=pct(busy, .99))
        print(json.dumps(res))


if __name__ == "__main__":
    main()
