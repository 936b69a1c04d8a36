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

--real prints (or with --run, runs) the real-engine comparison on this CPU instead:
`autellix bench` against two `autellix serve` (SmolLM2) that differ only in
--kv-retention, with a small pool, over seeds, with a throughput search at equal latency.
"""

from __future__ import annotations

import argparse
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
from autellix.flags import engine_config
from autellix.machine import this_commit, this_machine
from autellix.sim.sweep import roofline_target, simulate
from autellix.workloads import build_workload

ENGINE = "--max-running 256 --max-prefill-tokens 2048 --policy {policy} --num-kv-blocks {blocks}"
METRICS = ("latency_mean", "latency_p95", "token_latency_mean")


def run_one(workload: str, args, blocks: int, seed: int, retention: bool) -> dict:
    specs = build_workload(workload, args.programs, rate=args.rate, seed=seed, scale=args.scale)
    flags = ENGINE.format(policy=args.policy, blocks=blocks)
    engine = engine_config(f"{flags} {'--kv-retention' if retention else '--no-kv-retention'}")
    target = roofline_target(args.gpu, args.model, None, engine.block_size)
    records, sim = simulate(specs, engine, target)
    summary = Summary.of("on" if retention else "off", args.rate, records)
    stats = sim.replicas[0].engine.stats()
    queried = stats["prefix_queried_tokens"]
    return {
        **{m: getattr(summary, m) for m in METRICS},
        "completed": summary.completed,
        "hit_rate": stats["prefix_hit_tokens"] / queried if queried else math.nan,
        "hit_rate_by_kind": {
            kind: hit / q if q else math.nan for kind, (q, hit) in stats["prefix_by_kind"].items()
        },
        **{k: stats[k] for k in ("pins_made", "pins_hit", "pins_expired", "pins_evicted")},
        "pin_blocked_seconds": stats["pin_blocked_seconds"],
        "evictions": stats["evictions"],
    }


def table(results: dict, seeds: list[int]) -> str:
    lines = [
        "| workload | KV blocks | hit rate off | hit rate on | mean latency off (s) "
        "| off/on mean [95% CI] | off/on p95 | off/on token latency | pins hit/made "
        "| pin-blocked s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
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
                    runs[side][seed] = run_one(workload, args, blocks, seed, side == "on")
                print(f"{workload} {blocks} blocks seed {seed} done", file=sys.stderr)
    header = (
        f"# KV retention on vs off (simulator)\n\n"
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`\n"
        f"- commit {this_commit()} on {this_machine()}\n"
        f"- {args.programs} programs at {args.rate:g}/s, scale {args.scale:g}, policy "
        f"{args.policy}, {args.model} on one {args.gpu} (roofline), seeds {seeds}; "
        f"{time.monotonic() - started:.0f} s of CPU\n"
        "- ratios: off/on as geometric means over seeds [95% CI]; > 1 means retention is "
        "better\n\n"
    )
    text = header + table(results, seeds)
    (out / "summary.md").write_text(text)
    raw = {f"{w}/{b}": runs for (w, b), runs in results.items()}
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    print(f"results under {out}")


def real_command(args) -> list[str]:
    blocks = args.kv_blocks[0]
    return [
        "autellix",
        "bench",
        args.workloads[0],
        "--policies",
        f"off={args.policy}:--no-kv-retention --num-kv-blocks {blocks}",
        f"on={args.policy}:--kv-retention --num-kv-blocks {blocks}",
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
        "--search",
        "3",
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
    p.add_argument("--policy", default="plas")
    p.add_argument("--gpu", default="a100")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default="benchmarks/results/kv-retention")
    p.add_argument("--real", action="store_true", help="the real engine on this CPU instead")
    p.add_argument("--run", action="store_true", help="with --real: run it, not only print it")
    p.add_argument("--real-rates", nargs="+", type=float, default=[0.1, 0.2])
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
