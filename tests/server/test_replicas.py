"""Two engine replicas in child processes behind the balancer, and one of them dying."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

MODEL = "tiny"
FIXED = {"ignore_eos": True}
ENDLESS = 30_000  # max_tokens of a call that cannot finish within a test (long_context)
LONG = " ".join(f"w{i}" for i in range(3, 40))  # 37 tokens: long for a threshold of 16


def test_locality_pins_long_prompts_and_spreads_short_ones(serve) -> None:
    server = serve(replicas=2, balancer="locality", long_prompt_tokens=16)
    assert all(r.alive for r in server.frontend.replicas)

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x") as c:
            for i in range(4):  # a program with long prompts: one replica, always
                await c.completions.create(
                    model=MODEL,
                    prompt=f"{LONG} w{i}",
                    max_tokens=3,
                    extra_body=FIXED,
                    extra_headers={"X-Autellix-Program": "long"},
                )

            async def short(i: int) -> None:
                await c.completions.create(
                    model=MODEL,
                    prompt=f"w{i} w2",
                    max_tokens=20,
                    extra_body=FIXED,
                    extra_headers={"X-Autellix-Program": "short"},
                )

            await asyncio.gather(*(short(i) for i in range(8)))

    asyncio.run(main())
    table = server.frontend.table
    long = table.get("long")
    assert long.pinned_engine is not None and long.engines == {long.pinned_engine}
    assert table.get("short").engines == {0, 1}  # concurrent short calls spread out


def test_a_killed_replica_fails_its_calls_and_the_other_keeps_serving(serve) -> None:
    server = serve(replicas=2, balancer="locality", long_prompt_tokens=16)
    body = {"model": MODEL, "prompt": LONG, "max_tokens": 200, "stream": True, **FIXED}
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream(
            "POST", "/completions", json=body, headers={"X-Autellix-Program": "doomed"}
        ) as r:
            events = (line[5:].strip() for line in r.iter_lines() if line.startswith("data:"))
            next(events)
            victim = server.frontend.table.get("doomed").pinned_engine
            server.frontend.replicas[victim].kill()
            rest = list(events)
        assert any("error" in json.loads(e) for e in rest if e != "[DONE]")
        error = next(json.loads(e)["error"] for e in rest if e != "[DONE]" and "error" in e)
        assert error["type"] == "service_unavailable" and "died" in error["message"]

        for i in range(3):
            ok = http.post(
                "/completions", json={"model": MODEL, "prompt": f"w{i}", "max_tokens": 3, **FIXED}
            )
            assert ok.status_code == 200
        health = http.get(f"{server.url}/health").json()
        assert [rep["alive"] for rep in health["replicas"]].count(False) == 1
        metrics = http.get(f"{server.url}/metrics").text
        assert f'autellix_replica_alive{{replica="{victim}"}} 0.0' in metrics
        assert server.frontend.table.get("doomed").calls == {}


@pytest.fixture
def local_ray():
    """A local Ray instance, shut down after the server that used it."""
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


def test_ray_replicas(local_ray, serve, long_context) -> None:
    server = serve(engine=long_context, replicas=2, ray="auto", balancer="least-used")

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x") as c:

            async def one(i: int) -> str:
                stream = await c.completions.create(
                    model=MODEL,
                    prompt=f"w{i} w5",
                    max_tokens=8,
                    stream=True,
                    extra_body=FIXED,
                    extra_headers={"X-Autellix-Program": "rayed"},
                )
                return "".join([ch.choices[0].text async for ch in stream])

            return await asyncio.gather(*(one(i) for i in range(6)))

    texts = asyncio.run(main())
    assert len(texts) == 6 and all(texts)
    assert server.frontend.table.get("rayed").engines == {0, 1}
    assert server.frontend.table.get("rayed").completed_calls == 6
    # leaving a stream early cancels the actor's call: the actor stops computing at once,
    # long before the call could have ended by itself
    before = sum(server.engine_stats(i)["computed_tokens"] for i in range(2))
    with (
        httpx.Client(base_url=server.base_url, timeout=60) as http,
        http.stream(
            "POST",
            "/completions",
            json={"model": MODEL, "prompt": "w1", "max_tokens": ENDLESS, "stream": True, **FIXED},
        ) as r,
    ):
        events = (line for line in r.iter_lines() if line.startswith("data:"))
        for _ in range(3):  # the call decodes
            next(events)
    server.wait_engines_stopped(below=before + ENDLESS)
