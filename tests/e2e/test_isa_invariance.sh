#!/usr/bin/env bash
# Kernel tables that share their numerics give bitwise equal logits: `spindle generate
# --logits-hash` under each SPINDLE_ISA this CPU has, on F32, Q8_0, Q4_0 and K-quant models.
# Every x86 table multiplies Q8_0/Q4_0 with exact int32 block sums (packed.h) and Q4_K/Q5_K/Q6_K
# with exact int32 super-block sums (packed_k.h), so the quantized models give one hash on avx2,
# avxvnni, avx512 and amx; F32 products still sum in 8 lanes (avx2, avxvnni) or 16 (avx512,
# amx). The K-quant models (q4_k_m: Q4_K and Q6_K; q5_k_m: Q5_K and Q6_K) need rows of 256:
# n_embd 256, n_ff 512. The scalar table is printed for information.
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
for t in q4_k_m q5_k_m; do
    "$bin" mkmodel -o "$tmp/k-$t.gguf" --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 \
        --n-ff 512 --type $t --seed 7 --vocab-from "$vocab" >/dev/null
done
failed=0
# model, then its classes of tables that must agree (separated by |)
for spec in "$shared/models/stories260K.gguf:avx2 avxvnni|avx512 amx" \
    "$shared/models/TinyStories-656K-Q8_0.gguf:avx2 avxvnni avx512 amx" \
    "$tmp/tiny-q8_0.gguf:avx2 avxvnni avx512 amx" "$tmp/tiny-q4_0.gguf:avx2 avxvnni avx512 amx" \
    "$tmp/k-q4_k_m.gguf:avx2 avxvnni avx512 amx" "$tmp/k-q5_k_m.gguf:avx2 avxvnni avx512 amx"; do
    model=${spec%%:*}
    IFS='|' read -r -a classes <<<"${spec#*:}"
    declare -A ref=()
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
        for c in "${!classes[@]}"; do
            [[ " ${classes[$c]} " == *" $isa "* ]] || continue
            if [[ -z "${ref[$c]:-}" ]]; then
                ref[$c]=$hash
            elif [[ "$hash" != "${ref[$c]}" ]]; then
                echo "FAIL: $(basename "$model"): $isa gives $hash, not ${ref[$c]}" >&2
                failed=1
            fi
        done
    done
    unset ref
done
[[ $failed -eq 0 ]] && echo "isa invariance: passed"
exit $failed
