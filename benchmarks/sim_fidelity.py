"""Fidelity: the simulator, calibrated by `autellix profile` on this machine, against real
runs of the same trace (an `autellix bench` results folder).

For every (endpoint, rate) of the real run whose endpoint is one of ours, the same
programs (same workload, count, scale, seed) go through the simulator with the same
engine flags and a profile-fitted step time; mean program latency and mean program
token latency are compared.

    .venv/bin/autellix profile --max-running 4 --out benchmarks/results/sim/profile-cpu.json
    .venv/bin/python benchmarks/sim_fidelity.py --bench benchmarks/results/cpu-mixed \\
        --profile benchmarks/results/sim/profile-cpu.json --workload mixed --programs 16 \\
        --scale 0.1 --workload-arg lats.iterations=2 \\
        --engine-args "--max-running 4 --kv-cache-gib 1"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autellix.bench.metrics import Summary
from autellix.bench.report import read_results
from autellix.flags import engine_config, variant
from autellix.sim.sweep import profile_target, simulate
from autellix.workloads import build_workload, workload_params

# the engine flags each of our bench endpoints was started with (side_by_side_cpu.sh)
VARIANTS = {
    "vllm": "fcfs:--no-prefix-caching",
    "vllm-opt": "fcfs:--no-kv-retention",
    "mlfq": "mlfq",
    "plas": "plas",
    "atlas": "atlas",
    "fcfs": "fcfs:--no-kv-retention",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="an `autellix bench` results folder")
    p.add_argument("--profile", required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--programs", type=int, required=True)
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("--workload-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine-args", default="")
    p.add_argument("--out", help="markdown to write (default: BENCH/fidelity.md)")
    args = p.parse_args()
    params = workload_params(args.workload_arg)

    real, _ = read_results(Path(args.bench))
    target = profile_target(args.profile)
    rows = []
    for name, summaries in real.items():
        if name not in VARIANTS:
            continue
        _, policy, extra = variant(VARIANTS[name])
        engine = engine_config(f"{args.engine_args} --policy {policy} {extra}")
        for r in sorted(summaries, key=lambda s: s.rate):
            specs = build_workload(
                args.workload, args.programs, r.rate, args.seed, args.scale, **params
            )
            records, _ = simulate(specs, engine, target)
            rows.append((name, r, Summary.of(name, r.rate, records)))

    lines = [
        f"### Simulator fidelity: {args.workload}, {args.programs} programs, scale {args.scale:g}"
        + "".join(f", {item}" for item in args.workload_arg),
        "",
        f"Real: `{args.bench}`. Simulated: step time from `{args.profile}`, engine flags "
        f"`{args.engine_args}` plus each endpoint's own.",
        "",
        "| endpoint | rate | real mean latency (s) | simulated | error "
        "| real mean token latency (s/tok) | simulated | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    errors = []
    for name, r, s in rows:
        e1 = s.latency_mean / r.latency_mean - 1
        e2 = s.token_latency_mean / r.token_latency_mean - 1
        errors += [abs(e1), abs(e2)]
        lines.append(
            f"| {name} | {r.rate:g} | {r.latency_mean:.2f} | {s.latency_mean:.2f} | {e1:+.0%} "
            f"| {r.token_latency_mean:.3f} | {s.token_latency_mean:.3f} | {e2:+.0%} |"
        )
    if errors:
        lines += [
            "",
            f"Mean absolute error {sum(errors) / len(errors):.0%}, largest {max(errors):.0%} "
            f"({sum(e <= 0.15 for e in errors)} of {len(errors)} within 15%).",
        ]
    text = "\n".join(lines) + "\n"
    Path(args.out or Path(args.bench) / "fidelity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
