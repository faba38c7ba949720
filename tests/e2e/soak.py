#!/usr/bin/env python3
"""Soak test of a running `spindle serve` (loopback only, bounded in time).

Many streaming clients send greedy requests for a while; some leave mid-stream, some leave
while their request still waits in the queue. Asserts: no answer other than 200, every stream
read to its end closes with a finish_reason and [DONE] (no error event), the same request always
gets the same text (greedy outputs do not depend on what else runs, on preemption or on
cancellations around it), the KV pool preempted at least once, and afterwards nothing is
running, waiting or holding KV blocks, and the server's memory has not grown without bound.
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time

PROMPTS = [
    "Once upon a time",
    "The little dog",
    "Lily and Ben went to the park",
    "One day, a bird",
    "Tom had a red ball",
    "The sun was hot and",
    "Mom said",
    "There was a big tree",
]


def metrics(host, port):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.texts = {}  # (prompt, max_tokens, n, chat) -> texts of the first complete answer
        self.counts = {"complete": 0, "left_mid_stream": 0, "left_queued": 0}
        self.failures = []

    def fail(self, msg):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(msg)

    def count(self, what):
        with self.lock:
            self.counts[what] += 1

    def check_texts(self, key, texts):
        with self.lock:
            first = self.texts.setdefault(key, texts)
            if first != texts:
                self.failures.append(f"{key}: {texts!r} differs from {first!r}")


def one_request(host, port, rng, stats):
    chat = rng.random() < 0.3
    prompt = rng.choice(PROMPTS)
    max_tokens = rng.choice([8, 24, 48])
    n = 2 if rng.random() < 0.15 else 1
    body = {"max_tokens": max_tokens, "temperature": 0, "stream": True, "n": n}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        path = "/v1/completions"
    action = rng.random()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        if action < 0.05:
            # Leave at once: the request is most likely still waiting in the queue.
            conn.sock.close()
            stats.count("left_queued")
            return
        resp = conn.getresponse()
        if resp.status != 200:
            stats.fail(f"status {resp.status}: {resp.read()[:300]!r}")
            return
        leave_after = rng.randint(1, 4) if action < 0.25 else None
        texts = [""] * n
        finish = [None] * n
        done = error = False
        events = 0
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if done:
                stats.fail("an event after [DONE]")
                return
            if data == "[DONE]":
                done = True
                continue
            ev = json.loads(data)
            if "error" in ev:
                error = True
                continue
            for ch in ev.get("choices", []):
                i = ch["index"]
                piece = ch.get("text") if not chat else ch.get("delta", {}).get("content")
                texts[i] += piece or ""
                if ch.get("finish_reason"):
                    if finish[i]:
                        stats.fail("two finish reasons for one choice")
                    finish[i] = ch["finish_reason"]
            events += 1
            if leave_after is not None and events >= leave_after:
                conn.sock.close()
                stats.count("left_mid_stream")
                return
        if not done or error or None in finish:
            stats.fail(f"stream ended improperly: done={done} error={error} finish={finish}")
            return
        stats.count("complete")
        stats.check_texts((prompt, max_tokens, n, chat), tuple(texts))
    except (ConnectionError, OSError) as e:
        stats.fail(f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def client(host, port, seed, deadline, stats):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        one_request(host, port, rng, stats)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-rss-growth-mib", type=float, default=64)
    a = ap.parse_args()
    host = "127.0.0.1"
    stats = Stats()
    start = time.monotonic()
    deadline = start + a.seconds
    threads = [threading.Thread(target=client, args=(host, a.port, 1000 + i, deadline, stats))
               for i in range(a.clients)]
    for t in threads:
        t.start()
    # The memory the server settles at once the load runs, then at the end.
    time.sleep(min(10, a.seconds / 4))
    rss_warm = rss_kib(a.pid)
    for t in threads:
        t.join()
    settle = time.monotonic() + 60
    while True:
        m = metrics(host, a.port)
        idle = (m.get("spindle_num_requests_running") == 0 and
                m.get("spindle_num_requests_waiting") == 0 and
                m.get("spindle_kv_cache_blocks_used") == 0)
        if idle or time.monotonic() > settle:
            break
        time.sleep(0.2)
    rss_end = rss_kib(a.pid)
    growth = (rss_end - rss_warm) / 1024
    print(f"soak: {time.monotonic() - start:.0f} s, {stats.counts}, "
          f"{len(stats.texts)} distinct requests, "
          f"preemptions {m.get('spindle_num_preemptions_total')}, "
          f"RSS {rss_warm // 1024} -> {rss_end // 1024} MiB")
    if not idle:
        stats.fail(f"not idle afterwards: {m.get('spindle_num_requests_running')} running, "
                   f"{m.get('spindle_num_requests_waiting')} waiting, "
                   f"{m.get('spindle_kv_cache_blocks_used')} KV blocks used")
    if not m.get("spindle_num_preemptions_total"):
        stats.fail("no preemption: the KV pool was meant to be too small for the load")
    if stats.counts["complete"] < a.clients:
        stats.fail(f"only {stats.counts['complete']} streams completed")
    if growth > a.max_rss_growth_mib:
        stats.fail(f"RSS grew by {growth:.0f} MiB during the run")
    for f in stats.failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
