"""What the Autellix frontend adds to a call it forwards to a backend (`autellix serve
--backend URL`), at 100 calls in flight: the same rounds of concurrent calls sent to a
backend directly and through the frontend. The backend is a stub that answers at once
(4 streamed tokens), so that what differs is the frontend's own work: tokenizing, the
process table, the balancer, forwarding and re-streaming.

Two measures: the frontend's CPU time per call (its process's user + system seconds over
the timed rounds; Linux /proc), and the round time through the frontend minus direct, per
call. The second is what a client waits, but on a small machine the client (the official
`openai` client, itself milliseconds of CPU a call), the stub and the frontend share the
cores, so it moves with how they are scheduled; the CPU time of every process is
recorded beside it.

    python benchmarks/frontend_overhead.py --out benchmarks/results/frontend-overhead.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from autellix.machine import this_commit, this_machine

TOKENS = 4


def stub_app():
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": [{"id": "stub", "max_model_len": 2048}]}

    @app.post("/v1/completions")
    async def completions(body: dict):
        n = len(body["prompt"]) if isinstance(body["prompt"], list) else 8
        usage = {"prompt_tokens": n, "completion_tokens": TOKENS, "total_tokens": n + TOKENS}
        if not body.get("stream"):  # a client straight to the stub
            choice = {"index": 0, "text": " a" * TOKENS, "finish_reason": "length"}
            return {"id": "x", "object": "text_completion", "created": 0, "model": "stub",
                    "choices": [choice], "usage": usage}  # fmt: skip

        async def events():  # the frontend always streams from its backends
            for i in range(TOKENS):
                done = "length" if i == TOKENS - 1 else None
                choice = {"index": 0, "text": " a", "finish_reason": done}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{url} exited during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} not ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def rounds(base: str, model: str, concurrent: int, count: int) -> tuple[list, list]:
    """Per-call latencies and per-round wall times over `count` rounds."""
    latencies: list[float] = []
    walls: list[float] = []
    limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
    http = httpx.AsyncClient(limits=limits, timeout=60)
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", http_client=http) as c:

        async def call() -> None:
            t = time.perf_counter()
            await c.completions.create(model=model, prompt="Say something.", max_tokens=TOKENS)
            latencies.append(time.perf_counter() - t)

        for _ in range(count):
            t = time.perf_counter()
            await asyncio.gather(*(call() for _ in range(concurrent)))
            walls.append(time.perf_counter() - t)
    return latencies, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)  # run the stub here
    args = parser.parse_args()
    if args.stub:
        import uvicorn

        uvicorn.run(stub_app(), host="127.0.0.1", port=args.stub, log_level="warning")
        return
    stub_port, front_port = free_port(), free_port()
    stub_url, front_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{front_port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stub = subprocess.Popen([sys.executable, __file__, "--stub", str(stub_port)], env=env)
    front = subprocess.Popen(
        [sys.executable, "-m", "autellix.cli", "serve", "--port", str(front_port),
         "--backend", stub_url, "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        wait_ready(stub_url, stub)
        wait_ready(front_url, front)
        results, cpu = {}, {}
        served = httpx.get(f"{front_url}/v1/models").json()["data"][0]["id"]
        for name, url, model in (("direct", stub_url, "stub"), ("frontend", front_url, served)):
            asyncio.run(rounds(url, model, args.concurrent, 5))  # warm-up
            before = (time.process_time(), cpu_seconds(stub.pid), cpu_seconds(front.pid))
            results[name] = asyncio.run(rounds(url, model, args.concurrent, args.rounds))
            after = (time.process_time(), cpu_seconds(stub.pid), cpu_seconds(front.pid))
            calls = args.concurrent * args.rounds
            cpu[name] = [(b - a) / calls for a, b in zip(before, after, strict=True)]
    finally:
        for process in (front, stub):
            process.terminate()
            process.wait(30)
    (direct_lat, direct_wall), (front_lat, front_wall) = results["direct"], results["frontend"]
    per_call = (statistics.median(front_wall) - statistics.median(direct_wall)) / args.concurrent
    lines = [
        "# The frontend's overhead per forwarded call",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}",
        f"- {args.rounds} rounds of {args.concurrent} concurrent completions ({TOKENS} streamed"
        " tokens from a stub backend that answers at once), direct and through the frontend;"
        " the client keeps its connections alive",
        "",
        "| path | median call latency (ms) | p95 (ms) | median round (ms) |"
        " CPU ms per call: client | stub | frontend |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (lat, wall) in results.items():
        p95 = statistics.quantiles(lat, n=20)[18]
        client, stub_cpu, front_cpu = (f"{c * 1e3:.2f}" for c in cpu[name])
        lines.append(
            f"| {name} | {statistics.median(lat) * 1e3:.1f} | {p95 * 1e3:.1f} |"
            f" {statistics.median(wall) * 1e3:.0f} | {client} | {stub_cpu} | {front_cpu} |"
        )
    lines += [
        "",
        f"The frontend's CPU per forwarded call: {cpu['frontend'][2] * 1e3:.2f} ms. Added per"
        f" call (round time through the frontend minus direct, over {args.concurrent} calls):"
        f" {per_call * 1e3:.2f} ms; added to a call's median latency:"
        f" {(statistics.median(front_lat) - statistics.median(direct_lat)) * 1e3:.1f} ms.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
