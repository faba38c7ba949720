"""The Files and Batch APIs against a real `spindle serve`: every endpoint, bad uploads, batches
that complete, fail validation, are cancelled, and survive `kill -9` at random points (every
line's result exactly once), a deleted input file, a damaged database, and a data directory
another server holds.

Usage: python3 batch.py SPINDLE_BINARY WORK_DIR MODEL.gguf"""
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import unittest
import uuid

BIN, WORK, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]


class Server:
    def __init__(self, data, *flags):
        self.proc = subprocess.Popen([BIN, "serve", "-m", MODEL, "--port", "0", "--data-dir",
                                      data, *flags], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        self.log = []
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise RuntimeError("the server did not start: " + "".join(self.log))

    def request(self, method, path, body=None, headers=None, raw=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if raw:
            return resp.status, data
        return resp.status, json.loads(data) if data else None

    def upload(self, content, purpose="batch", filename="in.jsonl"):
        boundary = uuid.uuid4().hex
        if isinstance(content, str):
            content = content.encode()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/jsonl\r\n\r\n").encode() \
            + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", "/v1/files", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def stop(self, kill=False):
        if kill:
            self.proc.kill()
        else:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.proc.stderr.close()


def lines(n, max_tokens=12, url="/v1/chat/completions", prefix="q", bad=(), ignore_eos=False):
    out = []
    for i in range(n):
        body = {"messages": [{"role": "system", "content": f"Story teller {i % 3}. " * 20},
                             {"role": "user", "content": f"Tell story {i}"}],
                "max_tokens": max_tokens, "temperature": 0, "ignore_eos": ignore_eos}
        if url == "/v1/completions":
            body = {"prompt": f"Once upon a time {i}", "max_tokens": max_tokens}
        if i in bad:
            body["max_tokens"] = -1  # a per-line error: 400 in the error file
        out.append(json.dumps({"custom_id": f"{prefix}{i}", "method": "POST", "url": url,
                               "body": body}))
    return "\n".join(out) + "\n"


def wait_final(srv, bid, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, b = srv.request("GET", f"/v1/batches/{bid}")
        assert status == 200, b
        if b["status"] in ("completed", "failed", "cancelled", "expired"):
            return b
        time.sleep(0.05)
    raise AssertionError(f"batch {bid} did not end: {b}")


def create(srv, fid, endpoint="/v1/chat/completions", **extra):
    return srv.request("POST", "/v1/batches", {"input_file_id": fid, "endpoint": endpoint,
                                               "completion_window": "24h", **extra})


def results(srv, fid):
    status, data = srv.request("GET", f"/v1/files/{fid}/content", raw=True)
    assert status == 200, data
    return [json.loads(l) for l in data.decode().splitlines() if l.strip()]


class Batch(unittest.TestCase):
    def setUp(self):
        self.data = f"{WORK}/data-{self._testMethodName}"
        self.srv = Server(self.data)

    def tearDown(self):
        if self.srv:
            self.srv.stop()

    def test_files_endpoints(self):
        s = self.srv
        status, f = s.upload(lines(3), filename="three.jsonl")
        self.assertEqual(status, 200, f)
        self.assertEqual((f["object"], f["purpose"], f["filename"]), ("file", "batch",
                                                                        "three.jsonl"))
        self.assertEqual(f["bytes"], len(lines(3).encode()))
        status, g = s.request("GET", f"/v1/files/{f['id']}")
        self.assertEqual((status, g), (200, f))
        status, data = s.request("GET", f"/v1/files/{f['id']}/content", raw=True)
        self.assertEqual((status, data.decode()), (200, lines(3)))
        ids = [s.upload(lines(1))[1]["id"] for _ in range(3)]
        status, page = s.request("GET", "/v1/files?limit=2")
        self.assertEqual([x["id"] for x in page["data"]], ids[::-1][:2])
        self.assertTrue(page["has_more"])
        status, page = s.request("GET", f"/v1/files?limit=10&after={ids[1]}")
        self.assertEqual([x["id"] for x in page["data"]], [ids[0], f["id"]])
        self.assertFalse(page["has_more"])
        status, d = s.request("DELETE", f"/v1/files/{f['id']}")
        self.assertEqual((status, d), (200, {"id": f["id"], "object": "file", "deleted": True}))
        for method, path in (("GET", f"/v1/files/{f['id']}"), ("DELETE", f"/v1/files/{f['id']}"),
                             ("GET", f"/v1/files/{f['id']}/content")):
            status, e = s.request(method, path)
            self.assertEqual(status, 404, e)
        status, e = s.request("PUT", "/v1/files")
        self.assertEqual(status, 405, e)

    def test_bad_uploads(self):
        s = self.srv
        cases = [
            (lambda: s.upload(lines(2), purpose="fine-tune"), "purpose"),
            (lambda: s.upload("this is not JSON lines\n"), "line 1"),
            (lambda: s.upload(lines(2) + "[1, 2]\n"), "line 3"),
            (lambda: s.upload(lines(2, url="/v1/embeddings")), "url"),
            (lambda: s.upload(lines(1) + json.dumps({"custom_id": "x", "method": "POST",
                                                     "url": "/v1/completions", "body": {
                                                         "prompt": "a" * (5 << 20)}}) + "\n"),
             "longer than"),
            (lambda: s.upload(""), "no lines"),
            (lambda: s.request("POST", "/v1/files", "{}", {"Content-Type": "application/json"}),
             "multipart"),
        ]
        for send, words in cases:
            status, e = send()
            self.assertEqual(status, 400, e)
            self.assertIn(words, e["error"]["message"])
        # Bigger than --max-upload-mb: 413, and the server goes on serving.
        self.srv.stop()
        self.srv = Server(self.data, "--max-upload-mb", "20")
        status, e = self.srv.upload(b"x" * (50 << 20))
        self.assertEqual(status, 413, e)
        status, f = self.srv.upload(lines(2))
        self.assertEqual(status, 200, f)

    def test_batch_completes(self):
        s = self.srv
        _, f = s.upload(lines(12, bad={5}))
        status, b = create(s, f["id"], metadata={"job": "nightly"})
        self.assertEqual(status, 200, b)
        self.assertEqual((b["object"], b["status"], b["metadata"]), ("batch", "validating",
                                                                      {"job": "nightly"}))
        b = wait_final(s, b["id"])
        self.assertEqual(b["status"], "completed", b)
        self.assertEqual(b["request_counts"], {"total": 12, "completed": 11, "failed": 1})
        for k in ("in_progress_at", "finalizing_at", "completed_at"):
            self.assertIsInstance(b[k], int)
        out = results(s, b["output_file_id"])
        self.assertEqual(sorted(r["custom_id"] for r in out),
                         sorted(f"q{i}" for i in range(12) if i != 5))
        for r in out:
            self.assertIsNone(r["error"])
            self.assertEqual(r["response"]["status_code"], 200)
            body = r["response"]["body"]
            self.assertEqual(body["object"], "chat.completion")
            self.assertEqual(body["usage"]["completion_tokens"], 12)
            self.assertEqual(r["response"]["request_id"], body["id"])
        # /metrics counts the lines recorded, and the batch is no longer in progress (the
        # gauges are kept as the batch moves, the last time when it was finalized).
        _, text = s.request("GET", "/metrics", raw=True)
        m = dict(re.findall(r"^(spindle_batch\S*) (\S+)$", text.decode(), re.M))
        self.assertEqual({k: float(v) for k, v in m.items()},
                         {'spindle_batch_lines_total{result="completed"}': 11,
                          'spindle_batch_lines_total{result="failed"}': 1,
                          "spindle_batches_in_progress": 0, "spindle_batch_lines_running": 0,
                          "spindle_batch_lines_pending": 0})
        err = results(s, b["error_file_id"])
        self.assertEqual([r["custom_id"] for r in err], ["q5"])
        self.assertEqual(err[0]["response"]["status_code"], 400)
        self.assertEqual(err[0]["response"]["body"]["error"]["param"], "max_tokens")
        # The same answers as the same requests sent online (greedy).
        status, online = s.request("POST", "/v1/chat/completions",
                                   json.loads(lines(12).splitlines()[3])["body"])
        mine = next(r for r in out if r["custom_id"] == "q3")["response"]["body"]
        self.assertEqual(online["choices"][0]["message"], mine["choices"][0]["message"])
        status, page = s.request("GET", "/v1/batches?limit=1")
        self.assertEqual(page["data"][0]["id"], b["id"])
        status, e = s.request("POST", f"/v1/batches/{b['id']}/cancel")
        self.assertEqual(status, 409, e)

    def test_batch_fails_validation(self):
        s = self.srv
        _, f = s.upload(lines(3, url="/v1/completions") + lines(2, prefix="q")[:0])
        b = wait_final(s, create(s, f["id"], endpoint="/v1/chat/completions")[1]["id"])
        self.assertEqual(b["status"], "failed")
        self.assertEqual(b["errors"]["data"][0]["code"], "mismatched_endpoint")
        self.assertEqual(b["errors"]["data"][0]["line"], 1)
        _, f = s.upload(lines(2) + lines(1))  # q0 twice
        b = wait_final(s, create(s, f["id"])[1]["id"])
        self.assertEqual(b["status"], "failed")
        self.assertEqual(b["errors"]["data"][0]["code"], "duplicate_custom_id")
        for body, param in (({"endpoint": "/v1/chat/completions", "completion_window": "24h"},
                             "input_file_id"),
                            ({"input_file_id": f["id"], "endpoint": "/v1/embeddings",
                              "completion_window": "24h"}, "endpoint"),
                            ({"input_file_id": f["id"], "endpoint": "/v1/completions",
                              "completion_window": "1h"}, "completion_window")):
            status, e = s.request("POST", "/v1/batches", body)
            self.assertEqual((status, e["error"]["param"]), (400, param))
        status, e = create(s, "file-nothere")
        self.assertEqual(status, 404, e)

    def test_planning_does_not_hold_the_server(self):
        # Validation parses every line and planning reads every prompt; both run in slices
        # between the server's other work, so the batch is created at once and the server
        # answers while it plans. Then a cancel during planning ends the batch with nothing
        # run.
        s = self.srv
        story = " ".join(["once upon a time there was a little dragon who"] * 60)
        content = "".join(json.dumps({"custom_id": f"p{i}", "method": "POST",
                                      "url": "/v1/chat/completions", "body": {
                                          "messages": [{"role": "system", "content": story},
                                                       {"role": "user", "content": f"q {i}"}],
                                          "max_tokens": 4}}) + "\n" for i in range(1500))
        _, f = s.upload(content)
        status, b = create(s, f["id"])
        self.assertEqual(status, 200, b)
        deadline = time.time() + 30
        while True:  # validated (in slices too), then planning
            _, text = s.request("GET", "/metrics", raw=True)
            m = dict(re.findall(r"^(spindle_batch\S*) (\S+)$", text.decode(), re.M))
            if float(m["spindle_batches_in_progress"]) == 1:
                break
            self.assertLess(time.time(), deadline)
            time.sleep(0.005)
        self.assertEqual(float(m["spindle_batch_lines_running"]), 0)  # still planning
        self.assertEqual(float(m["spindle_batch_lines_pending"]), 1500)
        status, c = s.request("POST", f"/v1/batches/{b['id']}/cancel")
        self.assertEqual(status, 200, c)
        b = wait_final(s, b["id"])
        self.assertEqual(b["status"], "cancelled")
        self.assertEqual(b["request_counts"]["completed"], 0)

    def test_cancel(self):
        s = self.srv
        _, f = s.upload(lines(60, max_tokens=200))
        _, b = create(s, f["id"])
        deadline = time.time() + 60
        while s.request("GET", f"/v1/batches/{b['id']}")[1]["request_counts"]["completed"] < 2:
            self.assertLess(time.time(), deadline)
            time.sleep(0.02)
        status, c = s.request("POST", f"/v1/batches/{b['id']}/cancel")
        self.assertEqual(status, 200, c)
        self.assertIn(c["status"], ("cancelling", "cancelled"))
        b = wait_final(s, b["id"])
        self.assertEqual(b["status"], "cancelled")
        done = b["request_counts"]["completed"]
        self.assertGreaterEqual(done, 2)
        self.assertLess(done, 60)
        self.assertEqual(len(results(s, b["output_file_id"])), done)
        # The server serves on.
        status, r = s.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        self.assertEqual(status, 200, r)

    def test_kill_and_resume(self):
        # kill -9 at random points, several times: every line's result exactly once.
        n = 96
        _, f = self.srv.upload(lines(n, max_tokens=160, ignore_eos=True))
        _, b = create(self.srv, f["id"])
        rng = random.Random(7)
        seen = [0]
        for _ in range(3):
            # Killed once a random number more lines are in (polled often: it may overshoot).
            target = seen[-1] + rng.randint(1, n // 5)
            deadline = time.time() + 60
            while self.srv.request("GET", f"/v1/batches/{b['id']}")[1]["request_counts"][
                    "completed"] < target:
                self.assertLess(time.time(), deadline)
                time.sleep(0.002)
            self.srv.stop(kill=True)
            self.srv = Server(self.data)
            seen.append(self.srv.request("GET", f"/v1/batches/{b['id']}")[1]["request_counts"][
                "completed"])
        final = wait_final(self.srv, b["id"])
        print(f"completed when killed: {seen[1:]}", file=sys.stderr)
        self.assertEqual(final["status"], "completed", final)
        self.assertEqual(final["request_counts"], {"total": n, "completed": n, "failed": 0})
        out = results(self.srv, final["output_file_id"])
        self.assertEqual(sorted(r["custom_id"] for r in out), sorted(f"q{i}" for i in range(n)))
        self.assertLess(seen[-1], n)  # every kill came in the middle

    def test_deleted_input_and_damaged_database(self):
        s = self.srv
        _, f = s.upload(lines(40, max_tokens=200))
        _, b = create(s, f["id"])
        status, _ = s.request("DELETE", f"/v1/files/{f['id']}")
        self.assertEqual(status, 200)
        s.stop(kill=True)
        self.srv = s = Server(self.data)
        b = wait_final(s, b["id"])
        self.assertEqual(b["status"], "failed")
        self.assertEqual(b["errors"]["data"][0]["code"], "input_file_unavailable")
        self.assertIn("deleted", b["errors"]["data"][0]["message"])
        # Another server on the same data directory: batches unavailable there, said so.
        other = Server(self.data)
        status, e = other.request("GET", "/v1/files")
        self.assertEqual(status, 503, e)
        self.assertIn("in use", e["error"]["message"])
        other.stop()
        s.stop()
        # A damaged database: the server serves, the batch endpoints say what to do.
        with open(f"{self.data}/spindle.db", "r+b") as db:
            db.seek(0)
            db.write(b"\x00garbage" * 64)
        for p in ("spindle.db-wal", "spindle.db-shm"):
            if os.path.exists(f"{self.data}/{p}"):
                os.unlink(f"{self.data}/{p}")
        self.srv = s = Server(self.data)
        status, e = s.request("GET", "/v1/batches")
        self.assertEqual(status, 503, e)
        self.assertIn("move it away", e["error"]["message"])
        status, r = s.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        self.assertEqual(status, 200, r)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
