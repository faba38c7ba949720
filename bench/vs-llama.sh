#!/usr/bin/env bash
# Spindle beside llama.cpp on the same files and the same instructions, alternating runs.
#
#   bench/vs-llama.sh [MODEL_DIR] [ROUNDS]
#
# For each model (1.1B Q8_0, 1.1B Q4_0, 1.1B Q4_K_M, 125M Q8_0; generated into MODEL_DIR, default
# build/bench-models, when absent) and each instruction set (Spindle's best table against the
# peer build that matches this CPU; on an AMX CPU also SPINDLE_ISA=avx512 against the peer's
# avx512 build, standing in for an AVX-512 CPU without AMX; then SPINDLE_ISA=avx2 against the
# peer's avx2 build):
# decode at 1, 8 and 32 streams and a 512-token prefill, ROUNDS (default 2) alternating rounds
# of both programs. Prints one markdown table: both programs' figures (tok/s, each round) and the
# ratio of the medians. At 32 streams the peer's figure is its best aggregate at any batch size
# (llama-batched-bench at 8, 16 and 32 sequences: the highest S_TG). Peer builds: ../shared/peers/llama.cpp/{amx,avx512,avx2} (its README).
# Then, per model, Spindle's one-stream figures against the memory-bandwidth bound of
# `spindle roofline` run right after (weights and KV read per step over the triad bandwidth).
# MODELS (comma-separated "preset type" pairs) and THREADS override the defaults. Progress goes
# to stderr. Record the output in bench/RESULTS.md with the date and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
dir=${1:-build/bench-models}
rounds=${2:-2}
peers=${PEERS_DIR:-../shared/peers/llama.cpp}
threads=${THREADS:-2}

flags=$(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')
best_peer=avx2
if [[ "$flags" == *avx512_vnni* && "$flags" == *avx512_bf16* && "$flags" == *avx512vbmi* ]]; then
    best_peer=avx512
    [[ "$flags" == *amx_int8* ]] && best_peer=amx
fi
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)

# spindle_run ISA MEASURE MODEL -> tok/s
spindle_run() {
    local isa=$1 what=$2 model=$3 line
    case $what in
    b1) line=$(SPINDLE_ISA=$isa "$bin" bench -m "$model" -t "$threads" --requests 4 \
        --prompt-len 32 --gen-len 32 --concurrency 1 2>/dev/null | tail -1)
        awk '{print $3}' <<<"$line" ;;
    b8 | b32) local n=${what#b}
        line=$(SPINDLE_ISA=$isa "$bin" bench -m "$model" -t "$threads" --requests 32 \
            --prompt-len 32 --gen-len 32 --concurrency "$n" 2>/dev/null | tail -1)
        awk '{print $3}' <<<"$line" ;;
    pp512) line=$(SPINDLE_ISA=$isa "$bin" bench -m "$model" -t "$threads" --requests 2 \
        --prompt-len 512 --gen-len 4 --concurrency 1 2>/dev/null | tail -1)
        awk '{print $2}' <<<"$line" ;;
    esac
}

# peer_run BUILD MEASURE MODEL -> tok/s (tg64; S_TG at 8 sequences; the best S_TG at 8, 16 and 32
# sequences; pp512)
peer_run() {
    local p=$peers/$1 what=$2 model=$3
    case $what in
    b1) "$p/llama-bench" -m "$model" -t "$threads" -p 0 -n 64 -r 1 2>/dev/null |
        awk -F'|' '/tg64/ {split($(NF-1), a, " "); print a[1]}' ;;
    b8 | b32) local npl=$([[ $what == b8 ]] && echo 8 || echo 8,16,32)
        "$p/llama-batched-bench" -m "$model" -t "$threads" -c 4096 -b 512 -ub 512 -npp 32 \
            -ntg 32 -npl "$npl" 2>/dev/null |
            awk -F'|' '$4 ~ /^ *[0-9]+ *$/ {gsub(/ /, "", $9); if ($9 + 0 > best) best = $9 + 0}
                END {print best}' ;;
    pp512) "$p/llama-bench" -m "$model" -t "$threads" -p 512 -n 0 -r 1 2>/dev/null |
        awk -F'|' '/pp512/ {split($(NF-1), a, " "); print a[1]}' ;;
    esac
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "CPU: $cpu; $threads threads; peer builds: $best_peer and avx2; $rounds alternating rounds"
echo
echo "| model | table / peer build | measure | llama.cpp | Spindle | Spindle / llama.cpp |"
echo "| --- | --- | --- | ---: | ---: | ---: |"
bounds=""
IFS=',' read -r -a specs <<<"${MODELS:-1.1b q8_0,1.1b q4_0,1.1b q4_k_m,125m q8_0}"
for spec in "${specs[@]}"; do
    read -r preset type <<<"$spec"
    model=$dir/$preset-$type.gguf
    bench_model "$model" "$preset" "$type" >&2
    pairs=("auto:$best_peer")
    [[ $best_peer == amx ]] && pairs+=("avx512:avx512")
    pairs+=("avx2:avx2")
    for pair in "${pairs[@]}"; do
        isa=${pair%%:*} peer=${pair#*:}
        for what in b1 b8 b32 pp512; do
            s_all="" p_all=""
            for r in $(seq "$rounds"); do
                echo "[$preset $type, $isa vs $peer, $what, round $r/$rounds]" >&2
                p_all="$p_all $(peer_run "$peer" $what "$model")"
                s_all="$s_all $(spindle_run "$isa" $what "$model")"
            done
            pm=$(median <<<"$p_all") sm=$(median <<<"$s_all")
            ratio=$(awk -v s="$sm" -v p="$pm" 'BEGIN {printf (p > 0 ? "%.2fx" : "-"), s / p}')
            label=$([[ $isa == auto ]] && echo "best / $peer" || echo "$isa / $peer")
            echo "| $preset $type | $label | $what | ${p_all# } | ${s_all# } | $ratio |"
            [[ $what == b1 ]] && b1s="${b1s:-} $isa=$sm"
        done
    done
    # The batch-1 bound at the bench's mean context (32-token prompts, 32 generated).
    echo "[$preset $type, roofline]" >&2
    roof=$("$bin" roofline -m "$model" -t "$threads" --ctx 48)
    bw=$(sed -n 's/^memory bandwidth[^:]*: *\([0-9.]*\).*/\1/p' <<<"$roof")
    bound=$(awk '$1 == "1" && NF == 6 {print $4}' <<<"$roof")
    for b in ${b1s:-}; do
        bounds+="| $preset $type | ${b%%=*} | $bw | $bound | ${b#*=} | $(awk -v s="${b#*=}" -v b="$bound" 'BEGIN {printf "%.2f", s / b}') |"$'\n'
    done
    b1s=""
done
echo
echo "| model | table | triad GB/s | bandwidth bound, 1 stream (tok/s) | Spindle, 1 stream | fraction |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
printf '%s' "$bounds"
