"""Fair shares between tenants, measured: tenant B runs agent programs alone, then beside
tenant A's flood, on a server with tenant shares on and on one with them off.

A's flood is `--flood` clients that each send one call after another (fresh one-call
programs, the best rank program-level LAS gives; a 429 is counted and retried after a
pause). B's programs are a workload, as `autellix bench` runs it. Each scenario reports
B's program latency and A's throughput, per seed (--seeds, each a workload of B's), and
B's latency ratios over the seeds with 95% intervals; the results folder records the
command, the machine and the commit.

    python benchmarks/tenant_fairness.py --workload chatbot --programs 12 --rate 0.2 \\
        --scale 0.05 --flood 32 --serve-args "--max-running 8"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from autellix.bench.metrics import Summary
from autellix.bench.runner import Endpoint, run_specs
from autellix.bench.stats import ratio
from autellix.bench.sweep import serve_policy, warm_up
from autellix.machine import provenance, this_commit, this_machine
from autellix.workloads import build_workload, workload_params

MODEL = "bench"
KEYS = {"keys": [{"key": "sk-flood", "tenant": "A"}, {"key": "sk-agents", "tenant": "B"}]}


@dataclass
class FloodCount:
    answered: int = 0
    refused: int = 0  # 429s: the tenant's cap
    failed: int = 0  # anything else
    tokens: int = 0  # streamed, calls cut off at the end included


@dataclass
class Row:
    scenario: str
    seed: int
    tenant_shares: bool
    b: Summary
    flood: FloodCount | None
    seconds: float


async def flood_forever(url: str, clients: int, tokens: int, stop: asyncio.Event) -> FloodCount:
    """Tenant A: `clients` loops of one call after another until `stop`."""
    count = FloodCount()
    headers = {"Authorization": f"Bearer {KEYS['keys'][0]['key']}"}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=3600) as http:

        async def loop() -> None:
            while not stop.is_set():
                try:
                    status = await one_call(http, body, count)
                except httpx.HTTPError:
                    status = 0
                if status == 200:
                    count.answered += 1
                elif status == 429:
                    count.refused += 1
                    await asyncio.sleep(0.2)
                else:
                    count.failed += 1
                    await asyncio.sleep(0.5)

        tasks = [asyncio.create_task(loop()) for _ in range(clients)]
        await stop.wait()
        for task in tasks:  # calls in flight are left: the server aborts them
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return count


async def one_call(http: httpx.AsyncClient, body: dict, count: FloodCount) -> int:
    """One streamed call; its tokens are counted as they come. Returns its HTTP status."""
    async with http.stream("POST", "/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code
        async for text in r.aiter_lines():
            if not text.startswith("data: {"):
                continue
            event = json.loads(text[len("data: ") :])
            if "error" in event:
                return 500  # a stream that ends in an error event
            if any(c["delta"].get("content") for c in event["choices"]):
                count.tokens += 1
    return 200


async def scenario(ep: Endpoint, specs: list, args: argparse.Namespace, flood: bool):
    stop = asyncio.Event()
    flooding = None
    if flood:
        flooding = asyncio.create_task(
            flood_forever(ep.base_url, args.flood, args.flood_tokens, stop)
        )
        await asyncio.sleep(args.settle)  # the flood fills the batch and the queues
    records = await run_specs(specs, ep, timeout=args.timeout)
    stop.set()
    return records, (await flooding if flooding is not None else None)


def run(
    ep: Endpoint, args: argparse.Namespace, seed: int, name: str, shares: bool, flood: bool
) -> Row:
    specs = build_workload(
        args.workload,
        args.programs,
        rate=args.rate,
        seed=seed,
        scale=args.scale,
        **workload_params(args.workload_arg),
    )
    start = time.monotonic()
    records, count = asyncio.run(scenario(ep, specs, args, flood))
    elapsed = time.monotonic() - start
    summary = Summary.of(name, args.rate, records, this_machine())
    row = Row(name, seed, shares, summary, count, elapsed)
    print(line(row), flush=True)
    return row


def line(row: Row) -> str:
    b, f = row.b, row.flood
    flood = (
        f"{f.answered} | {f.refused} | {f.failed} | {f.tokens / row.seconds:.1f}"
        if f
        else "- | - | - | -"
    )
    return (
        f"| {row.scenario} | {row.seed} | {b.completed}/{b.programs} | {b.latency_mean:.2f} | "
        f"{b.latency_p95:.2f} | {b.token_latency_mean:.3f} | {b.ttft_mean:.2f} | {flood} |"
    )


HEADER = (
    "| scenario | seed | B done/all | B mean latency (s) | B p95 (s) "
    "| B mean token latency (s/tok) | B mean TTFT (s) "
    "| A answered | A 429s | A other errors | A tokens/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def measure(args: argparse.Namespace, out: Path) -> list[Row]:
    keys = out / "keys.json"
    keys.write_text(json.dumps(KEYS))
    rows: list[Row] = []
    with open(out / "servers.log", "w") as log:
        for shares in (True, False):
            flag = "--tenant-shares" if shares else "--no-tenant-shares"
            serve_args = [
                *shlex.split(args.serve_args),
                *("--api-keys", str(keys), "--served-model-name", MODEL, flag),
            ]
            with serve_policy(args.policy, args.port, serve_args, log=log) as ep:
                ep.model, ep.api_key = MODEL, KEYS["keys"][1]["key"]
                with contextlib.suppress(Exception):
                    asyncio.run(warm_up(ep))
                on = "on" if shares else "off"
                for seed in range(args.seed, args.seed + args.seeds):
                    if shares:  # alone, B is the only tenant: shares change nothing
                        rows.append(run(ep, args, seed, "B alone", shares, flood=False))
                    name = f"B beside A's flood, shares {on}"
                    rows.append(run(ep, args, seed, name, shares, flood=True))
    return rows


def ratios(rows: list[Row]) -> list[str]:
    """B's mean program latency, one scenario over another, over the seeds."""

    def latency(scenario: str) -> list[float]:
        return [
            r.b.latency_mean for r in sorted(rows, key=lambda r: r.seed) if r.scenario == scenario
        ]

    alone = latency("B alone")
    on, off = latency("B beside A's flood, shares on"), latency("B beside A's flood, shares off")
    return [
        "B's mean program latency, geometric mean of the per-seed ratios [95% CI]:",
        "",
        f"- beside the flood, shares off / shares on: {ratio(off, on)}",
        f"- beside the flood with shares on / alone: {ratio(on, alone)}",
    ]


def report(args: argparse.Namespace, rows: list[Row], out: Path) -> str:
    title = (
        f"{args.workload}: {args.programs} programs at {args.rate:g}/s, scale {args.scale:g}; "
        f"A floods with {args.flood} clients of {args.flood_tokens} tokens; policy {args.policy}"
    )
    text = "\n".join(
        [
            f"### Tenant shares: {title}",
            "",
            HEADER,
            *map(line, rows),
            "",
            *ratios(rows),
            "",
            *provenance(args.command_line, args.commit),
            "",
        ]
    )
    (out / "summary.md").write_text(text)
    data = [asdict(r) for r in rows]
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="chatbot", help="B's programs (default: %(default)s)")
    p.add_argument("--programs", type=int, default=12)
    p.add_argument("--rate", type=float, default=0.2, help="B's programs per second")
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--seeds", type=int, default=5, help="seeds, each a workload of B's")
    p.add_argument("--workload-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--flood", type=int, default=32, help="A's concurrent clients")
    p.add_argument("--flood-tokens", type=int, default=64, help="tokens of each of A's calls")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of flood before B starts")
    p.add_argument("--policy", default="plas")
    p.add_argument("--serve-args", default="--max-running 8", help="more `autellix serve` flags")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per scenario at most")
    p.add_argument("--port", type=int, default=8350)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.command_line = shlex.join(["python", *sys.argv])
    args.commit = this_commit()
    out = args.out or Path(f"benchmarks/results/tenant-fairness-{args.commit}")
    out.mkdir(parents=True, exist_ok=True)
    print(HEADER, flush=True)
    rows = measure(args, out)
    print(report(args, rows, out))
    print(f"results under {out}")


if __name__ == "__main__":
    main()
