#!/usr/bin/env bash
# `spindle perplexity`: the perplexity it prints is the one its saved log-probabilities give when
# scored again in Python (chunks from BOS, the second half of each); a model compared with its
# own base has KL divergence 0 and the same top token everywhere; the Q8_0 model against the F32
# one has a small positive divergence; mismatched bases, short texts and missing files get clear
# errors; a terminal gets a progress bar.
set -euo pipefail
bin=${SP_BUILD_DIR:?}/spindle
models=${SP_SHARED_DIR:?}/models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
/usr/bin/python3 - "$work/story.txt" <<'PY'
import random, sys
random.seed(3)
names = ["Lily", "Tom", "Sara", "Ben", "Mia", "Max"]
things = ["ball", "cat", "dog", "tree", "cake", "car", "book", "flower"]
out = []
for _ in range(60):
    n, t, u = random.choice(names), random.choice(things), random.choice(things)
    out.append(f"Once upon a time, there was a little girl named {n}. She loved to play with her "
               f"{t}. One day, {n} saw a big {u} in the park. She was very happy. She ran to the "
               f"{u} and said, \"Hello, {u}! Do you want to play with me?\" {n} smiled.")
open(sys.argv[1], "w").write("\n\n".join(out))
PY
f32=$models/TinyStories-656K-F32.gguf
q8=$models/TinyStories-656K-Q8_0.gguf
ppl() { sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p' "$1"; }

"$bin" perplexity -m "$f32" -f "$work/story.txt" -c 96 --kl-divergence-base "$work/base.bin" \
    >"$work/base.out" 2>"$work/base.err" || fail "the base run failed: $(cat "$work/base.err")"
[[ -n $(ppl "$work/base.out") ]] || fail "no perplexity printed: $(cat "$work/base.out")"

# The saved rows are log-probabilities (each sums to 1); scoring them again gives the PPL.
/usr/bin/python3 - "$work/base.bin" "$(ppl "$work/base.out")" <<'PY' || fail "rescoring"
import math, struct, sys
import numpy as np
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"SPKLBASE", data[:8]
version, n_vocab, n_ctx, n_chunks = struct.unpack_from("<4I", data, 8)
(n_tokens,) = struct.unpack_from("<Q", data, 24)
assert version == 1 and n_ctx == 96 and n_chunks == n_tokens // n_ctx, (n_ctx, n_chunks)
toks = np.frombuffer(data, dtype="<u4", count=n_tokens, offset=32)
first = n_ctx // 2
per_chunk = n_ctx - 1 - first
lp = np.frombuffer(data, dtype="<f4", offset=32 + 4 * n_tokens).reshape(-1, n_vocab)
assert lp.shape[0] == n_chunks * per_chunk, lp.shape
sums = np.exp(lp.astype(np.float64)).sum(axis=1)
assert np.abs(sums - 1).max() < 1e-4, np.abs(sums - 1).max()
nll = []
for c in range(n_chunks):
    for k in range(per_chunk):
        nxt = toks[c * n_ctx + first + k + 1]
        nll.append(-float(lp[c * per_chunk + k, nxt]))
mine = math.exp(sum(nll) / len(nll))
assert abs(mine - float(sys.argv[2])) <= 1e-4 * mine, (mine, sys.argv[2])
PY

kld() { sed -n "s/^$2: \([0-9.]*\).*/\1/p" "$1"; }
"$bin" perplexity -m "$f32" -f "$work/story.txt" -c 96 --kl-divergence-base "$work/base.bin" \
    --kl-divergence >"$work/same.out" 2>/dev/null || fail "comparing with itself failed"
[[ $(kld "$work/same.out" "Mean KLD") == 0.000000 ]] || fail "self KLD: $(cat "$work/same.out")"
[[ $(kld "$work/same.out" "Same top token") == 100.000 ]] || fail "self top: $(cat "$work/same.out")"
[[ $(ppl "$work/same.out") == $(ppl "$work/base.out") ]] || fail "the same model, another PPL"

"$bin" perplexity -m "$q8" -f "$work/story.txt" -c 96 --kl-divergence-base "$work/base.bin" \
    --kl-divergence >"$work/q8.out" 2>/dev/null || fail "comparing Q8_0 failed"
/usr/bin/python3 - "$(kld "$work/q8.out" "Mean KLD")" "$(kld "$work/q8.out" "Same top token")" <<'PY' \
    || fail "Q8_0 against F32: $(cat "$work/q8.out")"
import sys
kl, top = float(sys.argv[1]), float(sys.argv[2])
assert 0 < kl < 0.01 and 90 < top < 100, (kl, top)
PY

# Errors: a base of another context, a text shorter than a chunk, a missing file, no base.
if "$bin" perplexity -m "$f32" -f "$work/story.txt" -c 64 --kl-divergence-base "$work/base.bin" \
    --kl-divergence >/dev/null 2>"$work/err"; then fail "a base of another -c was taken"; fi
grep -q "another vocabulary, -c or text" "$work/err" || fail "mismatch: $(cat "$work/err")"
echo "Once upon a time." >"$work/short.txt"
if "$bin" perplexity -m "$f32" -f "$work/short.txt" >/dev/null 2>"$work/err"; then
    fail "a text shorter than a chunk was taken"
fi
grep -q "fewer than one chunk" "$work/err" || fail "short text: $(cat "$work/err")"
if "$bin" perplexity -m "$f32" -f "$work/nothere.txt" >/dev/null 2>"$work/err"; then
    fail "a missing text was taken"
fi
grep -q "cannot read" "$work/err" || fail "missing text: $(cat "$work/err")"
set +e
"$bin" perplexity -m "$f32" -f "$work/story.txt" --kl-divergence >/dev/null 2>"$work/err"
[[ $? == 2 ]] || fail "--kl-divergence without a base is a usage error"
set -e

if command -v script >/dev/null; then
    script -qec "'$bin' perplexity -m '$f32' -f '$work/story.txt' -c 96" /dev/null \
        >"$work/tty.log" 2>&1 || fail "the run failed on a terminal"
    grep -q "chunk .*ETA" "$work/tty.log" || fail "no progress bar on a terminal"
fi
echo "perplexity: ok"
