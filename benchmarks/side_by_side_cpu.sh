#!/usr/bin/env bash
# Issue 5's side-by-side run on this machine: one workload, the same programs and rates,
# the same max running calls and KV pool for every endpoint:
#   vllm      Autellix engine, FCFS, no prefix caching
#   vllm-opt  Autellix engine, FCFS, prefix caching
#   mlfq      Autellix engine, request-level MLFQ
#   atlas     Autellix (program-level ATLAS; equals PLAS for single-threaded programs)
#   vllm-cpu       the real vLLM (benchmarks/peers/vllm_cpu.sh), FCFS
#   vllm-cpu-prio  the real vLLM in priority mode, each call stamped with its program's
#                  decode tokens so far (client-side PLAS)
#
#   benchmarks/side_by_side_cpu.sh WORKLOAD PROGRAMS SCALE RATE...
#   e.g. benchmarks/side_by_side_cpu.sh mixed 16 0.1 0.1 0.2 0.4 0.8
#
# Results: benchmarks/results/cpu-WORKLOAD/ (summary.md, latency.png, results.json, csv).
# Knobs: MAX_RUNNING [4], KV_GIB [1], PEERS [1] (0 skips the vllm-cpu runs),
#   VARIANTS [the four above] which of ours to serve ("" for none),
#   APPEND [0] (1 adds to a saved run; a rate run again replaces the old one),
#   BENCH_ARGS [] more `autellix bench` flags, e.g. --workload-arg lats.iterations=2,
#   OUT [benchmarks/results/cpu-WORKLOAD].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

workload=$1 programs=$2 scale=$3
shift 3
rates=("$@")
max_running=${MAX_RUNNING:-4}
kv_gib=${KV_GIB:-1}
out=${OUT:-benchmarks/results/cpu-$workload}
read -ra extra <<<"${BENCH_ARGS:-}"
bench=(.venv/bin/autellix bench "$workload" --programs "$programs" --scale "$scale"
    --rates "${rates[@]}" --baseline vllm --out "$out" "${extra[@]}")
read -ra variants <<<"${VARIANTS-vllm=fcfs:--no-prefix-caching vllm-opt=fcfs:--no-kv-retention mlfq atlas}"

if (( ${#variants[@]} )); then
    [[ "${APPEND:-0}" == 1 ]] && first=(--append) || first=()
    "${bench[@]}" "${first[@]}" --serve-args "--max-running $max_running --kv-cache-gib $kv_gib" \
        --policies "${variants[@]}" || true
fi

if [[ "${PEERS:-1}" == 1 ]]; then
    peer=benchmarks/peers/vllm_cpu.sh
    $peer setup
    export VLLM_CPU_KVCACHE_SPACE=$kv_gib VLLM_CPU_NUM_OF_RESERVED_CPU=0
    trap '$peer stop 8100' EXIT
    for mode in fcfs priority; do
        $peer serve 8100 --max-num-seqs "$max_running" --scheduling-policy "$mode"
        if [[ $mode == fcfs ]]; then
            "${bench[@]}" --append --policies --peer vllm-cpu=http://127.0.0.1:8100/v1 \
                --model SmolLM2-135M-Instruct || true
        else
            "${bench[@]}" --append --policies --peer-priority vllm-cpu-prio=http://127.0.0.1:8100/v1 \
                --model SmolLM2-135M-Instruct || true
        fi
        $peer stop 8100
    done
fi
