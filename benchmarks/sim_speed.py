"""How fast the simulator runs: CPU seconds to simulate an hour of a cluster.

Programs of the mixed workload arrive for HORIZON simulated seconds at LOAD x the rate one
replica of Llama-3.1-8B on an A100 sustains near its knee (0.3 programs/s, from
benchmarks/results/sim/mixed), times the replica count, and the run drains. Time is the
process's CPU time (the simulator is one thread; CPU time does not count what other jobs on
a shared machine take). The hour's cost is scaled from the horizon by the programs, which
is what the work grows with (the horizon 3600 measures it outright).

First, fast-forward off (every engine step run one by one, as before it existed) and on,
side by side on the same programs over --compare seconds: their CPU time, and whether every
call's start, first token and end agree to the bit. The first few minutes are a warm-up
(replicas fill to the steady state's ~28 running calls), and cost less per simulated second
than the rest: compare over 600 s, not less. Then each --replicas count with
fast-forward on over the horizon. The results folder records the command, machine and
commit; with --profile, the cProfile summary of a run of the first --replicas count (at
most 300 s of arrivals, untimed) goes beside it.
With --before REV, the --compare run is also timed on the code of commit REV (a temporary
git worktree), as the code stood before.

    .venv/bin/python benchmarks/sim_speed.py [--horizon 3600] [--replicas 8] [--compare 600]
        [--before REV] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autellix.engine.config import EngineConfig
from autellix.machine import this_commit, this_machine
from autellix.sim.sweep import roofline_target, simulate
from autellix.workloads import build_workload

RATE_PER_REPLICA = 0.3


def run(replicas: int, load: float, horizon: float, fast_forward: bool):
    engine = EngineConfig(policy="atlas", max_running=256, max_prefill_tokens=2048)
    target = roofline_target("a100", "llama-3.1-8b", None, engine.block_size)
    rate = load * RATE_PER_REPLICA * replicas
    specs = build_workload("mixed", max(1, round(rate * horizon)), rate=rate, seed=0)
    start = time.process_time()
    records, sim = simulate(specs, engine, target, replicas=replicas, fast_forward=fast_forward)
    cpu = time.process_time() - start
    timeline = [(c.start, c.first_token, c.end) for r in records for c in r.calls]
    row = {
        "programs": len(specs),
        "calls": len(timeline),
        "steps": sum(r.steps for r in sim.replicas),
        "simulated": sim.now,
        "cpu": cpu,
        "hour": cpu * 3600 / horizon,
    }
    return row, timeline


BEFORE = """
import json, sys, time
from autellix.engine.config import EngineConfig
from autellix.sim.sweep import roofline_target, simulate
from autellix.workloads import build_workload
replicas, rate, count = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
engine = EngineConfig(policy="atlas", max_running=256, max_prefill_tokens=2048)
target = roofline_target("a100", "llama-3.1-8b", None, engine.block_size)
specs = build_workload("mixed", count, rate=rate, seed=0)
start = time.process_time()
records, sim = simulate(specs, engine, target, replicas=replicas)
cpu = time.process_time() - start
print(json.dumps({"programs": len(specs), "calls": sum(len(r.calls) for r in records),
    "steps": sum(r.steps for r in sim.replicas), "simulated": sim.now, "cpu": cpu}))
"""


def run_before(rev: str, replicas: int, load: float, horizon: float) -> dict:
    """The same run on the code of commit `rev`, in a temporary worktree."""
    rate = load * RATE_PER_REPLICA * replicas
    count = max(1, round(rate * horizon))
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree / "src")}
            args = [sys.executable, "-c", BEFORE, str(replicas), str(rate), str(count)]
            out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["hour"] = row["cpu"] * 3600 / horizon
    return row


def line(replicas: int, load: float, horizon: float, mode: str, row: dict) -> str:
    return (
        f"| {replicas} | {load:g} | {horizon:g} | {mode} | {row['programs']} | {row['calls']} "
        f"| {row['steps']} | {row['simulated']:.0f} | {row['cpu']:.1f} | {row['hour']:.0f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--horizon", type=float, default=3600.0, help="simulated seconds of arrivals")
    p.add_argument("--replicas", type=int, nargs="+", default=[8])
    p.add_argument("--load", type=float, default=1.0)
    p.add_argument(
        "--compare", type=float, default=600.0, help="horizon of the side by side (0: none)"
    )
    p.add_argument("--compare-replicas", type=int, default=8)
    p.add_argument("--before", help="a commit to time the --compare run on too")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=None, help="results folder (default: by commit)")
    args = p.parse_args()
    commit = this_commit()
    out = Path(args.out or f"benchmarks/results/sim-speed-{commit.replace('+', '-')}")
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Simulator speed",
        "",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: {this_machine()}",
        f"- commit: {commit}",
        "- mixed workload, Llama-3.1-8B on A100-80GB (roofline), ATLAS, 256 running calls,"
        f" 2,048 prefill tokens a step; load {args.load:g} = {args.load * RATE_PER_REPLICA:g}"
        " programs/s per replica; CPU seconds of the simulator; 'hour' = CPU s x 3600 / horizon",
        "",
        "| replicas | load | horizon (s) | fast-forward | programs | calls | engine steps"
        " | simulated s | CPU s | one hour (CPU s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def emit(text: str) -> None:
        lines.append(text)
        print(text, flush=True)
        (out / "summary.md").write_text("\n".join(lines) + "\n")

    for text in lines[:-1]:
        print(text)
    n = args.compare_replicas
    if args.compare:
        if args.before:
            before = run_before(args.before, n, args.load, args.compare)
            emit(line(n, args.load, args.compare, f"none (commit {args.before})", before))
        slow, slow_timeline = run(n, args.load, args.compare, False)
        emit(line(n, args.load, args.compare, "off", slow))
        fast, fast_timeline = run(n, args.load, args.compare, True)
        emit(line(n, args.load, args.compare, "on", fast))
    for replicas in args.replicas:
        row, _ = run(replicas, args.load, args.horizon, True)
        emit(line(replicas, args.load, args.horizon, "on", row))
    if args.profile:  # a run of its own: the profiler slows what it watches
        profile = cProfile.Profile()
        profile.runcall(run, args.replicas[0], args.load, min(args.horizon, 300.0), True)
        text = io.StringIO()
        # file names only: the machine's paths stay out of the results
        pstats.Stats(profile, stream=text).strip_dirs().sort_stats("tottime").print_stats(25)
        (out / "profile.txt").write_text(text.getvalue())
    if args.compare:
        same = "the same, to the bit" if fast_timeline == slow_timeline else "NOT the same"
        speedup = slow["cpu"] / fast["cpu"]
        emit("")
        emit(
            f"Side by side ({n} replicas, {args.compare:g} s): fast-forward {speedup:.2f}x"
            f" faster; every call's start, first token and end {same}."
        )


if __name__ == "__main__":
    main()
