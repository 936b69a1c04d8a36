"""`autellix simulate WORKLOAD`: engine variants x arrival rates in virtual time, with
the bench's metrics and reports (bench/metrics.py, bench/report.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.progress import Progress

from autellix.bench.engine_counters import from_stats, over_run
from autellix.bench.metrics import Summary
from autellix.bench.runner import ProgramRecord
from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.programs import SizeModel
from autellix.sim.cluster import ClusterConfig, Simulation
from autellix.sim.hardware import DEFAULT_TP, GPUS, MODELS, lookup
from autellix.sim.latency import Profile, Roofline
from autellix.workloads.spec import ProgramSpec


@dataclass
class Target:
    """What is simulated: a step-time model and the memory it implies, per replica."""

    step_time: Callable[[StepShape], float]
    num_kv_blocks: int
    swap_time_per_block: float
    max_model_len: int
    description: str


def roofline_target(gpu: str, model: str, tp: int | None, block_size: int) -> Target:
    shape = lookup(MODELS, model, "model")
    tp = tp or DEFAULT_TP.get(model.lower(), 1)
    roofline = Roofline(lookup(GPUS, gpu, "GPU"), shape, tp)
    return Target(
        roofline,
        roofline.kv_blocks(block_size),
        roofline.swap_time_per_block(block_size),
        shape.max_model_len,
        f"{shape.name} on {tp} x {roofline.gpu.name} (roofline)",
    )


def profile_target(path: str, max_model_len: int = 8192) -> Target:
    profile = Profile.load(path)
    return Target(
        profile,
        profile.num_blocks,
        profile.swap_time_per_block,
        max_model_len,
        f"{profile.model} on {profile.machine} (profile {path})",
    )


@dataclass
class RunStats:
    endpoint: str
    rate: float
    cpu_seconds: float
    simulated_seconds: float
    steps: int
    calls: int

    @property
    def speedup(self) -> float:
        return self.simulated_seconds / self.cpu_seconds if self.cpu_seconds else float("inf")


def simulate(
    specs: list[ProgramSpec],
    engine: EngineConfig,
    target: Target,
    replicas: int = 1,
    balancer: str = "locality",
    long_prompt_tokens: int = 2048,
    sizes: SizeModel | None = None,
    named_kinds: bool = False,
    fast_forward: bool = True,
) -> tuple[list[ProgramRecord], Simulation]:
    """Run `specs`; `sizes`: the program sizes the process table starts with (as learned
    by a server that has run a while), instead of none; `named_kinds`: programs name
    their kind (ClusterConfig.named_kinds); `fast_forward`: ClusterConfig.fast_forward."""
    blocks = engine.num_kv_blocks or target.num_kv_blocks
    config = ClusterConfig(
        engine=engine,
        replicas=replicas,
        balancer=balancer,
        long_prompt_tokens=long_prompt_tokens,
        num_kv_blocks=blocks,
        swap_time_per_block=target.swap_time_per_block,
        max_model_len=target.max_model_len,
        named_kinds=named_kinds,
        fast_forward=fast_forward,
    )
    sim = Simulation(config, target.step_time)
    if sizes is not None:
        sim.table.sizes = sizes
    return sim.run(specs), sim


def sweep(
    build: Callable[[float], list[ProgramSpec]],
    variants: dict[str, EngineConfig],
    rates: list[float],
    target: Target,
    **cluster,
) -> tuple[dict[str, list[Summary]], dict[tuple[str, float], list[ProgramRecord]], list[RunStats]]:
    summaries: dict[str, list[Summary]] = {name: [] for name in variants}
    records: dict[tuple[str, float], list[ProgramRecord]] = {}
    runs: list[RunStats] = []
    with Progress() as progress:
        task = progress.add_task("simulating", total=len(variants) * len(rates))
        for rate in rates:
            specs = build(rate)
            for name, engine in variants.items():
                progress.update(task, description=f"{name} @ {rate:g}/s")
                start = time.process_time()  # CPU: robust to other jobs
                recs, sim = simulate(specs, engine, target, **cluster)
                cpu = time.process_time() - start
                records[(name, rate)] = recs
                summary = Summary.of(name, rate, recs)
                counted = from_stats([r.engine.stats() for r in sim.replicas])
                summary.add_counters(over_run(from_stats([]), counted))
                summaries[name].append(summary)
                steps = sum(r.steps for r in sim.replicas)
                calls = sum(len(r.calls) for r in recs)
                runs.append(RunStats(name, rate, cpu, sim.now, steps, calls))
                progress.advance(task)
    return summaries, records, runs


def speed_table(runs: list[RunStats]) -> str:
    lines = [
        "| endpoint | rate | calls | engine steps | simulated s | CPU s | simulated s / CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.endpoint} | {r.rate:g} | {r.calls} | {r.steps} | {r.simulated_seconds:.0f} "
        f"| {r.cpu_seconds:.2f} | {r.speedup:.0f} |"
        for r in runs
    ]
    return "\n".join(lines) + "\n"
