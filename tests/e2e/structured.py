"""Structured output against a real `spindle serve` on a random-weight model: whatever the
weights say, the grammar decides, so every output that ends is valid against its schema (checked
by the jsonschema library), for a set of schemas that exercise every supported keyword, through
chat and completions, response_format json_schema and llama.cpp's json_schema field, sampled
with several seeds. Unsupported schemas get a 400 that names the keyword.

Tool calls in the three formats (Hermes/Qwen by default, Mistral with a Mistral-style template
on a vocabulary with its control tokens, Llama 3.1 with its template): forced calls, and calls a
grammar makes the model write after some content, streamed as OpenAI's tool_calls deltas that
add up to the non-streamed response.

Usage: python3 structured.py SPINDLE_BINARY WORK_DIR VOCAB_MODEL.gguf TEMPLATES_DIR"""
import http.client
import json
import re
import subprocess
import sys
import time
import unittest

import jsonschema

BIN, WORK, VOCAB, TEMPLATES = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
PORT = None  # the default server's (ChatML template: Hermes tool calls)
PORTS = {}
PROCS = []

# A Mistral-style template (v0.3's turns and tool markers); the model's vocabulary gets the
# markers as control tokens (mkmodel --add-token), as Mistral's vocabularies have them.
MISTRAL_TEMPLATE = """{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {%- if tools and loop.last %}
            {{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {{- '[INST]' + message['content'] + '[/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {%- if message.tool_calls %}
            {{- '[TOOL_CALLS]' + message.tool_calls|tojson + eos_token }}
        {%- else %}
            {{- message['content'] + eos_token }}
        {%- endif %}
    {%- elif message['role'] == 'tool' %}
        {{- '[TOOL_RESULTS]' + message['content'] + '[/TOOL_RESULTS]' }}
    {%- endif %}
{%- endfor %}
"""
MISTRAL_TOKENS = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                  "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]

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


def start_server(name, model_args=(), serve_args=(), ctx=1024):
    """Starts `spindle serve` on a new random-weight model; its port in PORTS[name]."""
    model = f"{WORK}/{name}.gguf"
    subprocess.run([BIN, "mkmodel", "-o", model, "--preset", "tiny", "--vocab-from", VOCAB,
                    "--seed", "3", *model_args], check=True, capture_output=True)
    log = f"{WORK}/{name}.log"
    with open(log, "w") as f:
        PROCS.append(subprocess.Popen([BIN, "serve", "-m", model, "--port", "0", "--ctx", str(ctx),
                                       *serve_args], stdout=subprocess.DEVNULL, stderr=f))
    deadline = time.time() + 30
    while time.time() < deadline:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(log).read())
        if m:
            PORTS[name] = int(m.group(1))
            return
        if PROCS[-1].poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start: {open(log).read()}")


def start_servers():
    global PORT
    start_server("random")
    PORT = PORTS["random"]
    template = f"{WORK}/mistral.jinja"
    with open(template, "w") as f:
        f.write(MISTRAL_TEMPLATE)
    start_server("mistral", [a for t in MISTRAL_TOKENS for a in ("--add-token", t)],
                 ["--chat-template", template])
    # Its long system prompt takes more than 1024 tokens of this small vocabulary.
    start_server("llama3", (), ["--chat-template",
                                f"{TEMPLATES}/meta-llama-Llama-3.1-8B-Instruct.jinja"], 2048)


def post(path, body, port=None):
    conn = http.client.HTTPConnection("127.0.0.1", port or PORT, timeout=120)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    return resp.status, out


def post_stream(path, body, port=None):
    """The chunks of a streamed response, until [DONE]."""
    conn = http.client.HTTPConnection("127.0.0.1", port or PORT, timeout=120)
    conn.request("POST", path, body=json.dumps({**body, "stream": True}),
                  headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    chunks = []
    for line in resp.read().decode().split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    conn.close()
    if resp.status != 200 or not chunks or "error" in chunks[-1]:
        raise AssertionError(f"stream failed: {resp.status} {chunks[-1:]}")
    return chunks


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


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 12},
                                      "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                       "required": ["city", "days"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"enum": ["utc", "cet"]}},
                       "required": ["tz"], "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def accumulate(test, chunks):
    """What a client makes of a chat stream: (content, calls, argument deltas per call,
    finish_reason), each delta checked for OpenAI's shapes on the way: a call starts with its
    index, id, type and name and empty arguments; then only {index, function: {arguments}}
    fragments of the latest call; content only before the calls; nothing after the finish."""
    content, calls, frags, finish = "", [], [], None
    for chunk in chunks:
        if not chunk["choices"]:
            continue  # the usage chunk
        test.assertIsNone(finish, "a chunk after the finish")
        c = chunk["choices"][0]
        d = c["delta"]
        if d.get("content"):
            test.assertEqual(calls, [], "content after a call")
            content += d["content"]
        for tc in d.get("tool_calls", []):
            if "id" in tc:
                test.assertEqual(tc["index"], len(calls))
                test.assertEqual(tc["type"], "function")
                test.assertRegex(tc["id"], r"^call_")
                test.assertEqual(tc["function"]["arguments"], "")
                calls.append({"name": tc["function"]["name"], "arguments": ""})
                frags.append(0)
            else:
                test.assertEqual(set(tc), {"index", "function"}, tc)
                test.assertEqual(set(tc["function"]), {"arguments"}, tc)
                test.assertEqual(tc["index"], len(calls) - 1)
                calls[-1]["arguments"] += tc["function"]["arguments"]
                frags[-1] += 1
        finish = c["finish_reason"]
    return content, calls, frags, finish


def message_calls(out):
    return [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in out["choices"][0]["message"].get("tool_calls") or []]


class ToolCalls(unittest.TestCase):
    def chat(self, port, **extra):
        return {"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "max_tokens": 400, "temperature": 1.0, "tools": TOOLS, **extra}

    def setUp(self):
        self.frags = []  # argument fragments per streamed call, over the test

    def tearDown(self):
        # Arguments are streamed in fragments: the server joins into one chunk what the engine
        # wrote while the loop was busy, so on a loaded machine a short call can come whole,
        # but over a test's calls some must come in pieces.
        if self.frags:
            self.assertGreaterEqual(max(self.frags), 2, self.frags)

    def streamed_as_whole(self, port, body):
        """The request streamed and not: the same content and calls. The non-streamed
        response."""
        status, whole = post("/v1/chat/completions", body, port)
        self.assertEqual(status, 200, whole)
        content, calls, frags, finish = accumulate(
            self, post_stream("/v1/chat/completions", body, port))
        w = whole["choices"][0]
        self.assertEqual(finish, w["finish_reason"])
        self.assertEqual(content or None, w["message"]["content"])
        self.assertEqual(calls, message_calls(whole))
        self.frags += frags
        return whole

    def check_forced(self, port):
        named = {"type": "function", "function": {"name": "get_time"}}
        for choice in ("required", named):
            for seed in range(3):
                whole = self.streamed_as_whole(port, self.chat(port, tool_choice=choice,
                                                               seed=seed))
                c = whole["choices"][0]
                self.assertEqual(c["finish_reason"], "tool_calls", c)
                self.assertIsNone(c["message"]["content"])
                calls = message_calls(whole)
                self.assertGreaterEqual(len(calls), 1)
                for call in calls:
                    if choice == named:
                        self.assertEqual(call["name"], "get_time")
                    jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])

    def test_hermes_forced_calls_stream_incrementally(self):
        self.check_forced(PORTS["random"])

    def test_llama3_forced_calls_stream_incrementally(self):
        self.check_forced(PORTS["llama3"])

    def test_mistral_forced_call_after_its_control_token(self):
        # The prompt of a forced call ends with [TOOL_CALLS] (one control token), which no
        # grammar over bytes can produce; the grammar forces the array of calls after it.
        port = PORTS["mistral"]
        _, auto = post("/v1/chat/completions", self.chat(port, max_tokens=1), port)
        _, forced = post("/v1/chat/completions", self.chat(port, tool_choice="required"), port)
        self.assertEqual(forced["usage"]["prompt_tokens"], auto["usage"]["prompt_tokens"] + 1)
        self.check_forced(port)

    def test_content_then_parallel_calls(self):
        # A grammar makes the model write some content, then two calls (tool_choice auto).
        grammar = (
            'root ::= "Let me check" [a-z ]{0,6} ".\\n" call "\\n" call\n'
            'call ::= "<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": '
            '{\\"city\\": \\"" [a-z]{1,8} "\\", \\"days\\": " [1-7] "}}\\n</tool_call>"\n')
        for seed in range(3):
            body = self.chat(PORT, grammar=grammar, seed=seed)
            whole = self.streamed_as_whole(PORT, body)
            c = whole["choices"][0]
            self.assertEqual(c["finish_reason"], "tool_calls")
            self.assertRegex(c["message"]["content"], r"^Let me check[a-z ]{0,6}\.$")
            calls = message_calls(whole)
            self.assertEqual([x["name"] for x in calls], ["get_weather", "get_weather"])
            for call in calls:
                jsonschema.validate(json.loads(call["arguments"]), PARAMS["get_weather"])
            # The content deltas never showed the marker's start or the newline before it.
            for chunk in post_stream("/v1/chat/completions", body):
                text = chunk["choices"][0]["delta"].get("content") or ""
                self.assertNotIn("<", text)
                self.assertNotIn("\n", text)

    def test_llama3_parallel_calls(self):
        # Llama 3.2 writes parallel calls as JSON objects separated by ';'.
        grammar = ('root ::= call "; " call\n'
                   'call ::= "{\\"name\\": \\"get_weather\\", \\"parameters\\": '
                   '{\\"city\\": \\"" [a-z]{1,8} "\\", \\"days\\": " [1-7] "}}"\n')
        port = PORTS["llama3"]
        for seed in range(2):
            whole = self.streamed_as_whole(port, self.chat(port, grammar=grammar, seed=seed))
            c = whole["choices"][0]
            self.assertEqual(c["finish_reason"], "tool_calls", c)
            self.assertIsNone(c["message"]["content"])
            calls = message_calls(whole)
            self.assertEqual([x["name"] for x in calls], ["get_weather", "get_weather"])
            for call in calls:
                jsonschema.validate(json.loads(call["arguments"]), PARAMS["get_weather"])

    def test_text_that_only_looks_like_a_call_is_content(self):
        grammar = 'root ::= "a <tool> b\\n<tool_call>nope " [a-z]{1,3} " <tool_c"\n'
        body = self.chat(PORT, grammar=grammar, seed=1)
        whole = self.streamed_as_whole(PORT, body)
        c = whole["choices"][0]
        self.assertEqual(c["finish_reason"], "stop")
        self.assertNotIn("tool_calls", c["message"])
        self.assertRegex(c["message"]["content"],
                         r"^a <tool> b\n<tool_call>nope [a-z]{1,3} <tool_c$")


if __name__ == "__main__":
    try:
        start_servers()
        unittest.main(argv=sys.argv[:1], verbosity=2)
    finally:
        for p in PROCS:
            p.terminate()
            p.wait()
