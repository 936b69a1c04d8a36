"""Time one scheduling round of a policy with many calls queued.

A round is what the engine does every step: anti-starvation promotions, the scan
of Q1..QK that fills the batch (max_running calls), preemption of running calls
that fell out of it, and the service accounting of the batch (demotions). Calls
come from programs whose service spreads them over all queues.

    python benchmarks/scheduler_overhead.py            # 1k, 10k, 100k calls
    python benchmarks/scheduler_overhead.py --calls 10000 --rounds 2000
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from autellix.programs import ProgramSnapshot
from autellix.scheduling import CallState, SchedulingConfig, make_policy, select_batch


def build(policy_name: str, num_calls: int, num_programs: int, seed: int = 0):
    rng = random.Random(seed)
    config = SchedulingConfig()
    policy = make_policy(policy_name, config)
    lows = (0.0, *config.boundaries)
    highs = (*config.boundaries, config.boundaries[-1] * 2)
    programs = []
    for _ in range(num_programs):
        level = rng.randrange(config.num_queues)  # spread programs over all queues
        service = rng.uniform(lows[level], highs[level])
        programs.append(ProgramSnapshot(service, service, waiting=service * rng.uniform(0, 4)))
    for i in range(num_calls):
        p = rng.randrange(num_programs)
        call = CallState(f"c{i}", f"p{p}", arrival=-rng.random(), program=programs[p])
        policy.add(call, now=0.0)
    return policy


def time_rounds(policy, rounds: int, max_running: int, step: float) -> list[float]:
    times = []
    now = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        batch, _ = select_batch(policy, now, max_running)
        for call in batch:
            policy.add_service(call, step)
        times.append(time.perf_counter() - start)
        now += step
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--policies", nargs="+", default=["plas", "atlas", "mlfq", "fcfs"])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--max-running", type=int, default=256)
    parser.add_argument("--step", type=float, default=0.025, help="seconds of service a round")
    args = parser.parse_args()

    print("| policy | calls | programs | median ms/round | p99 ms/round | median / (n log n) |")
    print("|---|---|---|---|---|---|")
    for policy_name in args.policies:
        base = None
        for n in args.calls:
            policy = build(policy_name, n, num_programs=max(1, n // 5))
            times = sorted(time_rounds(policy, args.rounds, args.max_running, args.step))
            median = statistics.median(times) * 1e3
            p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)] * 1e3
            norm = median / (n * math.log(n))
            base = base or norm
            print(
                f"| {policy_name} | {n} | {n // 5} | {median:.3f} | {p99:.3f} | {norm / base:.3f} |"
            )


if __name__ == "__main__":
    main()
