"""Peak memory of `autellix serve` with the default model: start it, send a burst of
chat calls, and read the server's peak resident set (VmHWM) from /proc.

    python benchmarks/serve_memory.py [--calls 32] [--kv-cache-gib 1]

Results: benchmarks/results/serve-memory-<commit>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from autellix.bench.sweep import wait_healthy
from autellix.machine import provenance, this_commit

ROOT = Path(__file__).resolve().parent.parent

MODEL = "SmolLM2-135M-Instruct"


def mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


async def burst(url: str, calls: int) -> None:
    async with httpx.AsyncClient(timeout=600) as http:

        async def one(i: int) -> None:
            r = await http.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": MODEL,
                    "max_tokens": 64,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": f"Tell me about the number {i}."}],
                },
            )
            r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(calls)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=8320)
    args = parser.parse_args()
    commit = this_commit()
    command = "python benchmarks/serve_memory.py " + " ".join(sys.argv[1:])
    url = f"http://127.0.0.1:{args.port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autellix.cli",
            "serve",
            "--port",
            str(args.port),
            "--kv-cache-gib",
            str(args.kv_cache_gib),
            "--log-level",
            "warning",
        ]
    )
    try:
        wait_healthy(url, proc, what="autellix serve")
        idle = mib(proc.pid, "VmRSS")
        start = time.perf_counter()
        asyncio.run(burst(url, args.calls))
        elapsed = time.perf_counter() - start
        lines = [
            "# Peak memory of `autellix serve` (default model)",
            "",
            f"| KV pool | RSS after start | peak RSS after {args.calls} calls | burst time |",
            "|---|---|---|---|",
            f"| {args.kv_cache_gib:g} GiB | {idle:.0f} MiB | {mib(proc.pid, 'VmHWM'):.0f} MiB "
            f"| {elapsed:.1f} s |",
            "",
            *(f"- {line}" for line in provenance(command, commit)),
        ]
    finally:
        proc.terminate()
        proc.wait(30)
    out = ROOT / "benchmarks/results" / f"serve-memory-{commit.replace('+changes', '-dirty')}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
