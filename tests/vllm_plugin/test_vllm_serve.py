"""The real `vllm serve` (vllm-cpu) with `--scheduler-cls autellix.vllm_scheduler...`:
a fresh program's call overtakes a running call of a program with history, through the
official OpenAI client, and vLLM holds no KV and no request afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "benchmarks" / "peers" / "vllm_cpu.sh"
SETTINGS = json.dumps(
    {"autellix": {"policy": "plas", "first_boundary": 0.5, "num_queues": 4, "preempt": True}}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = str(free_port())
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    args = [
        "--scheduler-cls",
        "autellix.vllm_scheduler.AutellixScheduler",
        "--max-num-seqs",
        "1",
        "--enforce-eager",
        "--additional-config",
        SETTINGS,
    ]
    subprocess.run([PEER, "serve", port, *args], env=env, check=True, timeout=600)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([PEER, "stop", port], check=False, timeout=120)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    match = re.search(rf"^vllm:{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_a_fresh_program_overtakes_a_running_call_and_nothing_is_left(server):
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="none")
    done: list[str] = []

    async def call(program: str, tokens: int, tag: str) -> None:
        await client.completions.create(
            model="SmolLM2-135M-Instruct",
            prompt="Once upon a time",
            max_tokens=tokens,
            temperature=0,
            extra_body={"ignore_eos": True, "vllm_xargs": {"autellix_program": program}},
        )
        done.append(tag)

    async def long_call(started: asyncio.Event) -> None:
        stream = await client.completions.create(
            model="SmolLM2-135M-Instruct",
            prompt="Once upon a time",
            max_tokens=400,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True, "vllm_xargs": {"autellix_program": "A"}},
        )
        chunks = 0
        async for _ in stream:
            chunks += 1
            if chunks == 10:  # it holds the one slot, whatever the machine's speed
                started.set()
        done.append("long")

    async def scenario() -> None:
        await call("A", 40, "history")  # program A: past the first queue
        started = asyncio.Event()
        long = asyncio.create_task(long_call(started))
        await started.wait()
        await asyncio.gather(long, call("B", 5, "fresh"))

    preemptions = metric(server, "num_preemptions_total")
    asyncio.run(scenario())
    assert done == ["history", "fresh", "long"]
    assert metric(server, "num_preemptions_total") == preemptions + 1
    deadline = time.monotonic() + 10
    while metric(server, "num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "num_requests_running") == 0
    assert metric(server, "num_requests_waiting") == 0
    assert metric(server, "kv_cache_usage_perc") == 0


def test_the_bench_reads_vllms_prefix_cache_counters(server):
    """`autellix bench` reports each endpoint's prefix-cache hit rate and preemptions from
    its /metrics: vLLM's counters are found, and a prompt sent twice is a hit the second
    time."""
    from autellix.bench.engine_counters import hit_rate, read_counters

    before = read_counters(server)
    assert before is not None  # and vLLM's one counter of those Autellix reports over a run
    assert before.totals == {"preemptions": metric(server, "num_preemptions_total")}
    with openai.OpenAI(base_url=f"{server}/v1", api_key="none") as client:
        for _ in range(2):
            client.completions.create(
                model="SmolLM2-135M-Instruct",
                prompt="The same long prompt, word after word, " * 60,
                max_tokens=1,
            )
    after = read_counters(server)
    assert after is not None and after.prefix[1] > before.prefix[1]
    rate = hit_rate(before.prefix, after.prefix)
    assert rate is not None and 0.3 < rate < 0.6  # the second call's prompt, but its last block
