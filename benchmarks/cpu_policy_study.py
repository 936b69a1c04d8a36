"""Why program-level scheduling does not beat MLFQ on this CPU's mixed runs: the same
setting as benchmarks/side_by_side_cpu.sh (mixed, 16 programs, scale 0.1, 4 running
calls, 1 GiB KV) in the simulator calibrated by `autellix profile`, over three seeds,
with mean program token latency split by workload.

    .venv/bin/python benchmarks/cpu_policy_study.py \\
        --profile benchmarks/results/sim/profile-cpu.json
"""

from __future__ import annotations

import argparse
import statistics

from autellix.cli import engine_config
from autellix.sim.sweep import profile_target, simulate
from autellix.workloads import build_workload

VARIANTS = {
    "fcfs": "--policy fcfs",
    "mlfq": "--policy mlfq",
    "plas": "--policy plas",
    "atlas": "--policy atlas",
    "atlas, Q1 0.25 s": "--policy atlas --first-boundary 0.25 --num-queues 13",
    "atlas, Q1 8 s": "--policy atlas --first-boundary 8",
    "srpt (clairvoyant)": "--policy srpt",
}
KINDS = ("chatbot", "react", "lats")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--profile", required=True)
    p.add_argument("--rates", type=float, nargs="+", default=[0.4, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    target = profile_target(args.profile)
    rows: dict[str, dict[str, list[float]]] = {
        v: {k: [] for k in ("all", *KINDS)} for v in VARIANTS
    }
    for rate in args.rates:
        for seed in args.seeds:
            specs = build_workload("mixed", 16, rate, seed, 0.1)
            for name, flags in VARIANTS.items():
                engine = engine_config(f"--max-running 4 --kv-cache-gib 1 {flags}")
                records, _ = simulate(specs, engine, target)
                rows[name]["all"] += [r.token_latency for r in records]
                for kind in KINDS:
                    rows[name][kind] += [r.token_latency for r in records if r.workload == kind]
    print(f"rates {args.rates}, seeds {args.seeds}; mean program token latency (s/token)\n")
    print("| policy | all programs | chatbot | react | lats |")
    print("|---|---|---|---|---|")
    for name, by in rows.items():
        cells = " | ".join(f"{statistics.fmean(by[k]):.3f}" for k in ("all", *KINDS))
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
