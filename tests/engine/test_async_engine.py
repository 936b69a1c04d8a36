"""The asyncio wrapper: streaming, concurrency, cancellation and failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autellix.engine.async_engine import AsyncLLMEngine, EngineDead
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, LLMEngine, QueueFull
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot

PARAMS = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
PROMPTS = [[5, 6, 7], list(range(10, 40)), [9], list(range(50, 62))]
# A call that cannot finish by itself within a test: tens of seconds of decoding.
LONG = 30_000
ENDLESS = SamplingParams(max_tokens=LONG, ignore_eos=True)


@pytest.fixture
def engine(tiny_llama: Path):
    config = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64, max_running=2)
    engine = LLMEngine.from_config(config)
    yield engine
    engine.check_idle()


@pytest.fixture
def long_engine(make_tiny_model: Callable[..., Path]):
    """The tiny model with a context long enough for a call of LONG tokens."""
    folder = make_tiny_model(max_position_embeddings=LONG + 64)
    config = EngineConfig(model=str(folder), block_size=4, num_kv_blocks=LONG // 4 + 64)
    engine = LLMEngine.from_config(config)
    yield engine
    engine.check_idle()


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


async def assert_stopped(engine: LLMEngine) -> None:
    """The engine lets go of the call at once (no call, no KV block) and computes no
    more tokens, far fewer than the call asked for: it was stopped, it did not finish."""
    await eventually(lambda: not engine.calls and engine.kv_usage() == 0, "the engine let go")
    computed = engine.scheduler.computed_tokens
    await asyncio.sleep(0.1)
    assert engine.scheduler.computed_tokens == computed, "the engine still computes"
    assert engine.stats()["computed_tokens"] == computed < LONG


async def collect(aengine: AsyncLLMEngine, prompt, params=PARAMS) -> list[int]:
    tokens = []
    async for out in aengine.generate(prompt, params):
        tokens += out.new_token_ids
    assert out.finished and out.num_output_tokens == len(tokens)
    return tokens


def test_streams_match_the_sync_engine(engine: LLMEngine) -> None:
    expected = [s.output_ids for s in engine.generate(PROMPTS, PARAMS)]

    async def main() -> list[list[int]]:
        aengine = AsyncLLMEngine(engine)
        try:
            return await asyncio.gather(*(collect(aengine, p) for p in PROMPTS))
        finally:
            await aengine.stop()

    assert asyncio.run(main()) == expected


def test_leaving_the_stream_aborts_the_call(long_engine: LLMEngine) -> None:
    engine = long_engine
    aborted = []

    async def main() -> None:
        aengine = AsyncLLMEngine(engine, on_abort=aborted.append)
        stream = aengine.generate(PROMPTS[1], ENDLESS, call_id="leaver")
        async for out in stream:
            assert not out.finished
            if out.num_output_tokens == 3:
                break
        await stream.aclose()
        await assert_stopped(engine)
        other = await collect(aengine, PROMPTS[0])  # the loop keeps serving
        assert len(other) == 8
        await aengine.stop()

    asyncio.run(main())
    assert [(o.call_id, o.finish_reason) for o in aborted] == [("leaver", "abort")]
    assert aborted[0].service > 0 and 3 <= aborted[0].num_output_tokens < LONG


def test_cancelled_task_aborts_its_call(long_engine: LLMEngine) -> None:
    engine = long_engine

    async def main() -> None:
        aengine = AsyncLLMEngine(engine)
        task = asyncio.create_task(collect(aengine, PROMPTS[1], ENDLESS))
        # cancelled while it decodes, not before it reached the engine
        await eventually(
            lambda: any(s.num_output_tokens >= 3 for s in list(engine.calls.values())),
            "the call decodes",
        )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        await assert_stopped(engine)
        assert len(await collect(aengine, PROMPTS[2])) == 8
        await aengine.stop()

    asyncio.run(main())


def test_bad_requests_raise_before_streaming(engine: LLMEngine) -> None:
    async def main() -> None:
        aengine = AsyncLLMEngine(engine)
        with pytest.raises(CallError, match="exceeds the model's context"):
            await collect(aengine, [5] * 300)
        engine.config.max_waiting = 0
        with pytest.raises(QueueFull):
            await collect(aengine, [5])
        await aengine.stop()

    asyncio.run(main())


def test_a_failing_model_fails_every_call_and_later_ones(engine: LLMEngine) -> None:
    def boom(batch):
        raise RuntimeError("device lost")

    engine.executor.execute = boom

    async def main() -> None:
        aengine = AsyncLLMEngine(engine)
        results = await asyncio.gather(
            collect(aengine, PROMPTS[0]), collect(aengine, PROMPTS[2]), return_exceptions=True
        )
        assert all(isinstance(r, EngineDead) for r in results)
        with pytest.raises(EngineDead, match="device lost"):
            await collect(aengine, PROMPTS[0])
        await aengine.stop()

    asyncio.run(main())
    for call_id in list(engine.calls):  # a dead engine's calls are dropped by its owner
        engine.abort(call_id)


def test_a_local_replica_loads_and_steps_on_one_thread(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each thread that calls into torch gets its own OpenMP team; a second team slows
    # every step, so loading and stepping share one thread, never the loop's.
    from autellix.server.replica import LocalReplica

    threads: set[int] = set()
    load, step = LLMEngine.from_config, LLMEngine.step

    def recorded(fn):
        def call(*args, **kwargs):
            threads.add(threading.get_ident())
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(LLMEngine, "from_config", staticmethod(recorded(load)))
    monkeypatch.setattr(LLMEngine, "step", recorded(step))
    config = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)

    async def main() -> None:
        replica = LocalReplica(0, config)
        await replica.start()
        try:
            outs = replica.generate([5, 6, 7], PARAMS, "c", "p", ProgramSnapshot())
            assert [o async for o in outs][-1].num_output_tokens == PARAMS.max_tokens
        finally:
            await replica.stop()

    asyncio.run(main())
    assert len(threads) == 1 and threading.get_ident() not in threads
