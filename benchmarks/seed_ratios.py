"""Ratios to a baseline over several `autellix bench` runs (one results folder a seed):
mean and p95 program token latency (with `--metric latency`, program latency in seconds),
each a geometric mean over the seeds with its 95% confidence interval (Student t on the
per-seed log ratios).

    .venv/bin/python benchmarks/seed_ratios.py benchmarks/results/cpu-agents-heavy/seed* \\
        --baseline fcfs
"""

from __future__ import annotations

import argparse
import csv
import shlex
import statistics
import sys
from pathlib import Path

from autellix.bench.stats import ratio
from autellix.machine import this_commit, this_machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--baseline", default="fcfs")
    p.add_argument(
        "--metric",
        choices=["token_latency", "latency"],
        default="token_latency",
        help="program token latency (s/token) or program latency (s)",
    )
    args = p.parse_args()
    unit = "s/token" if args.metric == "token_latency" else "s"
    runs: dict[str, dict[str, list[float]]] = {}  # endpoint -> metric -> one value a seed
    for folder in args.folders:
        with (folder / "summary.csv").open() as f:
            for row in csv.DictReader(f):
                metrics = runs.setdefault(row["endpoint"], {"mean": [], "p95": []})
                metrics["mean"].append(float(row[f"{args.metric}_mean"]))
                metrics["p95"].append(float(row[f"{args.metric}_p95"]))
    base = runs[args.baseline]
    print(f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- ratios computed at commit {this_commit()} on {this_machine()}")
    print(f"- {len(args.folders)} runs (each folder's summary.md names the machine it ran on)\n")
    print(f"| endpoint | mean {unit} | p95 | {args.baseline} / it, mean [95% CI] | p95 |")
    print("|---|---|---|---|---|")
    for name, metrics in runs.items():
        print(
            f"| {name} | {statistics.mean(metrics['mean']):.3f} "
            f"| {statistics.mean(metrics['p95']):.3f} | {ratio(base['mean'], metrics['mean'])} "
            f"| {ratio(base['p95'], metrics['p95'])} |"
        )


if __name__ == "__main__":
    main()
