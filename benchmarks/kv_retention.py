"""KV retention on vs off (`--kv-retention`), under KV pressure, over seeds.

Simulator (default): react, chatbot and mixed in virtual time on the roofline of an A100
serving Llama-3.1-8B, the same engine code as `autellix serve`, with the KV pool cut to
--kv-blocks per replica. A full A100-80GB holds ~29,000 blocks for Llama-8B: with it,
60 react programs at 4/s keep 90% prefix hits under plain LRU and nothing is under
pressure. At 1,000 blocks (16k tokens) LRU keeps a quarter of them and at 600 blocks
about a seventh: that is the pressure retention is for. For each workload, pool and
seed it reports program latency (mean, p95), token latency and the prefix-cache hit
rate, and off/on ratios as geometric means over seeds with 95% CIs (> 1: retention is
better).

    .venv/bin/python benchmarks/kv_retention.py --seeds 5 --kv-blocks 600 1000 2000

--warm starts each run's process table with the program sizes a prior run learned (seed
+ 1000, FCFS, same pool), as a server that has run a while knows them (Gittins, the
default policy, ranks by them). --equal-latency adds throughput at equal latency: per
seed, the arrival rate of a --stream-programs stream at which the mean program latency
reaches --load x its light-load value, with retention off and on (bisection in log
rate), and the ratio of those rates.

--real prints (or with --run, runs) the real-engine comparison on this CPU instead:
`autellix bench` against two `autellix serve` (SmolLM2) that differ only in
--kv-retention, with a small pool, over seeds, with a throughput search at equal latency.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from autellix.bench.metrics import Summary
from autellix.bench.stats import ratio
from autellix.engine.config import EngineConfig
from autellix.flags import engine_config
from autellix.machine import this_commit, this_machine
from autellix.programs import SizeModel
from autellix.sim.sweep import roofline_target, simulate
from autellix.workloads import build_workload

ENGINE = "--max-running 256 --max-prefill-tokens 2048 --policy {policy} --num-kv-blocks {blocks}"
METRICS = ("latency_mean", "latency_p95", "token_latency_mean")
STATS = "pins_made pins_hit pins_expired pins_evicted pin_blocked_seconds preemptions evictions"


PRIORS: dict[tuple, SizeModel] = {}  # sizes learned by a prior run, per setting


def run_one(
    workload: str, args, blocks: int, seed: int, retention: bool, programs: int, rate: float
) -> dict:
    specs = build_workload(workload, programs, rate=rate, seed=seed, scale=args.scale)
    flags = ENGINE.format(policy=args.policy, blocks=blocks) + swap_flag(args)
    side = f"--kv-retention {args.on_flags}" if retention else "--no-kv-retention"
    engine = engine_config(f"{flags} {side}")
    target = roofline_target(args.gpu, args.model, None, engine.block_size)
    records, sim = simulate(
        specs, engine, target, sizes=prior_sizes(workload, args, blocks, seed, programs)
    )
    summary = Summary.of("on" if retention else "off", rate, records)
    stats = sim.replicas[0].engine.stats()
    pins = sim.replicas[0].engine.blocks.pin_stats
    queried = stats["prefix_queried_tokens"]
    return {
        **{m: getattr(summary, m) for m in METRICS},
        "completed": summary.completed,
        "hit_rate": stats["prefix_hit_tokens"] / queried if queried else math.nan,
        "hit_rate_by_kind": {
            kind: hit / q if q else math.nan for kind, (q, hit) in stats["prefix_by_kind"].items()
        },
        **{k: stats[k] for k in STATS.split()},
        # blocks, not bytes: simulated blocks hold no tensors
        "to_host_blocks": pins.to_host,
        "from_host_blocks": pins.from_host,
    }


def swap_flag(args) -> str:
    return f" --swap-blocks {args.swap_blocks}" if args.swap_blocks else ""


def prior_sizes(workload: str, args, blocks: int, seed: int, programs: int) -> SizeModel | None:
    """With --warm, the sizes a run at seed + 1000 (FCFS, retention off, --rate) learned;
    a copy, since the measured run goes on learning into it."""
    if not args.warm:
        return None
    key = (workload, blocks, seed, programs)
    if key not in PRIORS:
        specs = build_workload(workload, programs, args.rate, seed + 1000, args.scale)
        flags = ENGINE.format(policy="fcfs", blocks=blocks) + swap_flag(args)
        engine = engine_config(f"{flags} --no-kv-retention")
        target = roofline_target(args.gpu, args.model, None, engine.block_size)
        PRIORS[key] = simulate(specs, engine, target)[1].table.sizes
    return copy.deepcopy(PRIORS[key])


def crossing(workload: str, args, blocks: int, seed: int, retention: bool, bound: float) -> float:
    """The rate at which the mean program latency of a --stream-programs stream reaches
    `bound`: doubling or halving from 0.25/s until a factor of 2 brackets it, then
    --bisections in log rate."""

    def latency(rate: float) -> float:
        run = run_one(workload, args, blocks, seed, retention, args.stream_programs, rate)
        return run["latency_mean"]

    if latency(0.25) < bound:
        lo, hi = 0.25, 0.5
        while latency(hi) < bound:
            lo, hi = hi, 2 * hi
    else:
        lo, hi = 0.125, 0.25
        while latency(lo) >= bound:
            lo, hi = lo / 2, lo
    for _ in range(args.bisections):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if latency(mid) < bound else (lo, mid)
    return math.sqrt(lo * hi)


def equal_latency(args, seeds: list[int]) -> str:
    lines = [
        f"\n## Throughput at equal latency: {args.stream_programs} programs a run, the rate "
        f"where the mean program latency reaches {args.load:g}x its light-load value\n",
        "| workload | KV blocks | light-load latency (s) | rate off (programs/s) "
        "| rate on | on/off [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for workload in args.workloads:
        for blocks in args.equal_latency or args.kv_blocks:
            lights, offs, ons = [], [], []
            for seed in seeds:
                light = run_one(workload, args, blocks, seed, False, args.stream_programs, 1e-3)
                bound = args.load * light["latency_mean"]
                lights.append(light["latency_mean"])
                offs.append(crossing(workload, args, blocks, seed, False, bound))
                ons.append(crossing(workload, args, blocks, seed, True, bound))
                print(
                    f"{workload} {blocks} blocks seed {seed}: {offs[-1]:.3f} {ons[-1]:.3f}/s",
                    file=sys.stderr,
                )
            lines.append(
                f"| {workload} | {blocks} | {statistics.fmean(lights):.2f} "
                f"| {' '.join(f'{r:.3f}' for r in offs)} | {' '.join(f'{r:.3f}' for r in ons)} "
                f"| {ratio(ons, offs)} |"
            )
    return "\n".join(lines) + "\n"


def table(results: dict, seeds: list[int]) -> str:
    lines = [
        "| workload | KV blocks | hit rate off | hit rate on | mean latency off (s) "
        "| off/on mean [95% CI] | off/on p95 | off/on token latency | pins hit/made "
        "| blocks to host/back | pin-blocked s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, blocks), runs in results.items():
        off, on = runs["off"], runs["on"]

        def col(side, key):
            return [side[s][key] for s in seeds]

        lines.append(
            f"| {workload} | {blocks} | {statistics.fmean(col(off, 'hit_rate')):.3f} "
            f"| {statistics.fmean(col(on, 'hit_rate')):.3f} "
            f"| {statistics.fmean(col(off, 'latency_mean')):.2f} "
            f"| {ratio(col(off, 'latency_mean'), col(on, 'latency_mean'))} "
            f"| {ratio(col(off, 'latency_p95'), col(on, 'latency_p95'))} "
            f"| {ratio(col(off, 'token_latency_mean'), col(on, 'token_latency_mean'))} "
            f"| {sum(col(on, 'pins_hit'))}/{sum(col(on, 'pins_made'))} "
            f"| {sum(col(on, 'to_host_blocks'))}/{sum(col(on, 'from_host_blocks'))} "
            f"| {statistics.fmean(col(on, 'pin_blocked_seconds')):.1f} |"
        )
    return "\n".join(lines) + "\n"


def simulate_all(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.seeds))
    results: dict = {}
    started = time.monotonic()
    for workload in args.workloads:
        for blocks in args.kv_blocks:
            runs = results.setdefault((workload, blocks), {"off": {}, "on": {}})
            for seed in seeds:
                for side in ("off", "on"):
                    runs[side][seed] = run_one(
                        workload, args, blocks, seed, side == "on", args.programs, args.rate
                    )
                print(f"{workload} {blocks} blocks seed {seed} done", file=sys.stderr)
    searches = equal_latency(args, seeds) if args.equal_latency is not None else ""
    header = (
        f"# KV retention on vs off (simulator)\n\n"
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`\n"
        f"- commit {this_commit()} on {this_machine()}\n"
        f"- {args.programs} programs at {args.rate:g}/s, scale {args.scale:g}, policy "
        f"{args.policy}, {args.model} on one {args.gpu} (roofline), seeds {seeds}, "
        f"retention side: `--kv-retention {args.on_flags}`, host swap pool "
        f"{args.swap_blocks or 'twice the KV pool (the default)'} blocks, sizes "
        f"{'learned by a prior run (--warm)' if args.warm else 'learned within each run'}; "
        f"{time.monotonic() - started:.0f} s of CPU\n"
        "- ratios: off/on as geometric means over seeds [95% CI]; > 1 means retention is "
        "better\n\n"
    )
    text = header + table(results, seeds) + searches
    (out / "summary.md").write_text(text)
    raw = {f"{w}/{b}": runs for (w, b), runs in results.items()}
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    print(f"results under {out}")


def real_command(args) -> list[str]:
    blocks = args.kv_blocks[0]
    return [
        str(Path(sys.executable).with_name("autellix")),  # the CLI beside this Python
        "bench",
        args.workloads[0],
        "--policies",
        f"off={args.policy}:--no-kv-retention --num-kv-blocks {blocks}{swap_flag(args)}",
        f"on={args.policy}:{' '.join(['--kv-retention', *args.on_flags.split()])} "
        f"--num-kv-blocks {blocks}{swap_flag(args)}",
        "--baseline",
        "off",
        "--seeds",
        str(args.seeds),
        "--seed",
        str(args.seed),
        "--programs",
        str(args.programs),
        "--rates",
        *(f"{r:g}" for r in args.real_rates),
        "--scale",
        f"{args.scale:g}",
        "--search",
        str(args.real_search),
        "--out",
        str(Path(args.out) / f"real-{args.workloads[0]}"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=["react", "chatbot", "mixed"])
    p.add_argument("--kv-blocks", nargs="+", type=int, default=[600, 1000, 2000])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--programs", type=int, default=60)
    p.add_argument("--rate", type=float, default=4.0, help="programs/s (simulator)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--policy", default=EngineConfig().policy)
    p.add_argument("--warm", action="store_true", help="sizes learned by a prior run")
    p.add_argument(
        "--on-flags",
        default="",
        help="more engine flags for the retention side, e.g. "
        "'--no-kv-retention-host' (pins are dropped, not copied to host, when they give way)",
    )
    p.add_argument(
        "--equal-latency",
        nargs="*",
        type=int,
        metavar="BLOCKS",
        help="add throughput at equal latency, for these pools (none named: every --kv-blocks)",
    )
    p.add_argument(
        "--swap-blocks",
        type=int,
        help="host swap pool in blocks, per replica (default: twice the KV pool); retention's "
        "host copies may fill half of it",
    )
    p.add_argument("--stream-programs", type=int, default=200)
    p.add_argument("--load", type=float, default=2.0, help="the bound, x light-load latency")
    p.add_argument("--bisections", type=int, default=5)
    p.add_argument("--gpu", default="a100")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default="benchmarks/results/kv-retention")
    p.add_argument("--real", action="store_true", help="the real engine on this CPU instead")
    p.add_argument("--run", action="store_true", help="with --real: run it, not only print it")
    p.add_argument("--real-rates", nargs="+", type=float, default=[0.1, 0.2])
    p.add_argument("--real-search", type=int, default=3, help="bisections of the rate search")
    args = p.parse_args()
    if not args.real:
        simulate_all(args)
        return
    command = real_command(args)
    print(shlex.join(command))
    if args.run:
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
