"""The asyncio wrapper: streaming, concurrency, cancellation and failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autellix.engine.async_engine import AsyncLLMEngine, EngineDead
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import LLMEngine, QueueFull, RequestError
from autellix.engine.model.sampler import SamplingParams

PARAMS = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
PROMPTS = [[5, 6, 7], list(range(10, 40)), [9], list(range(50, 62))]


@pytest.fixture
def engine(tiny_llama: Path):
    config = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64, max_running=2)
    engine = LLMEngine.from_config(config)
    yield engine
    engine.check_idle()


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


def test_leaving_the_stream_aborts_the_call(engine: LLMEngine) -> None:
    aborted = []

    async def main() -> None:
        aengine = AsyncLLMEngine(engine, on_abort=aborted.append)
        stream = aengine.generate(PROMPTS[1], SamplingParams(max_tokens=50, ignore_eos=True))
        async for out in stream:
            assert not out.finished
            break
        await stream.aclose()
        other = await collect(aengine, PROMPTS[0])  # the loop keeps serving
        assert len(other) == 8
        await asyncio.sleep(0.05)
        await aengine.stop()

    asyncio.run(main())
    assert [o.finish_reason for o in aborted] == ["abort"]
    assert aborted[0].service > 0


def test_cancelled_task_aborts_its_call(engine: LLMEngine) -> None:
    async def main() -> None:
        aengine = AsyncLLMEngine(engine)
        task = asyncio.create_task(collect(aengine, PROMPTS[1], SamplingParams(max_tokens=200)))
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await collect(aengine, PROMPTS[2])
        await aengine.stop()

    asyncio.run(main())


def test_bad_requests_raise_before_streaming(engine: LLMEngine) -> None:
    async def main() -> None:
        aengine = AsyncLLMEngine(engine)
        with pytest.raises(RequestError, match="exceeds the model's context"):
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
    for call_id in list(engine.seqs):  # a dead engine's calls are dropped by its owner
        engine.abort(call_id)
