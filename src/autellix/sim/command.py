"""`autellix simulate` (a workload's engine variants in virtual time, or a toy scenario)
and `autellix profile` (the latency model of this machine), from their parsed flags."""

from __future__ import annotations

import argparse
import json

from autellix.flags import baseline_of, engine_config, given_flags, variant

# The paper's baselines, its Autellix (atlas) and the default policy, as engine variants
# (NAME=POLICY:ENGINE-FLAGS).
SIM_VARIANTS = (
    "vllm=fcfs:--no-prefix-caching --no-chunked-prefill",
    "vllm-opt=fcfs:--schedule-every 8 --no-kv-retention",
    "mlfq",
    "atlas",
    "gittins",
)
SIM_ENGINE_DEFAULTS = "--max-running 256 --max-prefill-tokens 2048"  # vLLM's GPU defaults


def variants(items: list[str] | None, engine_args: str) -> dict:
    """Each NAME=POLICY:FLAGS as an EngineConfig, on top of SIM_ENGINE_DEFAULTS."""
    found = {}
    for item in items or SIM_VARIANTS:
        name, policy, extra = variant(item)
        found[name] = engine_config(
            f"{SIM_ENGINE_DEFAULTS} {engine_args} --policy {policy} {extra}"
        )
    return found


def target(args: argparse.Namespace, block_size: int):
    """What is simulated: --profile's latency model, or the roofline of --gpu and --model."""
    from autellix.sim.sweep import profile_target, roofline_target

    if args.profile:
        return profile_target(args.profile)
    return roofline_target(args.gpu, args.model, args.tp, block_size)


# the flags of a toy scenario; every other flag is a workload's
TOY_FLAGS = {"--policy", "--max-batch"}


def run_simulate(args: argparse.Namespace) -> int:
    from autellix.cli import simulate_flags
    from autellix.sim.toy import SCENARIOS, run_toy
    from autellix.workloads import WORKLOADS

    given = given_flags(simulate_flags, args.argv[1:])  # argv[0]: "simulate"
    toy = args.workload in SCENARIOS
    if ignored := sorted(given - TOY_FLAGS if toy else given & TOY_FLAGS):
        what = "a toy scenario" if toy else "a workload (toy scenarios only; see --policies)"
        raise ValueError(f"{', '.join(ignored)}: not for {what}")
    if toy:
        print(json.dumps(run_toy(args.workload, args.policy or "atlas", args.max_batch)))
        return 0
    if args.workload not in WORKLOADS:
        raise ValueError(
            f"unknown workload {args.workload!r}; choose from {', '.join([*WORKLOADS, *SCENARIOS])}"
        )
    return run_sweep(args)


def run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from autellix.bench.command import workload_builder, workload_title
    from autellix.bench.report import write_results
    from autellix.sim.sweep import speed_table, sweep

    build = workload_builder(args)
    names = [variant(item)[0] for item in args.policies or SIM_VARIANTS]
    args.baseline = baseline_of(names, args.baseline, "vllm")
    engines = variants(args.policies, args.engine_args)
    where = target(args, next(iter(engines.values())).block_size)
    summaries, records, runs = sweep(
        build,
        engines,
        args.rates,
        where,
        replicas=args.replicas,
        balancer=args.balancer,
        long_prompt_tokens=args.long_prompt_tokens,
    )
    out = Path(args.out or f"benchmarks/results/sim/{args.workload}")
    title = f"{workload_title(args)}, {args.replicas} x {where.description}"
    title += f", balancer {args.balancer}"
    markdown = write_results(out, title, summaries, records, args.baseline, args.bound, calls=False)
    speed = "\nSimulation speed:\n\n" + speed_table(runs)
    with (out / "summary.md").open("a") as f:
        f.write(speed)
    console = Console()
    console.print(markdown + speed)
    console.print(f"results, plot (latency.png) and table under {out}")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autellix.engine.config import EngineConfig
    from autellix.engine.llm_engine import check_engine
    from autellix.flags import from_args
    from autellix.sim.profile import measure

    console = Console(stderr=True)
    engine = from_args(EngineConfig, args)
    check_engine(engine)  # as `serve` checks it: one line, before the model loads
    profile = measure(
        engine,
        on_progress=lambda what: console.print(f"profiling: {what}"),
        command=args.command_line,
    )
    profile.save(args.out)
    a, b, c, d = profile.coefficients
    print(
        f"step time = {a * 1e3:.2f} ms + {b * 1e3:.3f} ms/new token + {c * 1e3:.3f} ms/sequence"
        f" + {d * 1e6:.3f} us/context token (mean error {profile.error():.1%} over "
        f"{len(profile.samples or [])} steps); swap {profile.swap_time_per_block * 1e6:.1f} "
        f"us/block; saved to {args.out}"
    )
    return 0
