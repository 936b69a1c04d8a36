"""`autellix bench`: a workload against our servers (one per policy, started here) and
given endpoints, at a sweep of arrival rates; and the bench that `autellix demo` runs."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import IO

from autellix.flags import variant


def workload_title(args: argparse.Namespace) -> str:
    extra = "".join(f", {item}" for item in args.workload_arg)
    seed = f", seed {args.seed}" if args.seed else ""  # seed 0 unnamed: older titles hold
    return f"{args.workload}: {args.programs} programs, scale {args.scale:g}{seed}{extra}"


def workload_builder(args: argparse.Namespace) -> Callable[[float], list]:
    """The workload's programs at an arrival rate (the same programs at every rate)."""
    from autellix.workloads import WORKLOADS, build_workload, workload_params

    if args.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {args.workload!r}; choose from {', '.join(WORKLOADS)}")
    params = workload_params(args.workload_arg)

    def build(rate: float) -> list:
        return build_workload(
            args.workload, args.programs, rate=rate, seed=args.seed, scale=args.scale, **params
        )

    return build


def endpoint(text: str, sessions: bool, priority: bool, model: str | None):
    from autellix.bench.runner import Endpoint

    name, sep, url = text.partition("=")
    if not sep or not url.startswith("http"):
        raise ValueError(f"an endpoint is NAME=URL (http://host:port/v1), got {text!r}")
    return Endpoint(name, url.rstrip("/"), model, sessions, priority)


def endpoints(args: argparse.Namespace) -> list:
    """--endpoint (Autellix, with sessions), --peer and --peer-priority."""
    found = [endpoint(e, True, False, args.model) for e in args.endpoint or []]
    found += [endpoint(e, False, False, args.model) for e in args.peer or []]
    found += [endpoint(e, False, True, args.model) for e in args.peer_priority or []]
    return found


class Results:
    """Summaries and records gathered over runs (and from OUT with --append)."""

    def __init__(self, out: Path, append: bool) -> None:
        from autellix.bench.report import read_results

        self.summaries: dict = {}
        self.records: dict = {}
        self.failed: dict[str, str] = {}
        if append and (out / "results.json").exists():
            self.summaries, self.records = read_results(out)

    def add(self, summaries: dict, records: dict, failed: dict) -> None:
        from autellix.bench.report import merge_summaries

        merge_summaries(self.summaries, summaries)
        self.records.update(records)
        self.failed.update(failed)


def run_servers(
    args: argparse.Namespace, names: list[str], build, results: Results, log: IO[str]
) -> None:
    """`autellix serve` per policy variant (NAME=POLICY:FLAGS), one after another, each
    swept."""
    from autellix.bench.sweep import serve_policy, sweep

    for i, item in enumerate(names):
        name, policy, extra = variant(item)  # e.g. vllm=fcfs:--no-prefix-caching
        serve_args = shlex.split(args.serve_args) + shlex.split(extra)
        with contextlib.ExitStack() as stack:
            try:
                ep = stack.enter_context(
                    serve_policy(policy, args.port + i, serve_args, name=name, log=log)
                )
            except RuntimeError as exc:
                results.failed[name] = str(exc)
                continue
            results.add(*sweep(build, [ep], args.rates, args.timeout))


def policies(args: argparse.Namespace, given: list) -> list[str]:
    """--policies; without it and without endpoints, fcfs and plas."""
    if args.policies is not None:
        return args.policies
    return [] if given else ["fcfs", "plas"]


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autellix.bench.report import write_results
    from autellix.bench.sweep import sweep

    build = workload_builder(args)
    given = endpoints(args)
    out = Path(args.out or f"benchmarks/results/bench-{args.workload}")
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, args.append)
    with open(out / "servers.log", "a" if args.append else "w") as log:
        run_servers(args, policies(args, given), build, results, log)
        if given:
            results.add(*sweep(build, given, args.rates, args.timeout))
    console = Console()
    for name, why in results.failed.items():
        console.print(f"[red]{name}: {why}[/red]")
    summaries = {k: v for k, v in results.summaries.items() if v}
    if not summaries:
        raise ValueError("no endpoint produced results")
    baseline = args.baseline if args.baseline in summaries else next(iter(summaries))
    title = workload_title(args)
    console.print(write_results(out, title, summaries, results.records, baseline, args.bound))
    console.print(f"results, plot (latency.png) and table under {out}")
    return 1 if results.failed else 0


def demo_argv(args: argparse.Namespace) -> list[str]:
    """The bench `autellix demo` runs: real agent programs (a mixed workload) against
    `autellix serve` on the default model, under FCFS (without and with prefix caching)
    and Autellix."""
    return [
        "bench",
        "mixed",
        "--policies",
        "vllm=fcfs:--no-prefix-caching",
        "vllm-opt=fcfs",
        "plas",
        "--serve-args",
        f"--max-running {args.max_running}",
        "--baseline",
        "vllm",
        "--programs",
        str(args.programs),
        "--rates",
        *map(str, args.rates),
        "--scale",
        str(args.scale),
        # a two-iteration search (22 calls, not ~160) keeps the demo to a few minutes
        "--workload-arg",
        "lats.iterations=2",
        "--out",
        "benchmarks/results/demo",
    ]
