#!/usr/bin/env bash
# Kernel tables that share their numerics give bitwise equal logits: `spindle generate
# --logits-hash` under each SPINDLE_ISA this CPU has, on an F32, a Q8_0 and a Q4_0 model. Today
# avx512 and amx share Q8_0/Q4_0 numerics (exact int32 block sums, packed_x86.h) and everything
# else; scalar and avx2/avxvnni are printed for information.
set -euo pipefail
bin=${SP_BUILD_DIR:?}/spindle
shared=${SP_SHARED_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vocab=$shared/vocab/ggml-vocab-llama-spm.gguf
for t in q4_0 q8_0; do
    "$bin" mkmodel -o "$tmp/tiny-$t.gguf" --preset tiny --type $t --seed 7 --vocab-from "$vocab" \
        >/dev/null
done
same=(avx512 amx)
failed=0
for model in "$shared/models/stories260K.gguf" "$shared/models/TinyStories-656K-Q8_0.gguf" \
    "$tmp/tiny-q8_0.gguf" "$tmp/tiny-q4_0.gguf"; do
    ref=
    for isa in scalar avx2 avxvnni avx512 amx; do
        line=$(SPINDLE_ISA=$isa SPINDLE_LOG=off "$bin" generate -m "$model" -p "Once upon a time" \
            -n 24 -t 2 --logits-hash 2>&1 >/dev/null | grep 'logits hash') || true
        got=$(sed -n 's/.*(kernels: \(.*\))/\1/p' <<<"$line")
        hash=$(sed -n 's/.*logits hash \([0-9a-f]*\).*/\1/p' <<<"$line")
        [[ -n "$hash" ]] || { echo "FAIL: no hash for $model under $isa" >&2; failed=1; continue; }
        if [[ "$got" != "$isa" ]]; then
            echo "$(basename "$model") $isa: not on this CPU"
            continue
        fi
        echo "$(basename "$model") $isa: $hash"
        if [[ " ${same[*]} " == *" $isa "* ]]; then
            if [[ -z "$ref" ]]; then
                ref=$hash
            elif [[ "$hash" != "$ref" ]]; then
                echo "FAIL: $(basename "$model"): $isa gives $hash, not $ref" >&2
                failed=1
            fi
        fi
    done
done
[[ $failed -eq 0 ]] && echo "isa invariance: passed"
exit $failed
