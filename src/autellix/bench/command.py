"""`autellix bench`: a workload against our servers (one per policy, started here) and
given endpoints, at a sweep of arrival rates; and the bench that `autellix demo` runs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import IO

from autellix.engine.config import EngineConfig
from autellix.flags import baseline_of, variant

VLLM_FCFS = "fcfs:--no-kv-retention"  # FCFS with prefix caching, as vLLM serves by default


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


def endpoint(
    text: str, sessions: bool, priority: bool, model: str | None, program_args: bool = False
):
    from autellix.bench.runner import Endpoint

    name, sep, url = text.partition("=")
    if not sep or not url.startswith("http"):
        raise ValueError(f"an endpoint is NAME=URL (http://host:port/v1), got {text!r}")
    return Endpoint(name, url.rstrip("/"), model, sessions, priority, program_args)


def endpoints(args: argparse.Namespace) -> list:
    """--endpoint (Autellix, with sessions), --peer, --peer-priority and --peer-plugin."""
    found = [endpoint(e, True, False, args.model) for e in args.endpoint or []]
    found += [endpoint(e, False, False, args.model) for e in args.peer or []]
    found += [endpoint(e, False, True, args.model) for e in args.peer_priority or []]
    found += [endpoint(e, False, False, args.model, True) for e in args.peer_plugin or []]
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


def measure(args: argparse.Namespace, build, ep, results: Results) -> None:
    """Sweep an endpoint over --rates, then (with --search) more rates around the bound."""
    from autellix.bench.metrics import Summary
    from autellix.bench.search import search_rate
    from autellix.bench.sweep import sweep

    ep = dataclasses.replace(ep, kinds=args.named_kinds and ep.sessions)
    results.add(*sweep(build, [ep], args.rates, args.timeout))
    if not args.search or ep.name in results.failed:
        return

    def at(rate: float) -> Summary:
        summaries, records, failed = sweep(build, [ep], [rate], args.timeout)
        results.add(summaries, records, failed)
        return summaries[ep.name][-1] if summaries[ep.name] else Summary.of(ep.name, rate, [])

    search_rate(at, list(results.summaries[ep.name]), bound(args, results), args.search)


def bound(args: argparse.Namespace, results: Results) -> float:
    """--bound, or twice the baseline's token latency at its lowest rate."""
    if args.bound is not None:
        return args.bound
    measured = results.summaries.get(args.baseline)
    if not measured:
        raise ValueError(f"--search needs --bound or the baseline {args.baseline!r} measured")
    return 2 * min(measured, key=lambda s: s.rate).token_latency_mean


def run_servers(
    args: argparse.Namespace, names: list[str], build, results: Results, log: IO[str]
) -> None:
    """`autellix serve` per policy variant (NAME=POLICY:FLAGS), one after another, each
    measured."""
    from autellix.bench.sweep import serve_policy

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
            measure(args, build, ep, results)


def policies(args: argparse.Namespace, given: list) -> list[str]:
    """--policies, the baseline first; without it and without endpoints, FCFS with prefix
    caching as vLLM serves (no KV retention) and the default settings."""
    if args.policies is None:
        return [] if given else [f"fcfs={VLLM_FCFS}", EngineConfig().policy]
    return sorted(args.policies, key=lambda item: variant(item)[0] != args.baseline)


def run_bench(args: argparse.Namespace) -> int:
    """One seed, or --seeds of them and the ratios over them (OUT/ratios.md)."""
    out = Path(args.out or f"benchmarks/results/bench-{args.workload}")
    given = endpoints(args)
    names = [variant(item)[0] for item in policies(args, given)] + [ep.name for ep in given]
    if args.append and (out / "results.json").exists():
        from autellix.bench.report import read_results

        names += [n for n in read_results(out)[0] if n not in names]
    if not names:
        raise ValueError("nothing to measure: give --policies or an endpoint")
    args.baseline = baseline_of(names, args.baseline, "fcfs")
    if args.seeds == 1:
        return run_seed(args, out)[0]
    if args.append:
        raise ValueError("--append adds to one results folder: use it without --seeds")
    from rich.console import Console

    from autellix.bench.stats import seed_ratios
    from autellix.machine import this_commit

    commit = this_commit()  # what the runs ran, whatever is committed while they run
    codes, runs = [], []
    for seed in range(args.seed, args.seed + args.seeds):
        code, summaries = run_seed(
            argparse.Namespace(**{**vars(args), "seed": seed}), out / f"seed{seed}"
        )
        codes.append(code)
        runs.append(summaries)
    title = workload_title(argparse.Namespace(**{**vars(args), "seed": 0}))
    text = seed_ratios(
        runs, args.rates, args.baseline, args.bound, title, args.command_line, commit
    )
    (out / "ratios.md").write_text(text)
    Console().print(text)
    return max(codes)


def run_seed(args: argparse.Namespace, out: Path) -> tuple[int, dict]:
    from rich.console import Console

    from autellix.bench.report import write_results
    from autellix.machine import provenance, this_commit

    commit = this_commit()  # what the runs ran, whatever is committed while they run
    build = workload_builder(args)
    given = endpoints(args)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, args.append)
    with open(out / "servers.log", "a" if args.append else "w") as log:
        baseline_given = any(ep.name == args.baseline for ep in given)  # first: its bound
        if not baseline_given:
            run_servers(args, policies(args, given), build, results, log)
        for ep in given:
            measure(args, build, ep, results)
        if baseline_given:
            run_servers(args, policies(args, given), build, results, log)
    console = Console()
    for name, why in results.failed.items():
        console.print(f"[red]{name}: {why}[/red]")
    summaries = {k: v for k, v in results.summaries.items() if v}
    if not summaries:
        raise ValueError("no endpoint produced results")
    baseline = args.baseline if args.baseline in summaries else next(iter(summaries))
    title = workload_title(args)
    footer = provenance(args.command_line, commit)
    markdown = write_results(
        out, title, summaries, results.records, baseline, args.bound, footer=footer
    )
    console.print(markdown)
    console.print(f"results, plot (latency.png) and table under {out}")
    return (1 if results.failed else 0), summaries


def demo_argv(args: argparse.Namespace) -> list[str]:
    """The bench `autellix demo` runs: real agent programs (a mixed workload) against
    `autellix serve` on the default model, under FCFS (without and with prefix caching)
    and Autellix."""
    return [
        "bench",
        "mixed",
        "--policies",
        "vllm=fcfs:--no-prefix-caching",
        f"vllm-opt={VLLM_FCFS}",
        EngineConfig().policy,
        *(["--serve-args", f"--max-running {args.max_running}"] if args.max_running else []),
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
