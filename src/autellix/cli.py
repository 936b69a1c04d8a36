"""The `autellix` command."""

from __future__ import annotations

import argparse
import json
import os
import sys

from autellix.flags import add_engine_flags, engine_config, variant
from autellix.scheduling import POLICIES
from autellix.sim.toy import SCENARIOS, run_toy

__all__ = ["build_parser", "engine_config", "main", "variant"]  # benchmarks/ import these


def _simulate(args: argparse.Namespace) -> int:
    if args.workload in SCENARIOS:
        result = run_toy(args.workload, args.policy or "atlas", max_batch=args.max_batch)
        print(json.dumps(result))
        return 0
    from pathlib import Path

    from rich.console import Console

    from autellix.bench.report import write_results
    from autellix.sim.sweep import profile_target, roofline_target, speed_table, sweep
    from autellix.workloads import WORKLOADS, build_workload, workload_params

    if args.workload not in WORKLOADS:
        raise ValueError(
            f"unknown workload {args.workload!r}; choose from {', '.join([*WORKLOADS, *SCENARIOS])}"
        )
    params = workload_params(args.workload_arg)
    variants = {}
    for item in args.policies or SIM_VARIANTS:
        name, policy, extra = variant(item)
        flags = f"{SIM_ENGINE_DEFAULTS} {args.engine_args} --policy {policy} {extra}"
        variants[name] = engine_config(flags)
    block_size = next(iter(variants.values())).block_size
    if args.profile:
        target = profile_target(args.profile)
    else:
        target = roofline_target(args.gpu, args.model, args.tp, block_size)

    def build(rate: float):
        return build_workload(
            args.workload, args.programs, rate=rate, seed=args.seed, scale=args.scale, **params
        )

    summaries, records, runs = sweep(
        build,
        variants,
        args.rates,
        target,
        replicas=args.replicas,
        balancer=args.balancer,
        long_prompt_tokens=args.long_prompt_tokens,
    )
    out = Path(args.out or f"benchmarks/results/sim/{args.workload}")
    title = (
        f"{_workload_title(args)}, {args.replicas} x {target.description}, balancer {args.balancer}"
    )
    baseline = args.baseline if args.baseline in summaries else next(iter(summaries))
    console = Console()
    markdown = write_results(out, title, summaries, records, baseline, args.bound, calls=False)
    speed = "\nSimulation speed:\n\n" + speed_table(runs)
    with (out / "summary.md").open("a") as f:
        f.write(speed)
    console.print(markdown + speed)
    console.print(f"results, plot (latency.png) and table under {out}")
    return 0


# The paper's baselines and Autellix, as engine variants (NAME=POLICY:ENGINE-FLAGS).
SIM_VARIANTS = (
    "vllm=fcfs:--no-prefix-caching --no-chunked-prefill",
    "vllm-opt=fcfs:--schedule-every 8",
    "mlfq",
    "atlas",
)
SIM_ENGINE_DEFAULTS = "--max-running 256 --max-prefill-tokens 2048"  # vLLM's GPU defaults


def _profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autellix.engine.config import EngineConfig
    from autellix.flags import from_args
    from autellix.sim.profile import measure

    console = Console(stderr=True)
    engine = from_args(EngineConfig, args)
    profile = measure(engine, on_progress=lambda what: console.print(f"profiling: {what}"))
    profile.save(args.out)
    a, b, c, d = profile.coefficients
    print(
        f"step time = {a * 1e3:.2f} ms + {b * 1e3:.3f} ms/new token + {c * 1e3:.3f} ms/sequence"
        f" + {d * 1e6:.3f} us/context token (mean error {profile.error():.1%} over "
        f"{len(profile.samples or [])} steps); swap {profile.swap_time_per_block * 1e6:.1f} "
        f"us/block; saved to {args.out}"
    )
    return 0


def _toy_tables() -> None:
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


def _demo(args: argparse.Namespace) -> int:
    """The paper's toy, then the main job in small: real agent programs (a mixed
    workload) against `autellix serve` on the default model, under FCFS and Autellix."""
    _toy_tables()
    if args.toy_only:
        return 0
    bench_args = build_parser().parse_args(
        [
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
    )
    return _bench(bench_args)


def _add_workload_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workload-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a workload builder parameter, e.g. iterations=4 for lats, lats.iterations=4 "
        "for mixed (repeatable)",
    )


def _workload_title(args: argparse.Namespace) -> str:
    extra = "".join(f", {item}" for item in args.workload_arg)
    seed = f", seed {args.seed}" if args.seed else ""  # seed 0 unnamed: older titles hold
    return f"{args.workload}: {args.programs} programs, scale {args.scale:g}{seed}{extra}"


def _workload_stats(args: argparse.Namespace) -> int:
    from autellix.workloads import build_workload, format_stats, stats, workload_params

    params = workload_params(args.workload_arg)
    specs = build_workload(
        args.name, args.programs, rate=1.0, seed=args.seed, scale=args.scale, **params
    )
    print(format_stats(stats(specs)))
    return 0


def _endpoint(text: str, sessions: bool, priority: bool, model: str | None):
    from autellix.bench.runner import Endpoint

    name, sep, url = text.partition("=")
    if not sep or not url.startswith("http"):
        raise ValueError(f"an endpoint is NAME=URL (http://host:port/v1), got {text!r}")
    return Endpoint(name, url.rstrip("/"), model, sessions, priority)


def _bench(args: argparse.Namespace) -> int:
    import contextlib
    import shlex
    from pathlib import Path

    from rich.console import Console

    from autellix.bench.report import merge_summaries, read_results, write_results
    from autellix.bench.sweep import serve_policy, sweep
    from autellix.workloads import WORKLOADS, build_workload, workload_params

    if args.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {args.workload!r}; choose from {', '.join(WORKLOADS)}")
    params = workload_params(args.workload_arg)
    endpoints = [_endpoint(e, True, False, args.model) for e in args.endpoint or []]
    endpoints += [_endpoint(e, False, False, args.model) for e in args.peer or []]
    endpoints += [_endpoint(e, False, True, args.model) for e in args.peer_priority or []]
    policies = (
        args.policies if args.policies is not None else ([] if endpoints else ["fcfs", "plas"])
    )

    def build(rate: float):
        return build_workload(
            args.workload, args.programs, rate=rate, seed=args.seed, scale=args.scale, **params
        )

    out = Path(args.out or f"benchmarks/results/bench-{args.workload}")
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    summaries, records, failed = {}, {}, {}
    if args.append and (out / "results.json").exists():
        summaries, records = read_results(out)
    with open(out / "servers.log", "a" if args.append else "w") as log:
        for i, item in enumerate(policies):
            name, policy, extra = variant(item)  # e.g. vllm=fcfs:--no-prefix-caching
            serve_args = shlex.split(args.serve_args) + shlex.split(extra)
            with contextlib.ExitStack() as stack:
                try:
                    ep = stack.enter_context(
                        serve_policy(policy, args.port + i, serve_args, name=name, log=log)
                    )
                except RuntimeError as exc:
                    failed[name] = str(exc)
                    continue
                s, r, f = sweep(build, [ep], args.rates, args.timeout)
                merge_summaries(summaries, s)
                records.update(r)
                failed.update(f)
        if endpoints:
            s, r, f = sweep(build, endpoints, args.rates, args.timeout)
            merge_summaries(summaries, s)
            records.update(r)
            failed.update(f)
    for name, why in failed.items():
        console.print(f"[red]{name}: {why}[/red]")
    summaries = {k: v for k, v in summaries.items() if v}
    if not summaries:
        raise ValueError("no endpoint produced results")
    baseline = args.baseline if args.baseline in summaries else next(iter(summaries))
    title = _workload_title(args)
    console.print(write_results(out, title, summaries, records, baseline, args.bound))
    console.print(f"results, plot (latency.png) and table under {out}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autellix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate",
        help="a workload through the real scheduler in virtual time, at GPU scale",
        description="Run a workload through real engines (scheduler, KV cache, policy, "
        "balancer) whose steps take what a latency model says: a roofline of a GPU and "
        "model, or a profile of this machine from `autellix profile`. Also the paper's toy "
        "scenarios (" + ", ".join(sorted(SCENARIOS)) + ").",
    )
    simulate.add_argument("workload", help="chatbot | react | lats | mixed, or a toy scenario")
    simulate.add_argument(
        "--policies",
        nargs="+",
        metavar="[NAME=]POLICY[:FLAGS]",
        help="engine variants, each a policy with extra engine flags (default: "
        + " ".join(repr(v) for v in SIM_VARIANTS)
        + ")",
    )
    simulate.add_argument(
        "--engine-args",
        default="",
        help=f"engine flags for every variant (on top of "
        f"{SIM_ENGINE_DEFAULTS!r}; see `autellix serve --help`)",
    )
    simulate.add_argument("--gpu", default="a100", help="a100 | h100 (default a100)")
    simulate.add_argument(
        "--model", default="llama-3.1-8b", help="llama-3.1-8b | llama-3.1-70b (default 8b)"
    )
    simulate.add_argument("--tp", type=int, help="GPUs per replica (default: 1 for 8B, 4 for 70B)")
    simulate.add_argument(
        "--profile", help="a profile from `autellix profile` instead of the GPU roofline"
    )
    simulate.add_argument("--replicas", type=int, default=1)
    simulate.add_argument(
        "--balancer",
        default="locality",
        choices=["cache-aware", "least-used", "locality", "round-robin"],
    )
    simulate.add_argument("--long-prompt-tokens", type=int, default=2048)
    simulate.add_argument("--programs", type=int, default=200, help="programs per rate")
    simulate.add_argument(
        "--rates", type=float, nargs="+", default=[0.5, 1, 2, 4], help="programs/s"
    )
    simulate.add_argument("--scale", type=float, default=1.0, help="workload scale (default 1)")
    simulate.add_argument("--seed", type=int, default=0)
    _add_workload_arg(simulate)
    simulate.add_argument("--baseline", default="vllm", help="ratios are against this variant")
    simulate.add_argument("--bound", type=float, help="token-latency bound for equal latency")
    simulate.add_argument("--out", help="results folder (default benchmarks/results/sim/WORKLOAD)")
    simulate.add_argument("--policy", choices=sorted(POLICIES), help="toy scenarios: the policy")
    simulate.add_argument("--max-batch", type=int, default=2, help="toy scenarios: calls per step")
    simulate.set_defaults(run=_simulate)

    profile = commands.add_parser(
        "profile", help="time the engine's steps on this machine, for `simulate --profile`"
    )
    profile.add_argument("--out", default="profile.json", help="where to write (profile.json)")
    add_engine_flags(profile)
    profile.set_defaults(run=_profile)

    from autellix.server import launch

    serve = commands.add_parser("serve", help="the OpenAI-compatible server with program sessions")
    launch.add_serve_flags(serve)
    serve.set_defaults(run=launch.serve)

    workload = commands.add_parser("workload", help="inspect the agentic workloads")
    wsub = workload.add_subparsers(dest="workload_command", required=True)
    wstats = wsub.add_parser("stats", help="calls per program, prefill and decode tokens per call")
    wstats.add_argument("name", help="chatbot | react | lats | mixed")
    wstats.add_argument("--programs", type=int, default=200)
    wstats.add_argument("--scale", type=float, default=1.0)
    wstats.add_argument("--seed", type=int, default=0)
    _add_workload_arg(wstats)
    wstats.set_defaults(run=_workload_stats)

    bench = commands.add_parser(
        "bench", help="run a workload against endpoints at a sweep of arrival rates"
    )
    bench.add_argument("workload", help="chatbot | react | lats | mixed")
    bench.add_argument("--programs", type=int, default=20, help="programs per rate")
    bench.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.2],
        help="program arrival rates (programs/s)",
    )
    bench.add_argument("--scale", type=float, default=0.05, help="shrink lengths for CPU runs")
    bench.add_argument("--seed", type=int, default=0)
    _add_workload_arg(bench)
    bench.add_argument(
        "--policies",
        nargs="*",
        metavar="[NAME=]POLICY[:FLAGS]",
        help="start `autellix serve` per policy, with extra serve flags if given, e.g. "
        "vllm=fcfs:--no-prefix-caching (default: fcfs plas when no endpoint is given)",
    )
    bench.add_argument("--serve-args", default="", help="extra flags for those servers")
    bench.add_argument("--port", type=int, default=8400, help="first port for those servers")
    bench.add_argument(
        "--endpoint",
        action="append",
        metavar="NAME=URL",
        help="an Autellix endpoint (program sessions)",
    )
    bench.add_argument(
        "--peer",
        action="append",
        metavar="NAME=URL",
        help="an OpenAI-compatible peer without sessions (e.g. vLLM, FCFS)",
    )
    bench.add_argument(
        "--peer-priority",
        action="append",
        metavar="NAME=URL",
        help="a peer in priority mode: calls stamped with the program's tokens so far",
    )
    bench.add_argument(
        "--model", help="model name for --endpoint/--peer (default: the first one each serves)"
    )
    bench.add_argument("--baseline", default="fcfs", help="ratios are against this endpoint")
    bench.add_argument("--bound", type=float, help="token-latency bound for equal latency")
    bench.add_argument("--timeout", type=float, help="seconds per (endpoint, rate) run")
    bench.add_argument("--out", help="results folder (default benchmarks/results/bench-WORKLOAD)")
    bench.add_argument(
        "--append",
        action="store_true",
        help="keep what OUT/results.json holds and add these endpoints or rates to the same "
        "tables (a rate run again replaces the old one)",
    )
    bench.set_defaults(run=_bench)

    demo = commands.add_parser(
        "demo",
        help="the toy scenarios, then a mixed workload under FCFS (without and with prefix "
        "caching) and Autellix",
    )
    demo.add_argument("--toy-only", action="store_true", help="only the toy scenarios")
    demo.add_argument("--programs", type=int, default=12, help="programs per rate (default 12)")
    demo.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0.4],
        help="arrival rates, programs/s (default 0.4)",
    )
    demo.add_argument(
        "--max-running",
        type=int,
        default=4,
        help="calls in a batch for every server (default 4: on two CPU cores this is what "
        "makes calls queue, where scheduling matters)",
    )
    demo.add_argument("--scale", type=float, default=0.1, help="workload scale (default 0.1)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # e.g. `autellix workload stats mixed | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"autellix: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
