"""What the Autellix frontend adds to a call it forwards to a backend (`autellix serve
--backend URL`), at 100 calls in flight: the same rounds of concurrent calls sent to a
backend directly and through the frontend. The backend is a stub that answers at once
(4 streamed tokens), so that what differs is the frontend's own work: tokenizing, the
process table, the balancer, forwarding and re-streaming.

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

        def events():  # the frontend always streams from its backends
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


async def rounds(base: str, model: str, concurrent: int, count: int) -> tuple[list, list]:
    """Per-call latencies and per-round wall times over `count` rounds."""
    latencies: list[float] = []
    walls: list[float] = []
    limits = httpx.Limits(max_connections=concurrent * 2)
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
    parser.add_argument("--rounds", type=int, default=20)
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
        results = {}
        served = httpx.get(f"{front_url}/v1/models").json()["data"][0]["id"]
        for name, url, model in (("direct", stub_url, "stub"), ("frontend", front_url, served)):
            asyncio.run(rounds(url, model, args.concurrent, 2))  # warm-up
            results[name] = asyncio.run(rounds(url, model, args.concurrent, args.rounds))
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
        " tokens from a stub backend that answers at once), direct and through the frontend",
        "",
        "| path | median call latency (ms) | p95 (ms) | median round (ms) |",
        "|---|---|---|---|",
    ]
    for name, (lat, wall) in results.items():
        p95 = statistics.quantiles(lat, n=20)[18]
        lines.append(
            f"| {name} | {statistics.median(lat) * 1e3:.1f} | {p95 * 1e3:.1f} |"
            f" {statistics.median(wall) * 1e3:.0f} |"
        )
    lines += [
        "",
        f"Added per call (round time through the frontend minus direct, over {args.concurrent}"
        f" calls): {per_call * 1e3:.2f} ms; added to a call's median latency:"
        f" {(statistics.median(front_lat) - statistics.median(direct_lat)) * 1e3:.1f} ms.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
