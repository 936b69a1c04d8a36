"""`autellix profile`: time the real engine's steps on this machine and fit a Profile.

The engine runs batches of synthetic prompts (every batch size and prompt length on a
grid, with chunked prefill and decode steps in between as the scheduler makes them);
each step's shape and wall time (the whole `LLMEngine.step`) is recorded, and the
linear model of
`latency.Profile` is fitted to them. Swap time per block is timed on the executor's
own pools.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.engine.executor import ModelExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.machine import provenance, this_machine
from autellix.sim.latency import Profile

BATCHES = (1, 2, 4, 8, 16, 32)
PROMPTS = (16, 128, 512)


def measure(
    config: EngineConfig,
    batches: tuple[int, ...] = BATCHES,
    prompts: tuple[int, ...] = PROMPTS,
    decode_tokens: int = 16,
    on_progress: Callable[[str], None] = lambda _: None,
    command: str = "",
) -> Profile:
    """Time the engine's steps over batches of `batches` prompts of `prompts` tokens and fit
    the latency model; `command` is recorded with the machine and commit it ran at."""
    started = provenance(command)
    engine = LLMEngine.from_config(config)
    executor = engine.executor
    assert isinstance(executor, ModelExecutor)
    shapes = _record_shapes(executor)
    rng = random.Random(0)
    vocab = executor.model.config.vocab_size
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    samples: list[tuple[StepShape, float]] = []
    for n in batches:
        for length in prompts:
            on_progress(f"batch {n}, prompts of {length} tokens")
            params = SamplingParams(max_tokens=decode_tokens, ignore_eos=True)
            for _ in range(n):
                engine.add_call([rng.randrange(vocab) for _ in range(length)], params)
            samples += _timed_steps(engine, shapes)
    swap = _swap_time_per_block(executor)
    engine.check_idle()
    return Profile.fit(
        samples,
        swap_time_per_block=swap,
        bytes_per_block=executor.bytes_per_block,
        block_size=executor.block_size,
        num_blocks=executor.num_blocks,
        machine=this_machine(),
        model=str(config.model or "SmolLM2-135M-Instruct (embedded default)"),
        provenance=started,
    )


def _record_shapes(executor: ModelExecutor) -> list[StepShape]:
    """The shapes of the model steps the executor runs from now on (swaps left out)."""
    shapes: list[StepShape] = []
    execute = executor.execute

    def recorded(batch):
        if batch.calls and not (batch.swap_in or batch.swap_out):
            shapes.append(StepShape.of(batch))
        return execute(batch)

    executor.execute = recorded  # type: ignore[method-assign]
    return shapes


def _timed_steps(engine: LLMEngine, shapes: list[StepShape]) -> list[tuple[StepShape, float]]:
    """Step until the engine is idle: each model step's shape and the whole step's time,
    scheduling and output handling included (in a server they take the engine's time as
    much as the model does)."""
    samples = []
    while engine.has_unfinished():
        shapes.clear()
        start = time.perf_counter()
        engine.step()
        elapsed = time.perf_counter() - start
        if shapes:
            samples.append((shapes[0], elapsed))
    return samples


def _swap_time_per_block(executor: ModelExecutor, blocks: int = 64, repeats: int = 5) -> float:
    n = min(blocks, executor.num_blocks, executor.num_swap_blocks)
    pairs = list(zip(range(n), range(n), strict=True))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        executor.swap(pairs, [])
        executor.swap([], pairs)
        best = min(best, time.perf_counter() - start)
    return best / (2 * n)
