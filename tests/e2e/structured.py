"""Structured output against a real `spindle serve` on a random-weight model: whatever the
weights say, the grammar decides, so every output that ends is valid against its schema (checked
by the jsonschema library), for a set of schemas that exercise every supported keyword, through
chat and completions, response_format json_schema and llama.cpp's json_schema field, sampled
with several seeds. Unsupported schemas get a 400 that names the keyword.

Usage: python3 structured.py SPINDLE_BINARY WORK_DIR VOCAB_MODEL.gguf"""
import http.client
import json
import re
import subprocess
import sys
import time
import unittest

import jsonschema

BIN, WORK, VOCAB = sys.argv[1], sys.argv[2], sys.argv[3]
PORT = None
PROC = None

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "level": {"enum": ["low", "mid", "high", 3, None]},
            "ok": {"type": "boolean"},
            "score": {"type": ["number", "null"]},
        },
        "required": ["id", "day", "level", "ok"],
    },
    "tuple": {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": -50, "maximum": -7},
                        {"const": "x"}, {"type": "string", "maxLength": 3}],
        "items": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 1000},
        "minItems": 3, "maxItems": 5,
    },
    "tree": {
        "$defs": {"node": {
            "type": "object",
            "properties": {"v": {"type": "integer", "minimum": 1, "maximum": 9},
                           "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                    "maxItems": 2}},
            "required": ["v"]}},
        "$ref": "#/$defs/node",
    },
    "choice": {
        "anyOf": [
            {"type": "object", "properties": {"kind": {"const": "circle"},
                                              "r": {"type": "integer", "minimum": 1}},
             "required": ["kind", "r"]},
            {"type": "object", "properties": {"kind": {"const": "square"},
                                              "side": {"type": "number"}},
             "required": ["kind", "side"]},
        ],
    },
    "open": {
        "type": "object",
        "properties": {"k": {"type": "string", "maxLength": 4}},
        "required": ["k"],
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 99},
    },
}


def start_server():
    global PORT, PROC
    model = f"{WORK}/random.gguf"
    subprocess.run([BIN, "mkmodel", "-o", model, "--preset", "tiny", "--vocab-from", VOCAB,
                    "--seed", "3"], check=True, capture_output=True)
    PROC = subprocess.Popen([BIN, "serve", "-m", model, "--port", "0", "--ctx", "1024"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", PROC.stderr.readline())
        if m:
            PORT = int(m.group(1))
            return
    raise RuntimeError("the server did not start")


def post(path, body):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    return resp.status, out


class Structured(unittest.TestCase):
    def check_outputs(self, name, schema, texts, min_ended):
        ended = 0
        for finish, text in texts:
            if finish == "length":
                continue  # cut short by max_tokens: a prefix, not a document
            self.assertEqual(finish, "stop", text)
            value = json.loads(text)
            jsonschema.validate(value, schema)
            ended += 1
        # Random weights wander inside free-length strings; most outputs still end (with free
        # keys, few do: the weights choose how many properties to write).
        self.assertGreaterEqual(ended, min_ended, f"{name}: {texts}")

    def test_every_schema_every_endpoint(self):
        for name, schema in SCHEMAS.items():
            texts = []
            for seed in range(4):
                status, out = post("/v1/chat/completions", {
                    "messages": [{"role": "user", "content": "Give me " + name}],
                    "max_tokens": 600, "temperature": 1.0, "seed": seed,
                    "response_format": {"type": "json_schema",
                                        "json_schema": {"name": name, "schema": schema,
                                                        "strict": True}}})
                self.assertEqual(status, 200, out)
                c = out["choices"][0]
                texts.append((c["finish_reason"], c["message"]["content"]))
                status, out = post("/v1/completions", {
                    "prompt": "Once upon a time", "max_tokens": 600, "temperature": 1.5,
                    "seed": seed, "json_schema": schema})
                self.assertEqual(status, 200, out)
                c = out["choices"][0]
                texts.append((c["finish_reason"], c["text"]))
            self.check_outputs(name, schema, texts, 1 if name == "open" else len(texts) * 3 // 4)

    def test_n_choices(self):
        # n > 1: each choice its own matcher, every one valid, and they differ.
        schema = SCHEMAS["person"]
        status, out = post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Give me people"}], "n": 4,
            "max_tokens": 600, "temperature": 1.0, "seed": 7,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "person", "schema": schema}}})
        self.assertEqual(status, 200, out)
        self.assertEqual(sorted(c["index"] for c in out["choices"]), [0, 1, 2, 3])
        texts = [(c["finish_reason"], c["message"]["content"]) for c in out["choices"]]
        self.check_outputs("person", schema, texts, 3)
        self.assertGreater(len({t for _, t in texts}), 1, texts)

    def test_bad_schemas(self):
        cases = [
            ({"type": "object", "allOf": [{}]}, "allOf"),
            ({"type": "string", "format": "email"}, "format"),
            ({"type": "string", "pattern": "(?<=a)b"}, "pattern"),
            ({"$ref": "#/nowhere"}, "$ref"),
        ]
        for schema, keyword in cases:
            status, out = post("/v1/completions", {"prompt": "x", "json_schema": schema})
            self.assertEqual(status, 400, out)
            self.assertEqual(out["error"]["param"], "json_schema")
            self.assertIn(keyword, out["error"]["message"])
            status, out = post("/v1/chat/completions", {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "n", "schema": schema}}})
            self.assertEqual(status, 400, out)
            self.assertEqual(out["error"]["param"], "response_format")
        status, out = post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})
        self.assertEqual(status, 400, out)  # no name


if __name__ == "__main__":
    start_server()
    try:
        unittest.main(argv=sys.argv[:1], verbosity=2)
    finally:
        PROC.terminate()
        PROC.wait()
