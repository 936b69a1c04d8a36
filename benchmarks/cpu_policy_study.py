"""Policies on this CPU's mixed runs, in the simulator calibrated by `autellix profile`:
the setting of benchmarks/side_by_side_cpu.sh (mixed at scale 0.1, 4 running calls,
1 GiB KV) over several seeds, with mean program token latency split by workload.

    .venv/bin/python benchmarks/cpu_policy_study.py \\
        --profile benchmarks/results/sim/profile-cpu.json [--programs 12 --rates 0.05 0.1 0.2]
        [--workload-arg lats.iterations=2]
"""

from __future__ import annotations

import argparse
import statistics

from autellix.flags import engine_config
from autellix.sim.sweep import profile_target, simulate
from autellix.workloads import build_workload, workload_params

VARIANTS = {
    "vllm (fcfs, no prefix caching)": "--policy fcfs --no-prefix-caching",
    "fcfs": "--policy fcfs --no-kv-retention",
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
    p.add_argument("--programs", type=int, default=16)
    p.add_argument("--rates", type=float, nargs="+", default=[0.4, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workload-arg", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    params = workload_params(args.workload_arg)
    target = profile_target(args.profile)
    rows: dict[str, dict[str, list[float]]] = {
        v: {k: [] for k in ("all", *KINDS, *args.rates)} for v in VARIANTS
    }
    for rate in args.rates:
        for seed in args.seeds:
            specs = build_workload("mixed", args.programs, rate, seed, 0.1, **params)
            for name, flags in VARIANTS.items():
                engine = engine_config(f"--max-running 4 --kv-cache-gib 1 {flags}")
                records, _ = simulate(specs, engine, target)
                rows[name]["all"] += [r.token_latency for r in records]
                rows[name][rate] += [r.token_latency for r in records]
                for kind in KINDS:
                    rows[name][kind] += [r.token_latency for r in records if r.workload == kind]
    print(
        f"{args.programs} programs, {' '.join(args.workload_arg) or 'default parameters'}, "
        f"rates {args.rates}, seeds {args.seeds}; mean program token latency (s/token)\n"
    )
    columns = ("all", *KINDS, *args.rates)
    print("| policy | all programs | chatbot | react | lats |", end="")
    print("".join(f" at {rate:g}/s |" for rate in args.rates))
    print("|---" * (len(columns) + 1) + "|")
    for name, by in rows.items():
        cells = " | ".join(f"{statistics.fmean(by[k]):.3f}" for k in columns)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
