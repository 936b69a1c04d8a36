"""How fast the simulator runs: simulated seconds per wall second, by cluster size and load.

Programs of the mixed workload arrive for HORIZON simulated seconds at LOAD x the rate
one replica of Llama-3.1-8B on an A100 sustains near its knee (0.3 programs/s, from
benchmarks/results/sim/mixed), times the replica count; the run drains, and the wall
time of the whole simulation is measured as the process's CPU time (the simulator is one
thread; CPU time does not count what other jobs on a shared machine take). The time to
simulate one hour of the cluster is extrapolated linearly from the rate measured here.

    .venv/bin/python benchmarks/sim_speed.py [--horizon 300] [--replicas 1 8] [--loads 0.5 1 2]
"""

from __future__ import annotations

import argparse
import time

from autellix.engine.config import EngineConfig
from autellix.sim.sweep import roofline_target, simulate
from autellix.workloads import build_workload

RATE_PER_REPLICA = 0.3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--horizon", type=float, default=300.0, help="simulated seconds of arrivals")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 8])
    p.add_argument("--loads", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = p.parse_args()
    engine = EngineConfig(policy="atlas", max_running=256, max_prefill_tokens=2048)
    target = roofline_target("a100", "llama-3.1-8b", None, engine.block_size)
    print(
        "| replicas | load | programs | calls | engine steps | simulated s | CPU s "
        "| simulated s / CPU s | one simulated hour (CPU s, extrapolated) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.replicas:
        for load in args.loads:
            rate = load * RATE_PER_REPLICA * n
            programs = max(1, round(rate * args.horizon))
            specs = build_workload("mixed", programs, rate=rate, seed=0)
            start = time.process_time()
            records, sim = simulate(specs, engine, target, replicas=n)
            wall = time.process_time() - start
            calls = sum(len(r.calls) for r in records)
            steps = sum(r.steps for r in sim.replicas)
            print(
                f"| {n} | {load:g} | {programs} | {calls} | {steps} | {sim.now:.0f} | {wall:.1f} "
                f"| {sim.now / wall:.1f} | {3600 / (sim.now / wall):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
