"""The `autellix` command."""

from __future__ import annotations

import argparse
import json
import sys

from autellix.scheduling import POLICIES
from autellix.sim.toy import SCENARIOS, run_toy


def _simulate(args: argparse.Namespace) -> int:
    result = run_toy(args.workload, args.policy, max_batch=args.max_batch)
    print(json.dumps(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for scenario in SCENARIOS:
        table = Table(title=f"{scenario}: batch of 2, one decode step per time unit")
        for column in ("policy", "total wait", "makespan", "mean program latency", "finish"):
            table.add_column(column)
        for policy in POLICIES:
            r = run_toy(scenario, policy)
            finish = " ".join(f"{p}={t}" for p, t in sorted(r["finish"].items()))
            table.add_row(
                policy,
                str(r["total_wait"]),
                str(r["makespan"]),
                f"{r['mean_program_latency']:.2f}",
                finish,
            )
        console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autellix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run a workload in virtual time")
    simulate.add_argument("workload", choices=sorted(SCENARIOS), help="the scenario to run")
    simulate.add_argument("--policy", choices=sorted(POLICIES), default="atlas")
    simulate.add_argument("--max-batch", type=int, default=2, help="calls per step (default 2)")
    simulate.set_defaults(run=_simulate)

    demo = commands.add_parser("demo", help="the paper's toy scenarios under every policy")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError) as exc:
        print(f"autellix: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
