#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets: tests/fuzz/corpus/<target>/<name>.

    python3 tests/fuzz/corpus/make_seeds.py [CORPUS_DIR]

scripts/fuzz-run.sh runs it into a temporary directory at every run: the GGUF seeds (which
include small model files) are generated there, never checked in; the other targets' seeds are
also kept under tests/fuzz/corpus/, where the top-level .gitignore leaves out *.gguf.

Seeds are small inputs that reach deep into a parser: valid inputs of every shape the parser
knows, and a few near misses for its error paths; the fuzzer mutates from there. The output is
deterministic, so a change to this file shows as a change to the corpus. Files not written here
(crash-* regression seeds, the fuzz_tmpl corpus) are left alone.

Input formats (see the comment at the top of each tests/fuzz/fuzz_*.c):
  fuzz_gguf  a GGUF image
  fuzz_http  two bytes (little-endian) choosing the header limit, 1 + value % 8192; one byte
             choosing the split point of the restart check; then the request bytes
  fuzz_oai   a JSON request body, tried on both endpoints
  fuzz_tok   text (any bytes; invalid UTF-8 must be refused at its first bad byte)
  fuzz_grammar GBNF text, then a NUL byte and output bytes for a matcher
  fuzz_multipart the Content-Type header value, a NUL byte, then a multipart/form-data body
  fuzz_tools a byte choosing the tool-call format (% 3: hermes, llama3, mistral) and whether the
             output starts inside the calls (bit 2), a byte choosing the piece size (1 + b % 16),
             then a model's output
"""
import json
import os
import struct
import sys

# ---- GGUF ------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}

# tensor type id: (values per block, bytes per block), as in src/tensor/dtype.c
DTYPES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
          "q8_0": (8, 32, 34), "q4_k": (12, 256, 144), "q6_k": (14, 256, 210),
          "i8": (24, 1, 1), "i32": (26, 1, 4), "f64": (28, 1, 8), "bf16": (30, 1, 2)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(gvalue(et, x) for x in items)
    return struct.pack(SCALAR_FMT[t], v)


def gguf(kvs=(), tensors=(), version=3, alignment=32, pad_end=True):
    """kvs: (key, type, value); tensors: (name, dtype, ne, data or None for a pattern)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + gvalue(t, v)
    blobs, offset = [], 0
    for name, dtype, ne, data in tensors:
        tid, bs, ts = DTYPES[dtype]
        n = 1
        for e in ne:
            n *= e
        size = n // bs * ts
        if data is None:
            data = bytes((i * 37 + 11) & 0xFF for i in range(size))
        assert len(data) == size, name
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", e) for e in ne)
        out += struct.pack("<IQ", tid, offset)
        blobs.append((offset, data))
        offset += (size + alignment - 1) // alignment * alignment
    if tensors or pad_end:
        out += b"\0" * (-len(out) % alignment)
    base = len(out)
    for off, data in blobs:
        out += b"\0" * (base + off - len(out)) + data
    return out


def f32s(*xs):
    return b"".join(struct.pack("<f", x) for x in xs)


def tiny_llama(version=3, alignment=32):
    """A whole (tiny) model file: llama hyper-parameters, a 6-token SentencePiece vocabulary
    and every tensor of one layer, in the types Spindle computes with."""
    d, ff, vocab = 32, 64, 6
    kvs = [("general.architecture", STR, "llama"), ("general.name", STR, "seed"),
           ("general.file_type", U32, 7), ("llama.context_length", U32, 64),
           ("llama.embedding_length", U32, d), ("llama.block_count", U32, 1),
           ("llama.feed_forward_length", U32, ff), ("llama.attention.head_count", U32, 4),
           ("llama.attention.head_count_kv", U32, 2), ("llama.rope.freq_base", F32, 10000.0),
           ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
           ("tokenizer.ggml.model", STR, "llama"),
           ("tokenizer.ggml.tokens", ARR, (STR, ["<unk>", "<s>", "</s>", "\u2581a", "b", "<0x0A>"])),
           ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0])),
           ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1, 1, 6])),
           ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
           ("tokenizer.ggml.add_bos_token", BOOL, True),
           ("tokenizer.chat_template", STR,
            "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}")]
    if alignment != 32:
        kvs.append(("general.alignment", U32, alignment))
    tensors = [("token_embd.weight", "f16", [d, vocab], None),
               ("blk.0.attn_norm.weight", "f32", [d], None),
               ("blk.0.attn_q.weight", "q8_0", [d, d], None),
               ("blk.0.attn_k.weight", "q8_0", [d, d // 2], None),
               ("blk.0.attn_v.weight", "q4_0", [d, d // 2], None),
               ("blk.0.attn_output.weight", "q8_0", [d, d], None),
               ("blk.0.ffn_norm.weight", "f32", [d], None),
               ("blk.0.ffn_gate.weight", "q4_0", [d, ff], None),
               ("blk.0.ffn_up.weight", "bf16", [d, ff], None),
               ("blk.0.ffn_down.weight", "q8_0", [ff, d], None),
               ("output_norm.weight", "f32", [d], None),
               ("output.weight", "f16", [d, vocab], None)]
    return gguf(kvs, tensors, version=version, alignment=alignment)


def gguf_seeds():
    every_scalar = [("u8", U8, 200), ("i8", I8, -100), ("u16", U16, 65535), ("i16", I16, -32768),
                    ("u32", U32, 4000000000), ("i32", I32, -7), ("f32", F32, 1.5),
                    ("bool", BOOL, True), ("str", STR, "h\u00e9llo \U0001F999"),
                    ("u64", U64, 2**64 - 1), ("i64", I64, -2**63), ("f64", F64, -0.25),
                    ("empty", STR, "")]
    every_array = [("a.u8", ARR, (U8, [0, 1, 255])), ("a.i8", ARR, (I8, [-1, 1])),
                   ("a.u16", ARR, (U16, [1, 2])), ("a.i16", ARR, (I16, [-2])),
                   ("a.u32", ARR, (U32, [7, 8, 9])), ("a.i32", ARR, (I32, [-9, 0])),
                   ("a.f32", ARR, (F32, [0.5, -1.0])), ("a.bool", ARR, (BOOL, [True, False])),
                   ("a.str", ARR, (STR, ["x", "", "yz"])), ("a.u64", ARR, (U64, [2**40])),
                   ("a.i64", ARR, (I64, [-2**40])), ("a.f64", ARR, (F64, [1e300])),
                   ("a.empty", ARR, (U32, []))]
    one_of_each = [(f"t.{name}", name, [DTYPES[name][1] * 2, 2], None) for name in DTYPES]
    seeds = {
        "empty-v3.gguf": gguf(pad_end=False),
        "empty-v2.gguf": gguf(version=2, pad_end=False),
        "scalars.gguf": gguf(every_scalar),
        "arrays.gguf": gguf(every_array),
        "tensor-types.gguf": gguf([("general.architecture", STR, "test")], one_of_each),
        "tensor-dims.gguf": gguf([], [("d1", "f32", [4], None), ("d2", "f32", [2, 3], None),
                                      ("d3", "f16", [2, 1, 2], None),
                                      ("d4", "f32", [1, 2, 1, 2], None)]),
        "align-1.gguf": gguf([("general.alignment", U32, 1)],
                             [("a", "i8", [3], None), ("b", "i8", [5], None)], alignment=1),
        "tiny-llama.gguf": tiny_llama(),
        "tiny-llama-v2.gguf": tiny_llama(version=2),
        "tiny-llama-align64.gguf": tiny_llama(alignment=64),
    }
    # Near misses, one error path each.
    ok = gguf([("k", U32, 1)], [("t", "f32", [4], f32s(1, 2, 3, 4))])
    seeds["bad-truncated-data.gguf"] = ok[:-3]
    seeds["bad-truncated-header.gguf"] = ok[:13]
    seeds["bad-big-endian.gguf"] = b"GGUF" + struct.pack(">IQQ", 3, 0, 0)
    seeds["bad-version.gguf"] = b"GGUF" + struct.pack("<IQQ", 4, 0, 0)
    seeds["bad-nested-array.gguf"] = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("n") +
                                      struct.pack("<IIQ", ARR, ARR, 1) + struct.pack("<IQ", U8, 0))
    seeds["bad-duplicate-key.gguf"] = gguf([("k", U8, 1), ("k", U8, 2)])
    seeds["bad-duplicate-tensor.gguf"] = gguf([], [("t", "f32", [1], None), ("t", "f32", [1], None)])
    seeds["bad-alignment-type.gguf"] = gguf([("general.alignment", U64, 32)])
    seeds["bad-alignment-value.gguf"] = gguf([("general.alignment", U32, 48)])
    seeds["bad-block-multiple.gguf"] = gguf([], [("t", "q8_0", [32], None)]).replace(
        struct.pack("<QI", 32, 8), struct.pack("<QI", 33, 8))
    seeds["bad-overlap.gguf"] = gguf([], [("a", "f32", [8], None), ("b", "f32", [8], None)]).replace(
        gstr("b") + struct.pack("<IQIQ", 1, 8, 0, 32), gstr("b") + struct.pack("<IQIQ", 1, 8, 0, 0))
    seeds["bad-count.gguf"] = b"GGUF" + struct.pack("<IQQ", 3, 2**62, 2**62)
    return seeds


# ---- HTTP ------------------------------------------------------------------------------------


def http(req, max_header=8192, split=128):
    """The target's input: header limit, split selector, request."""
    limit = (max_header - 1) % 8192
    return struct.pack("<HB", limit, split) + req


def http_seeds():
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8}).encode()
    post = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer sk-test\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    chat = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True}).encode()
    chunked_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chat), chat)
    sdk = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:8080\r\n"
           b"accept-encoding: gzip, deflate\r\nconnection: keep-alive\r\n"
           b"accept: application/json\r\ncontent-type: application/json\r\n"
           b"user-agent: OpenAI/JS 4.77.0\r\nx-stainless-lang: js\r\n"
           b"x-stainless-retry-count: 0\r\nauthorization: Bearer sk-test\r\n"
           b"content-length: " + str(len(chat)).encode() + b"\r\n\r\n" + chat)
    get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    return {
        "get-health.http": http(get),
        "get-metrics-http10.http": http(b"GET /metrics HTTP/1.0\r\n\r\n"),
        "get-models-query.http": http(b"GET /v1/models?limit=1&x=%20y HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n"),
        "head.http": http(b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"),
        "post-completions.http": http(post, split=40),
        "post-sdk-chat.http": http(sdk, split=200),
        "post-chunked.http": http(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n"
                                  b"Content-Type: application/json\r\n\r\n" + chunked_body),
        "post-expect-continue.http": http(b"POST /tokenize HTTP/1.1\r\nHost: x\r\n"
                                          b"Expect: 100-continue\r\nContent-Length: 21\r\n\r\n"
                                          b'{"content": "Hello"}\n'),
        "pipelined.http": http(post + post + get, split=250),
        "bare-lf.http": http(b"GET /health HTTP/1.1\nHost: x\nX-Empty:\n\n"),
        "leading-empty-lines.http": http(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "ows-and-case.http": http(b"POST /detokenize HTTP/1.1\r\ncOnTeNt-LeNgTh:   14 \t\r\n"
                                  b"X-A: a b\tc\r\n\r\n{\"tokens\":[1]}"),
        "incomplete.http": http(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Len",
                                split=255),
        "limit-small.http": http(get, max_header=24),
        "bad-content-length.http": http(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                                        b"Content-Length: 2\r\n\r\nab"),
        "bad-content-length-sign.http": http(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
        "bad-space-before-colon.http": http(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        "bad-obs-fold.http": http(b"GET / HTTP/1.1\r\nX-A: a\r\n  b\r\n\r\n"),
        "bad-version.http": http(b"GET / HTTP/2.0\r\n\r\n"),
        "bad-method.http": http(b"G(T / HTTP/1.1\r\n\r\n"),
        "max-headers.http": http(b"GET / HTTP/1.1\r\n" +
                                 b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(64)) + b"\r\n"),
        "too-many-headers.http": http(b"GET / HTTP/1.1\r\n" +
                                      b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(65)) +
                                      b"\r\n"),
    }


# ---- OpenAI request bodies -------------------------------------------------------------------


def oai_seeds():
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"]}}}]
    bodies = {
        "completion-min": {"prompt": "Once upon a time"},
        "completion-sampling": {"model": "stories260K.gguf", "prompt": "Once upon a time",
                                "max_tokens": 32, "temperature": 0.8, "top_p": 0.95, "top_k": 40,
                                "min_p": 0.05, "seed": 3, "presence_penalty": 0.5,
                                "frequency_penalty": -0.5, "repeat_penalty": 1.1},
        "completion-greedy-stop": {"prompt": "Once", "max_tokens": 16, "temperature": 0,
                                   "stop": ["\n", "Lily", "."], "ignore_eos": True},
        "completion-stop-string": {"prompt": "a", "stop": "end"},
        "completion-logprobs-echo": {"prompt": "Hello", "max_tokens": 4, "logprobs": 5,
                                     "echo": True, "n": 2},
        "completion-stream-usage": {"prompt": "Hi", "stream": True,
                                    "stream_options": {"include_usage": True}},
        "completion-prompt-list": {"prompt": ["one", "two", "three"], "max_tokens": 2},
        "completion-prompt-ids": {"prompt": [1, 15043, 3186], "max_tokens": 2},
        "completion-prompt-id-lists": {"prompt": [[1, 2, 3], [1, 4]], "max_tokens": 1},
        "completion-extensions": {"prompt": "x", "priority": -3, "deadline_ms": 2000,
                                  "session_id": "s-1", "user": "u", "tool": "search",
                                  "stop_after": 5},
        "chat-min": {"messages": [{"role": "user", "content": "Tell me a story."}]},
        "chat-system-multi-turn": {"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "A story, please."}],
            "max_completion_tokens": 64, "temperature": 0.7, "seed": 42},
        "chat-content-parts": {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe "}, {"type": "text", "text": "this."}]}]},
        "chat-tools": {"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18}"}],
            "tools": tools, "tool_choice": "auto", "parallel_tool_calls": False},
        "chat-logprobs": {"messages": [{"role": "user", "content": "Hi"}], "logprobs": True,
                          "top_logprobs": 3, "max_tokens": 4},
        "chat-stream": {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                        "stream_options": {"include_usage": True}, "n": 3},
        "chat-template-kwargs": {"messages": [{"role": "user", "content": "2+2?"}],
                                 "chat_template_kwargs": {"enable_thinking": False},
                                 "session_id": "abc", "tool": "calc"},
        "chat-unicode": {"messages": [{"role": "user",
                                       "content": "\u00dcn\u00efc\u00f6d\u00e9 \U0001F999 \u4f60\u597d \u200d"}]},
        "bad-types": {"prompt": "x", "max_tokens": "10", "temperature": "hot", "n": 1.5},
        "bad-max-tokens": {"prompt": "x", "max_tokens": 0},
        "bad-logprobs": {"prompt": "x", "logprobs": 21},
        "bad-n": {"messages": [{"role": "user", "content": "x"}], "n": 100000},
        "bad-top-p": {"prompt": "x", "top_p": 2},
        "bad-temperature": {"messages": [{"role": "user", "content": "x"}], "temperature": -1},
        "bad-empty": {"prompt": [], "messages": []},
        "bad-top-logprobs-alone": {"messages": [{"role": "user", "content": "x"}],
                                   "top_logprobs": 2},
        "bad-message": {"messages": [{"role": "user"}, {"content": 5}, "text",
                                     {"role": "user", "content": [{"type": "image_url"}]}]},
        "bad-stop": {"prompt": "x", "stop": ["", 5] + ["s"] * 17},
    }
    out = {f"{k}.json": json.dumps(v, indent=None if k.startswith("bad") else 1).encode()
           for k, v in bodies.items()}
    out["not-an-object.json"] = b"[1, 2, 3]"
    out["big-numbers.json"] = (b'{"prompt": "x", "max_tokens": 9223372036854775807, "seed": -1,'
                               b' "temperature": -0.0, "top_k": -9223372036854775808,'
                               b' "top_p": 1e308, "priority": 2147483648}')
    out["bad-json.json"] = b'{"prompt": "x",}'
    out["bad-utf8.json"] = b'{"prompt": "abc\xff\xfe def", "max_tokens": 4}'

    return out


# ---- tokenizer inputs ------------------------------------------------------------------------


def tok_seeds():
    texts = {
        "ascii.txt": "Hello world",
        "leading-space.txt": " Hello World!",
        "spaces.txt": "   Hello\n    Hello",
        "whitespace.txt": "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n  ",
        "punct.txt": "Hello, y'all! How are you ? I'm fine, you're 'ok' . ,",
        "contractions.txt": "it's we've they're I'd he'll she's don't",
        "digits.txt": "3 33 333 3333 33333 333333 3.14159 1,000,000 w048 7tuijk",
        "latin1.txt": "F\u00fchrer caf\u00e9 na\u00efve \u00bd C\u1eeda Vi\u1ec7t",
        "cyrillic.txt": "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
        "khmer.txt": "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f",
        "cjk.txt": "\u6211\u60f3\u5728\u82f9\u679c\u5de5\u4f5c \u3053\u3093\u306b\u3061\u306f \ud55c\uad6d\uc5b4",
        "emoji.txt": "\U0001F680 (normal) \U0001F636\u200d\U0001F32B\ufe0f (multiple emojis "
                     "concatenated) \u2705 \U0001F999.cpp",
        "emoji-zwj-family.txt": "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
        "combining.txt": "e\u0301 a\u0308 n\u0303 \u0928\u093f Z\u0351\u036b\u0343",
        "rtl.txt": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eabc\u202c",
        "bom-and-controls.txt": "\ufeffA\u0000B\u0007\u001b[0m\u007f\u0085\u00a0\u2028",
        "special-tokens.txt": "<s>Hi</s><unk> <|endoftext|><|im_start|>user\n<0x0A>",
        "byte-fallback.txt": "\U0001F9EA\U00010348\U000E0041\uffff\U0010FFFF",
        "code.txt": "int main(void) {\n\treturn x->y[0] >= 2 ? a && b : ~c;\n}\n",
        "repeated.txt": "!!!!!!" + "a" * 64 + " " * 40 + "\n" * 8,
        "mixed-scripts.txt": "Hello\u4e16\u754c\u0645\u0631\u062d\u0628\u0627\U0001F30DHola",
    }
    out = {k: v.encode("utf-8") for k, v in texts.items()}
    out["empty.txt"] = b""
    # Invalid UTF-8, one kind each: refused at the first bad byte, then repaired and round-tripped.
    out["bad-utf8-lone-continuation.txt"] = b"ab\x80cd"
    out["bad-utf8-truncated.txt"] = b"caf\xc3"
    out["bad-utf8-truncated-4.txt"] = b"x\xf0\x9f\x98 y"
    out["bad-utf8-overlong.txt"] = b"\xc0\xafetc \xe0\x80\xaf"
    out["bad-utf8-surrogate.txt"] = b"\xed\xa0\x80\xed\xbf\xbf"
    out["bad-utf8-too-big.txt"] = b"\xf4\x90\x80\x80\xf8\x88\x80\x80\x80"
    out["bad-utf8-latin1.txt"] = "F\u00fchrer na\u00efve".encode("latin-1")
    out["bad-utf8-ff.txt"] = b"Hello \xff\xfe world"
    return out


# ---- grammars ---------------------------------------------------------------------------------

JSON_GBNF = r"""root   ::= ws object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" char* "\"" ws
char   ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""


def grammar_seeds():
    g = {
        "json.gbnf": (JSON_GBNF, '{"a": [1, 2.5e3, "x\\u00e9"], "b": {}}'),
        "yes-no.gbnf": ('root ::= ("yes" | "no") "."\n', "yes."),
        "repeat.gbnf": ('root ::= "a"{2,5} [0-9]* ("x" | "y")+ "z"?\n', "aaa123xyxz"),
        "unicode.gbnf": ("root ::= [\\u4e00-\\u9fff\u00e9]+ . [^\\x00-\\x7f]\n",
                         "\u4e2d\u00e9\u00e9x\U0001F600"),
        "nested.gbnf": ("# lists\nroot ::= item (\",\" item)*\nitem ::= (\n  \"x\" |\n"
                        "  \"[\" root \"]\"\n)\n", "[x,[x,x]],x"),
        "ambiguous.gbnf": ('root ::= "a" root "b" | "a" root | ""\n', "a" * 40 + "b" * 3),
        "escapes.gbnf": ('root ::= "\\x41\\u00e9\\U0001F600\\n\\t\\"\\\\" [\\]\\[\\-\\^]\n',
                         "A\u00e9\U0001F600\n\t\"\\]"),
        "bad-undefined.gbnf": ("root ::= foo\n", ""),
        "bad-left-recursion.gbnf": ('root ::= root "a" | "b"\n', "b"),
        "bad-unclosed.gbnf": ('root ::= ("a" | "b"\n', ""),
    }
    return {k: t.encode("utf-8") + b"\0" + o.encode("utf-8") for k, (t, o) in g.items()}


# ---- multipart uploads -----------------------------------------------------------------------

def multipart_seeds():
    ct = b"multipart/form-data; boundary=XyZ123"
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}\n'
    ok = (b"--XyZ123\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
          b"--XyZ123\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
          b"Content-Type: application/jsonl\r\n\r\n" + line + b"\r\n--XyZ123--\r\n")
    return {
        "upload": ct + b"\0" + ok,
        "quoted-boundary": b'multipart/form-data; boundary="a b"\0--a b\r\nContent-Disposition: '
                           b'form-data; name=x\r\n\r\n1\r\n--a b--',
        "preamble": ct + b"\0preamble\r\n" + ok,
        "empty-part": ct + b"\0--XyZ123\r\n\r\n\r\n--XyZ123--",
        "unterminated": ct + b"\0" + ok[:60],
        "no-boundary": b"multipart/form-data\0" + ok,
        "not-multipart": b"application/json\0{}",
    }


# ---- tool calls in model output --------------------------------------------------------------

def tools_seeds():
    hermes, llama3, mistral, in_call = 0, 1, 2, 4
    call = '{"name": "weather", "arguments": {"city": "Paris", "days": [1, {"n": -2.5e1}]}}'
    t = {
        "hermes-content-two-calls": (hermes, 3, "Let me look.\n<tool_call>\n" + call +
                                     "\n</tool_call>\n<tool_call>{\"name\": \"time\"}</tool_call>"),
        "hermes-not-a-call": (hermes, 1, "a <tool> <tool_call>{\"args\": 1}</tool_call> <tool_c"),
        "hermes-args-first": (hermes, 5, '<tool_call>{"arguments": "{\\"x\\": 1}", "id": [1], '
                                         '"name": "f\\u00e9"}</tool_call>'),
        "hermes-cut-short": (hermes, 2, "<tool_call>\n" + call[:40]),
        "llama3-bare": (llama3, 4, '\n{"name": "f", "parameters": {"q": "a\\"b"}}'),
        "llama3-tag": (llama3, 7, 'Sure.<|python_tag|>[{"name": "f", "parameters": null}]'),
        "llama3-content": (llama3, 0, '{"a": 1} is JSON'),
        "mistral-marker": (mistral, 6,
                           "[TOOL_CALLS][" + call + ', {"name": "g", "arguments": {}}]'),
        "mistral-in-call": (mistral | in_call, 9, "[" + call + "]"),
        "mistral-empty": (mistral, 1, "x [TOOL_CALLS] [] y"),
    }
    return {k: bytes([f, p]) + o.encode("utf-8") for k, (f, p, o) in t.items()}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for target, seeds in [("fuzz_gguf", gguf_seeds()), ("fuzz_http", http_seeds()),
                          ("fuzz_oai", oai_seeds()), ("fuzz_tok", tok_seeds()),
                          ("fuzz_grammar", grammar_seeds()),
                          ("fuzz_multipart", multipart_seeds()), ("fuzz_tools", tools_seeds())]:
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
