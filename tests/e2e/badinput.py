"""Bad input and bad clients against a real `spindle serve`: each gets the documented error,
the server answers the next request correctly, and /metrics (parsed by the Prometheus client
library) shows the KV cache back at zero blocks in use afterwards.

Nothing here assumes how fast the server is: a test that needs the server in some state (a
request queued, prefilling, streaming) waits for that state to show, and every wait has a
deadline that only a hung server misses.

Usage: python3 badinput.py SPINDLE_BINARY MODEL.gguf"""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

BIN, MODEL = sys.argv[1], sys.argv[2]
PORT = None
PROC = None
HANG_S = 60  # how long any wait may take before the server counts as hung


def start_server():
    global PORT, PROC
    PROC = subprocess.Popen(
        [BIN, "serve", "-m", MODEL, "--port", "0", "--max-seqs", "1", "--max-batch-tokens", "16",
         "--ctx", "2048", "--grace", "2"],
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = PROC.stderr.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            PORT = int(m.group(1))
            return
    raise RuntimeError("the server did not start")


def request(method, path, body=None, headers=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=HANG_S)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), payload


def metrics():
    status, _, text = request("GET", "/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            key = s.name + ("" if not s.labels else json.dumps(s.labels, sort_keys=True))
            out[key] = s.value
    return out


def wait_metrics(what, ok, timeout=HANG_S):
    """Polls /metrics until ok(metrics) holds; returns those metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics()
        if ok(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s, still not {what}: {m}")
        time.sleep(0.01)


def wait_idle():
    return wait_metrics("idle", lambda m: m["spindle_kv_cache_blocks_used"] == 0
                        and m["spindle_num_requests_running"] == 0
                        and m["spindle_num_requests_waiting"] == 0)


ABORT = 'spindle_request_success_total{"finished_reason": "abort"}'


def wait_aborts(at_least):
    """Waits until the server has counted at_least aborted requests (the API records a request
    when it has processed the engine's final event, a moment after the engine is idle)."""
    return wait_metrics(f"{at_least} aborted requests", lambda m: m[ABORT] >= at_least)


def recv_at_least(sock, n):
    """Reads until n bytes have come (or the server closed); returns them."""
    got = b""
    while len(got) < n:
        b = sock.recv(4096)
        if not b:
            break
        got += b
    return got


def raw_exchange(data, read_until_close=True):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=HANG_S)
    s.sendall(data)
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
    except socket.timeout:
        pass
    s.close()
    return b"".join(chunks)


class BadInput(unittest.TestCase):
    def tearDown(self):
        # The server keeps serving: a normal request works after every bad one.
        status, _, body = request("POST", "/v1/completions",
                                  {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["choices"][0]["text"].startswith(", there was"))
        wait_idle()

    def assertError(self, status, expect_status, body, param=None, code=None):
        self.assertEqual(status, expect_status, body)
        err = json.loads(body)["error"]
        self.assertIsInstance(err["message"], str)
        self.assertTrue(len(err["message"]) > 5)
        self.assertIn("type", err)
        if param is not None:
            self.assertEqual(err["param"], param)
        if code is not None:
            self.assertEqual(err["code"], code)

    def test_malformed_json(self):
        for raw in [b"{", b"not json", b'{"prompt": "x",}', b"", b"[1, 2"]:
            status, _, body = request("POST", "/v1/completions", raw=raw)
            self.assertError(status, 400, body, code="invalid_json")

    def test_wrong_types(self):
        for field, value in [("max_tokens", "10"), ("temperature", "hot"), ("stream", 1),
                             ("stop", 5), ("n", 1.5), ("top_p", [1])]:
            status, _, body = request("POST", "/v1/completions", {"prompt": "x", field: value})
            self.assertError(status, 400, body, param=field)
        status, _, body = request("POST", "/v1/chat/completions", {"messages": "hello"})
        self.assertError(status, 400, body, param="messages")

    def test_invalid_utf8(self):
        status, _, body = request("POST", "/v1/completions",
                                  raw=b'{"prompt": "abc\xff\xfe def", "max_tokens": 4}')
        self.assertError(status, 400, body)

    def test_session_headers(self):
        # X-Session-Id and X-User stand for the body's session_id and user (a router hashes on
        # headers): a request carrying one is a session's turn; without, it is not; a header
        # that is not UTF-8 is a 400 naming the field it stands for.
        turns = "spindle_session_turns_total"
        body = {"prompt": "Once upon a time", "max_tokens": 2}
        json_ct = {"Content-Type": "application/json"}
        for headers, counted in (({}, 0), ({"X-Session-Id": "chat-17"}, 1),
                                 ({"x-user": "alice"}, 1)):
            before = metrics()[turns]
            status, _, out = request("POST", "/v1/completions", body, {**json_ct, **headers})
            self.assertEqual(status, 200, out)
            wait_idle()
            self.assertEqual(metrics()[turns] - before, counted, headers)
        for name, field in (("X-Session-Id", "session_id"), ("X-User", "user")):
            status, _, out = request("POST", "/v1/chat/completions",
                                     {"messages": [{"role": "user", "content": "hi"}]},
                                     {**json_ct, name: "caf\xe9\xff"})
            self.assertError(status, 400, out, param=field)

    def test_empty_prompt(self):
        status, _, body = request("POST", "/v1/completions", {"prompt": "", "max_tokens": 4})
        self.assertError(status, 400, body, param="prompt")
        status, _, body = request("POST", "/v1/completions", {"prompt": [], "max_tokens": 4})
        self.assertError(status, 400, body, param="prompt")

    def test_max_tokens(self):
        for v in [-1, 0, 2**40]:
            status, _, body = request("POST", "/v1/completions", {"prompt": "x", "max_tokens": v})
            self.assertError(status, 400, body, param="max_tokens")
        # Larger than the context room: clamped, and the completion stops at the context end.
        status, _, body = request("POST", "/v1/completions",
                                  {"prompt": "Once upon a time", "max_tokens": 1000000,
                                   "temperature": 0, "ignore_eos": True, "stop": ["Lily"]})
        self.assertEqual(status, 200, body)

    def test_huge_n(self):
        status, _, body = request("POST", "/v1/completions", {"prompt": "x", "n": 100000})
        self.assertError(status, 400, body, param="n")

    def test_prompt_too_long(self):
        status, _, body = request("POST", "/v1/completions",
                                  {"prompt": "story " * 3000, "max_tokens": 4})
        self.assertError(status, 400, body, param="prompt", code="context_length_exceeded")
        status, _, body = request("POST", "/v1/completions", {"prompt": [1, 999999]})
        self.assertError(status, 400, body, param="prompt")

    def test_oversized_body(self):
        big = b'{"prompt": "' + b"a" * (5 << 20) + b'"}'
        resp = raw_exchange(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                            + str(len(big)).encode() + b"\r\n\r\n" + big[:1000])
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:100])

    def test_header_too_large(self):
        resp = raw_exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000
                            + b"\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 431"), resp[:100])

    def test_missing_content_length(self):
        resp = raw_exchange(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close"
                            b"\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 400"), resp[:100])
        resp = raw_exchange(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 501"), resp[:100])

    def test_not_found_and_method(self):
        status, _, body = request("GET", "/v1/nothing")
        self.assertError(status, 404, body)
        status, headers, body = request("GET", "/v1/completions")
        self.assertError(status, 405, body)
        self.assertEqual(headers.get("Allow"), "POST")

    def test_pipelined(self):
        one = json.dumps({"prompt": "Once upon a time", "max_tokens": 3, "temperature": 0})
        req = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(one)}\r\n\r\n{one}").encode()
        last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        resp = raw_exchange(req + req + last)
        self.assertEqual(resp.count(b"HTTP/1.1 200"), 3, resp)
        self.assertEqual(resp.count(b'"text_completion"'), 2)

    def disconnect_when(self, body, started):
        """Sends a completions request, waits until started(sock) says it has reached the state
        under test, disconnects at once, and checks that the server cancels it: one more
        aborted request and the KV cache freed. The requests are long enough (over a second of
        work on a fast machine) that only a stall of that order could let one finish first."""
        before = metrics()
        data = json.dumps(body)
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}"
                   f"\r\n\r\n{data}").encode())
        got = started(s)
        s.close()
        wait_idle()
        wait_aborts(before[ABORT] + 1)
        return got

    def test_disconnect_mid_stream(self):
        # Started: the response head and the first events have come.
        got = self.disconnect_when({"prompt": "Once upon a time", "max_tokens": 1500,
                                    "ignore_eos": True, "stream": True},
                                   lambda s: recv_at_least(s, 200))
        self.assertIn(b"text/event-stream", got)
        self.assertIn(b"data: {", got)

    def test_disconnect_while_prefilling(self):
        # A 1900-token prompt in 16-token chunks takes about 120 steps: disconnect as soon as it
        # is running (and should the prefill be over already, the long generation is cut).
        self.disconnect_when({"prompt": "the cat sat on the mat. " * 190, "max_tokens": 100,
                              "ignore_eos": True},
                             lambda s: wait_metrics("running",
                                                    lambda m: m["spindle_num_requests_running"] == 1))

    def test_disconnect_while_queued(self):
        before = metrics()
        # Occupy the only sequence slot with a long stream, then queue another and leave.
        data = json.dumps({"prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True,
                           "stream": True})
        head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
        a = socket.create_connection(("127.0.0.1", PORT))
        a.sendall((head + data).encode())
        self.assertIn(b"data: {", recv_at_least(a, 200))
        b = socket.create_connection(("127.0.0.1", PORT))
        b.sendall((head + data).encode())
        wait_metrics("one request waiting", lambda m: m["spindle_num_requests_waiting"] == 1)
        b.close()
        # b leaves the queue aborted while a still runs (a finishing first would have let b in:
        # then a's abort below would be missing).
        wait_metrics("b aborted from the queue", lambda m: m["spindle_num_requests_waiting"] == 0
                     and m[ABORT] >= before[ABORT] + 1)
        a.close()
        wait_idle()
        wait_aborts(before[ABORT] + 2)

    def test_metrics_parse(self):
        m = metrics()
        for name in ["spindle_time_to_first_token_seconds_count",
                     "spindle_inter_token_latency_seconds_count",
                     "spindle_e2e_request_latency_seconds_count",
                     "spindle_request_queue_time_seconds_count", "spindle_prompt_tokens_total",
                     "spindle_generation_tokens_total", "spindle_num_preemptions_total",
                     "spindle_kv_cache_blocks_total", "spindle_kv_cache_usage_perc",
                     "spindle_admission_predicted_peak_tokens", "spindle_kv_cache_peak_used_tokens",
                     "spindle_kv_cache_blocks_pinned", "spindle_session_pins_total",
                     "spindle_prefix_cache_hits_total", "spindle_prefix_cache_queries_total",
                     'spindle_admission_decisions_total{"decision": "admit"}',
                     'spindle_preemptions_by_cause_total{"cause": "priority"}',
                     'spindle_request_queue_time_by_priority_seconds_count{"priority": "low"}']:
            self.assertIn(name, m)
        self.assertGreater(m["spindle_kv_cache_blocks_total"], 0)
        # The cache's configuration as vLLM and SGLang expose it, for the inference gateway.
        info = [k for k in m if k.startswith("spindle_cache_config_info")]
        self.assertEqual(len(info), 1, info)
        labels = json.loads(info[0][len("spindle_cache_config_info"):])
        self.assertEqual(int(labels["num_gpu_blocks"]), m["spindle_kv_cache_blocks_total"])
        self.assertGreater(int(labels["block_size"]), 0)
        self.assertEqual(m[info[0]], 1)
        # No metric name uses a colon.
        status, _, text = request("GET", "/metrics")
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                self.assertNotIn(":", line.split("{")[0].split(" ")[0])

    def test_health(self):
        status, _, body = request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")


if __name__ == "__main__":
    start_server()
    try:
        result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
        ok = result.wasSuccessful()
    finally:
        PROC.terminate()
        rc = PROC.wait(timeout=20)
    n = result.testsRun
    bad = len(result.failures) + len(result.errors)
    print(f"badinput: {n - bad} passed, {bad} failed")
    if rc != 0:
        print(f"the server exited with status {rc} after SIGTERM")
        ok = False
    sys.exit(0 if ok else 1)
