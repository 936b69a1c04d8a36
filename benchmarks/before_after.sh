#!/usr/bin/env bash
# A refactor's cost, side by side in one session on one machine: the policy round
# (scheduler_overhead.py), the engine's decode over HTTP (decode_throughput.py) and the
# engine's per-step Python work in the simulator (sim_speed.py, CPU time), each run at
# REV (from a temporary worktree, with its own scripts) and at the working tree, in turns.
#
#     benchmarks/before_after.sh REV [OUT]      # e.g. benchmarks/before_after.sh 16fd5e2
set -euo pipefail
rev=$1
root=$(git rev-parse --show-toplevel)
out=${2:-$root/benchmarks/results/before-after-$(git rev-parse --short HEAD)}
py=$root/.venv/bin/python
tree=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tree"' EXIT
git -C "$root" worktree add -q --detach "$tree" "$rev"
mkdir -p "$out"
{
  echo "# Before/after: $rev vs $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo ' (dirty)')"
  echo
  echo "- command: \`benchmarks/before_after.sh $*\`"
  echo "- machine: $($py -c 'from autellix.machine import this_machine; print(this_machine())')"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$out/README.md"

run() {  # run LABEL SRC SCRIPT ARGS...: one benchmark at one tree
  local label=$1 src=$2 script=$3; shift 3
  echo "## $script at $label" >> "$out/README.md"
  echo '```' >> "$out/README.md"
  (cd "$src" && PYTHONPATH=$src/src $py "$src/benchmarks/$script" "$@") 2>&1 |
    grep -v "Loading weights" | tail -n 20 >> "$out/README.md"
  echo '```' >> "$out/README.md"
}

for script_args in \
  "scheduler_overhead.py --calls 1000 10000 --rounds 500" \
  "sim_speed.py --horizon 60 --replicas 1 8 --loads 1" \
  "decode_throughput.py"; do
  # shellcheck disable=SC2086
  run "$rev (before)" "$tree" $script_args
  # shellcheck disable=SC2086
  run "HEAD (after)" "$root" $script_args
done
echo "written: $out/README.md"
