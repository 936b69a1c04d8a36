"""Throughput at equal latency, re-read from saved results at a chosen latency bound.

`autellix bench` and `autellix simulate` write a table with one bound (twice the
baseline's token latency at its lowest rate). When the baseline is already saturated at
its lowest rate, that bound is loose and every ratio is only a lower bound; this prints
the table at a bound set by another endpoint (e.g. the best one at the lowest rate),
against every baseline asked for.

    .venv/bin/python benchmarks/equal_latency.py benchmarks/results/sim/mixed \\
        --reference vllm-opt --factor 2 --baselines vllm vllm-opt mlfq
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autellix.bench.metrics import throughput_at_latency
from autellix.bench.report import read_results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--reference", default="vllm-opt", help="the bound is set from this one")
    p.add_argument("--factor", type=float, default=2.0, help="bound = factor x its latency")
    p.add_argument("--baselines", nargs="+", default=["vllm", "vllm-opt", "mlfq"])
    p.add_argument("--merge", action="store_true", help="one table over all the folders' runs")
    args = p.parse_args()
    runs = [(f.name, read_results(f)[0]) for f in args.folders]
    if args.merge:
        merged: dict = {}
        for _, summaries in runs:
            for name, ss in summaries.items():
                merged.setdefault(name, []).extend(ss)
        runs = [(" + ".join(f.name for f in args.folders), merged)]
    for title, summaries in runs:
        lowest = min(summaries[args.reference], key=lambda s: s.rate)
        bound = args.factor * lowest.token_latency_mean
        print(
            f"\n#### {title}: bound {bound:.3f} s/token "
            f"({args.factor:g} x {args.reference} at {lowest.rate:g} programs/s)\n"
        )
        baselines = [b for b in args.baselines if b in summaries]
        header = " | ".join(f"vs {b}" for b in baselines)
        print(f"| endpoint | throughput (prog/s) | {header} |")
        print("|---|---|" + "---|" * len(baselines))
        tps = {n: throughput_at_latency(ss, bound) for n, ss in summaries.items()}
        for name, (tp, capped) in tps.items():
            mark = ">= " if capped else ""
            ratios = []
            for b in baselines:
                base, base_capped = tps[b]
                if not base:
                    ratios.append("-")
                elif base_capped and name != b:
                    ratios.append("?")  # the baseline's own crossing was not reached
                else:
                    ratios.append(f"{mark}{tp / base:.2f}x")
            print(f"| {name} | {mark}{tp:.3g} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
