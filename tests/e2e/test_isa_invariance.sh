#!/usr/bin/env bash
# Every kernel table computes one numerics (src/tensor/kernels.h), so a request's logits are the
# same bits under every SPINDLE_ISA: `spindle generate --logits-hash` on every F32, F16, Q8_0,
# Q4_0 and K-quant model of ../shared/models and ../shared/models/random (and tiny Q8_0/Q4_0 and
# Q4_K_M/Q5_K_M ones made here) gives one hash under scalar, avx2, avxvnni, avx512 and amx, with
# an F16 and an F32 KV cache. The K-quant models made here (q4_k_m: Q4_K and Q6_K; q5_k_m: Q5_K
# and Q6_K) need rows of 256: n_embd 256, n_ff 512.
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
prompt="Once upon a time, in a small town by the sea, there lived a girl who loved to read books \
about the stars and the moon and the long roads between them."
all="scalar avx2 avxvnni avx512 amx"
failed=0
# model, then its classes of tables that must agree (separated by |)
for spec in "$shared/models/stories260K.gguf:$all" \
    "$shared/models/TinyStories-656K-F32.gguf:$all" \
    "$shared/models/TinyStories-656K-Q8_0.gguf:$all" \
    "$shared/models/random/qwen2-gpt2vocab-f32.gguf:$all" \
    "$shared/models/random/phi3-spm-f32.gguf:$all" \
    "$shared/models/random/llama3rope-spm-f16.gguf:$all" \
    "$shared/models/random/llama-spm-q4k.gguf:$all" \
    "$tmp/tiny-q8_0.gguf:$all" "$tmp/tiny-q4_0.gguf:$all" \
    "$tmp/k-q4_k_m.gguf:$all" "$tmp/k-q5_k_m.gguf:$all"; do
    model=${spec%%:*}
    IFS='|' read -r -a classes <<<"${spec#*:}"
    for kv in f16 f32; do
        declare -A ref=()
        for isa in $all; do
            line=$(SPINDLE_ISA=$isa SPINDLE_LOG=off "$bin" generate -m "$model" -p "$prompt" \
                -n 24 -t 2 --kv-type $kv --logits-hash 2>&1 >/dev/null | grep 'logits hash') ||
                true
            got=$(sed -n 's/.*(kernels: \(.*\))/\1/p' <<<"$line")
            hash=$(sed -n 's/.*logits hash \([0-9a-f]*\).*/\1/p' <<<"$line")
            name="$(basename "$model") kv $kv"
            if [[ -z "$hash" ]]; then
                echo "FAIL: no hash for $name under $isa" >&2
                failed=1
                continue
            fi
            if [[ "$got" != "$isa" ]]; then
                echo "$name $isa: not on this CPU"
                continue
            fi
            echo "$name $isa: $hash"
            for c in "${!classes[@]}"; do
                [[ " ${classes[$c]} " == *" $isa "* ]] || continue
                if [[ -z "${ref[$c]:-}" ]]; then
                    ref[$c]=$hash
                elif [[ "$hash" != "${ref[$c]}" ]]; then
                    echo "FAIL: $name: $isa gives $hash, not ${ref[$c]}" >&2
                    failed=1
                fi
            done
        done
        unset ref
    done
done
[[ $failed -eq 0 ]] && echo "isa invariance: passed"
exit $failed
