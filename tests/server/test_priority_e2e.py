"""A program's history, kept by the frontend's process table, reaches the engine with each
call and changes the order calls are served in, through every kind of replica."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

MODEL = "tiny"
FIXED = {"ignore_eos": True}


@pytest.fixture
def ray_cluster():
    """A local Ray instance, shut down after the test."""
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


async def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def served_order(server, policy: str) -> list[str]:
    """A long call holds the only running slot; a call of a program that has had lots of
    service arrives, then one of a fresh program. Returns the order those two finish in."""
    replica = server.frontend.replicas[0]
    heavy = server.frontend.table.start("heavy")
    heavy.service = heavy.critical_path = 100.0  # as if it had had 100 s of service
    finished: list[str] = []

    async def waiting() -> int:
        stats = await asyncio.to_thread(server.call, replica.stats())
        return stats["waiting"]

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x") as c:

            async def call(program: str, max_tokens: int) -> None:
                await c.completions.create(
                    model=MODEL,
                    prompt="w1 w2",
                    max_tokens=max_tokens,
                    extra_body=FIXED,
                    extra_headers={"X-Autellix-Program": program},
                )
                finished.append(program)

            hog = asyncio.create_task(call("hog", 240))
            await wait_for(lambda: _running(server, replica), "the long call to run")
            first = asyncio.create_task(call("heavy", 4))
            await wait_for(lambda: _at_least(waiting, 1), "the heavy program's call to wait")
            second = asyncio.create_task(call("light", 4))
            await wait_for(lambda: _at_least(waiting, 2), "the light program's call to wait")
            assert not hog.done(), "the long call ended before both calls queued: no order"
            await asyncio.gather(hog, first, second)

    asyncio.run(main())
    return [p for p in finished if p != "hog"]  # (the hog may be preempted once demoted)


async def _at_least(count, n: int) -> bool:
    return await count() >= n


async def _running(server, replica) -> bool:
    stats = await asyncio.to_thread(server.call, replica.stats())
    return stats["running"] == 1


@pytest.mark.parametrize("kind", ["local", "process"])
@pytest.mark.parametrize("policy", ["plas", "atlas"])
def test_a_fresh_program_overtakes_one_with_service(serve, kind: str, policy: str) -> None:
    server = serve(engine={"max_running": 1, "policy": policy}, processes=kind == "process")
    assert served_order(server, policy) == ["light", "heavy"]


def test_fcfs_keeps_arrival_order(serve) -> None:
    """The control: without program-level scheduling the heavy program's call goes first."""
    server = serve(engine={"max_running": 1, "policy": "fcfs"})
    assert served_order(server, "fcfs") == ["heavy", "light"]


def test_through_ray_actors(ray_cluster, serve) -> None:
    server = serve(engine={"max_running": 1, "policy": "plas"}, ray="auto")
    assert served_order(server, "plas") == ["light", "heavy"]


def test_a_program_kind_from_the_sdk_a_header_or_the_system_prompt(serve) -> None:
    from autellix.client import Program
    from autellix.programs import kind_of

    server = serve()
    table = server.frontend.table
    ask = {"model": MODEL, "max_tokens": 2, "extra_body": FIXED}
    system = [{"role": "system", "content": "w4 w5"}, {"role": "user", "content": "w6"}]
    with Program(server.base_url, kind="search") as program:
        program.client.chat.completions.create(messages=system, **ask)
        assert program.info()["kind"] == "search"  # the SDK's kind wins
    with openai.OpenAI(base_url=server.base_url, api_key="x") as c:
        headers = {"X-Autellix-Program": "p1", "X-Autellix-Kind": "chat"}
        c.chat.completions.create(messages=system, extra_headers=headers, **ask)
        c.chat.completions.create(
            messages=system, extra_headers={"X-Autellix-Program": "p2"}, **ask
        )
    assert table.get("p1").kind == "chat"
    assert table.get("p2").kind == kind_of(system) is not None
