"""Why and where program-level scheduling wins, in the profile-calibrated simulator.

For each workload: the law of program sizes (total service: mean, CV, and the mean
residual service at quantiles, which rises with attained service when the hazard rate
falls, i.e. heavy tails, and falls when sizes are alike); then the load where FCFS's mean
program token latency is `--load` times its light-load value, found by bisection on the
rate; there every policy runs on the same seeds, and each ratio to FCFS (mean and p95
program token latency) is given as a geometric mean over seeds with its 95% confidence
interval (Student t on the per-seed log ratios). With --equal-latency, also each
policy's throughput at equal latency: per seed, the arrival rate at which its latency
reaches what FCFS's is at that load.

    .venv/bin/python benchmarks/scheduling_study.py --profile PROFILE.json \\
        --workloads agents agents:searches=0.25 mixed:scale=0.1 --seeds 0 1 2 3 4 \\
        --out benchmarks/results/scheduling-study
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from autellix.bench.stats import ratio
from autellix.flags import engine_config
from autellix.machine import this_commit, this_machine
from autellix.programs import SizeModel
from autellix.sim.sweep import profile_target, roofline_target, simulate
from autellix.workloads import build_workload

VARIANTS = {
    "vllm": "--policy fcfs --no-prefix-caching",
    "fcfs": "--policy fcfs --no-kv-retention",
    "mlfq": "--policy mlfq",
    "plas": "--policy plas",
    "atlas": "--policy atlas",
    "gittins": "--policy gittins",
    "srpt": "--policy srpt",
    "plas-cut": "--policy plas --preempt --batch-cut",
    "gittins-cut": "--policy gittins --preempt --batch-cut",
    "srpt-cut": "--policy srpt --preempt --batch-cut",
}


def parse_workload(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = float(value) if "." in value else int(value)
    return name, params


PRIORS: dict[tuple, SizeModel] = {}  # the sizes a prior run learned, once per run it warms


def run(
    workload: str,
    params: dict,
    programs: int,
    rate: float,
    seed: int,
    flags: str,
    target,
    warm: bool = False,
    named_kinds: bool = False,
    engine_args: str = "",
):
    """One simulated run; `warm`: its process table starts with the sizes learned by a run
    of the same workload and rate under FCFS (and `engine_args`) at seed + 1000, as a
    server that has run a while knows them (otherwise it learns them from nothing, within
    the run); `named_kinds`: each program names its kind, so sizes are learned per kind."""
    params = dict(params)
    scale = params.pop("scale", 1.0)
    sizes = None
    if warm:  # a copy: the measured run goes on learning into it
        key = (workload, repr(params), programs, rate, seed, engine_args, named_kinds, id(target))
        if key not in PRIORS:
            prior = build_workload(workload, programs, rate, seed + 1000, scale, **params)
            fcfs = engine_config(f"{engine_args} --policy fcfs")
            PRIORS[key] = simulate(prior, fcfs, target, named_kinds=named_kinds)[1].table.sizes
        sizes = copy.deepcopy(PRIORS[key])
    specs = build_workload(workload, programs, rate, seed, scale, **params)
    records, sim = simulate(
        specs, engine_config(flags), target, sizes=sizes, named_kinds=named_kinds
    )
    latencies = [r.token_latency for r in records]
    preemptions = sum(r.engine.scheduler.num_preemptions for r in sim.replicas)
    return latencies, sim, preemptions, [r.workload for r in records]


def kind_means(runs) -> dict[str, list[float]]:
    """Each kind of program's mean token latency, per seed (a mixed load's kinds)."""
    by_kind: dict[str, list[float]] = {}
    for latencies, _, _, kinds in runs:
        for kind in sorted(set(kinds)):
            mine = [lat for lat, k in zip(latencies, kinds, strict=True) if k == kind]
            by_kind.setdefault(kind, []).append(statistics.mean(mine))
    return by_kind


def kind_table(by_kind: dict[str, dict[str, list[float]]]) -> list[str]:
    """Mean program token latency by kind of program, over seeds, with FCFS / it."""
    kinds = sorted(by_kind["fcfs"])
    if len(kinds) < 2:
        return []
    lines = [
        "By kind of program: mean s/token over seeds (FCFS / it, mean [95% CI]):",
        "",
        "| variant | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, means in by_kind.items():
        cells = [
            f"{statistics.mean(means[k]):.4f} ({ratio(by_kind['fcfs'][k], means[k])})"
            for k in kinds
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def seed_latencies(args, workload, params, rate, flags, target) -> list[float]:
    """Each seed's mean program token latency, sizes learned within the run."""
    return [
        statistics.mean(run(workload, params, args.programs, rate, s, flags, target)[0])
        for s in args.seeds
    ]


def mean_latency(args, workload, params, rate, flags, target) -> float:
    return statistics.mean(seed_latencies(args, workload, params, rate, flags, target))


def study_run(args, workload, params, rate, seed, flags, target, programs=None):
    """`run` with the study's --programs (unless given), --warm, --named-kinds and
    --engine-args."""
    return run(
        workload,
        params,
        programs or args.programs,
        rate,
        seed,
        flags,
        target,
        args.warm,
        args.named_kinds,
        args.engine_args,
    )


def find_rate(args, workload, params, target, flags) -> tuple[list[float], float, float]:
    """(each seed's light-load latency, the rate where FCFS's mean reaches load x their
    mean, its latency there)."""
    lights = seed_latencies(args, workload, params, 1e-4, flags, target)
    goal = args.load * statistics.mean(lights)
    lo, hi = 1e-3, 1e-3
    while mean_latency(args, workload, params, hi, flags, target) < goal and hi < 1e3:
        lo, hi = hi, hi * 4
    for _ in range(args.bisections):
        mid = math.sqrt(lo * hi)
        if mean_latency(args, workload, params, mid, flags, target) < goal:
            lo = mid
        else:
            hi = mid
    rate = math.sqrt(lo * hi)
    return lights, rate, mean_latency(args, workload, params, rate, flags, target)


def crossing(args, workload, params, seed, flags, target, bound, start) -> tuple[float, bool]:
    """The arrival rate at which this seed's mean program token latency under `flags`
    reaches `bound` (bisection in log rate, from `start`); capped: it is still under at
    64 x `start`, where the search stops."""

    def latency(rate: float) -> float:
        return statistics.mean(study_run(args, workload, params, rate, seed, flags, target)[0])

    lo = hi = start
    if latency(start) < bound:
        while latency(hi) < bound:
            if hi >= 64 * start:
                return hi, True
            lo, hi = hi, 2 * hi
    else:
        while lo > start / 64 and latency(lo) >= bound:
            lo, hi = lo / 2, lo
    for _ in range(args.bisections):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if latency(mid) < bound else (lo, mid)
    return math.sqrt(lo * hi), False


def equal_latency(args, workload, params, target, variants, start, lights) -> list[str]:
    """Each variant's throughput at FCFS's latency at the load: per seed, the rate where its
    mean program token latency reaches `--load` x FCFS's light-load latency on that seed
    (`lights`)."""
    bounds = [args.load * light for light in lights]
    found = {
        name: [
            crossing(args, workload, params, s, f"{args.engine_args} {flags}", target, b, start)
            for s, b in zip(args.seeds, bounds, strict=True)
        ]
        for name, flags in variants.items()
    }
    base = [rate for rate, _ in found["fcfs"]]
    n = 4 * args.programs
    longer = {  # each seed's latency at its crossing rate, in a stream 4x as long, / bound
        name: [
            statistics.mean(
                study_run(
                    args, workload, params, rate, s, f"{args.engine_args} {flags}", target, n
                )[0]
            )
            / b
            for (rate, _), s, b in zip(found[name], args.seeds, bounds, strict=True)
        ]
        for name, flags in variants.items()
    }
    lines = [
        f"Throughput at equal latency: per seed, the arrival rate where the mean program token"
        f" latency reaches {args.load:g}x FCFS's at light load on that seed (capped: still under"
        f" at 64x the rate above, where the search stops, so the ratio is a lower bound).",
        f"Last column: at each seed's rate, the mean latency of a stream of {n}"
        " programs over the bound, mean over seeds. Near 1 the rate is sustained; well above 1"
        " it is past what the engine sustains and holds only for a stream this long.",
        "",
        "| variant | programs/s, mean over seeds | it / FCFS [95% CI] | seeds capped"
        f" | {n} programs: latency / bound |",
        "|---|---|---|---|---|",
    ]
    for name, rates in found.items():
        mine = [rate for rate, _ in rates]
        capped = sum(c for _, c in rates)
        lines.append(
            f"| {name} | {statistics.mean(mine):.3g} | {ratio(mine, base)} | {capped} "
            f"| {statistics.mean(longer[name]):.2f} |"
        )
    return [*lines, ""]


def size_law(sizes: list[float]) -> str:
    sizes = sorted(sizes)
    mean = statistics.mean(sizes)
    cv = statistics.pstdev(sizes) / mean
    residual = []
    for q in (0.0, 0.5, 0.9):
        a = sizes[int(q * (len(sizes) - 1))] if q else 0.0
        beyond = [s - a for s in sizes if s > a]
        residual.append(statistics.mean(beyond) if beyond else 0.0)
    return (
        f"{len(sizes)} programs, mean {mean:.1f} s, CV {cv:.2f}; mean residual service "
        f"at 0 / median / p90 attained: {residual[0]:.1f} / {residual[1]:.1f} / "
        f"{residual[2]:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", help="a profile from `autellix profile` (this machine)")
    p.add_argument(
        "--gpu", help="instead of --profile: the roofline of this GPU (a100, h100) and --model"
    )
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--workloads", nargs="+", default=["agents", "agents:searches=0.25"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="NAME=FLAGS",
        help="more variants, each a name and its engine flags",
    )
    p.add_argument("--engine-args", default="", help="engine flags for every variant")
    p.add_argument("--programs", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--load", type=float, default=2.0)
    p.add_argument(
        "--rate", type=float, help="compare the variants at this rate instead of at --load"
    )
    p.add_argument("--bisections", type=int, default=6)
    p.add_argument(
        "--warm",
        action="store_true",
        help="every measured run starts with the program sizes a prior run learned",
    )
    p.add_argument(
        "--named-kinds",
        action="store_true",
        help="programs name their kind (chat, search, react, ...) as SDK users would",
    )
    p.add_argument(
        "--equal-latency",
        action="store_true",
        help="also each variant's throughput at equal latency (a rate search per seed)",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if bool(args.profile) == bool(args.gpu):
        p.error("give --profile or --gpu")
    engine = engine_config(args.engine_args)
    target = (
        profile_target(args.profile)
        if args.profile
        else roofline_target(args.gpu, args.model, None, engine.block_size)
    )
    variants = {n: f for n, f in VARIANTS.items() if n in args.variants or n == "fcfs"}
    variants.update(item.split("=", 1) for item in args.extra)
    lines = [
        "# Scheduling study (simulator)",
        "",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {this_machine()}; commit {this_commit()}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- target: {target.description}; engine flags: `{args.engine_args or '(defaults)'}`; "
        f"{args.programs} programs a run; seeds {args.seeds}; size laws "
        + ("learned by a prior run (--warm)" if args.warm else "learned within each run"),
        "",
    ]
    for text in args.workloads:
        workload, params = parse_workload(text)
        fcfs = f"{args.engine_args} {VARIANTS['fcfs']}"
        if args.rate:
            lights = seed_latencies(args, workload, params, 1e-4, fcfs, target)
            rate = args.rate
            loaded = mean_latency(args, workload, params, rate, fcfs, target)
        else:
            lights, rate, loaded = find_rate(args, workload, params, target, fcfs)
        light = statistics.mean(lights)
        sim = run(workload, params, args.programs, 1e-4, args.seeds[0], fcfs, target)[1]
        sizes = list(sim.table.sizes.everyone())
        lines += [
            f"## {text}",
            "",
            f"- sizes (FCFS, light load, seed {args.seeds[0]}): {size_law(sizes)}",
            f"- FCFS mean program token latency: {light:.3f} s/token at light load, "
            f"{loaded:.3f} at {rate:.3g} programs/s "
            + ("(--rate)" if args.rate else f"(the load where it is {args.load:g}x)"),
            "",
            "| variant | mean s/token | p95 | FCFS / it, mean [95% CI] | p95 [95% CI] "
            "| preemptions / run |",
            "|---|---|---|---|---|---|",
        ]
        results, by_kind = {}, {}
        for name, variant_flags in variants.items():
            flags = f"{args.engine_args} {variant_flags}"
            runs = [study_run(args, workload, params, rate, s, flags, target) for s in args.seeds]
            means = [statistics.mean(lat) for lat, _, _, _ in runs]
            p95s = [statistics.quantiles(lat, n=20)[-1] for lat, _, _, _ in runs]
            results[name] = (means, p95s, statistics.mean(pre for _, _, pre, _ in runs))
            by_kind[name] = kind_means(runs)
        base_means, base_p95s, _ = results["fcfs"]
        for name, (means, p95s, pre) in results.items():
            lines.append(
                f"| {name} (`{variants[name]}`) | {statistics.mean(means):.3f} "
                f"| {statistics.mean(p95s):.3f} | {ratio(base_means, means)} "
                f"| {ratio(base_p95s, p95s)} | {pre:.0f} |"
            )
        lines += ["", *kind_table(by_kind), ""]
        if args.equal_latency:
            lines += equal_latency(args, workload, params, target, variants, rate, lights)
        print("\n".join(lines), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "study.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
