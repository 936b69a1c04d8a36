"""`autellix profile`: time the real engine's steps on this machine and fit a Profile.

The engine runs batches of synthetic prompts (every batch size and prompt length on a
grid, with chunked prefill and decode steps in between as the scheduler makes them);
each step's shape and executor time is recorded, and the linear model of
`latency.Profile` is fitted to them. Swap time per block is timed on the executor's
own pools.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable

from autellix.engine.config import EngineConfig
from autellix.engine.executor import ModelExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.model.sampler import SamplingParams
from autellix.sim.latency import Profile, StepShape

BATCHES = (1, 2, 4, 8, 16, 32)
PROMPTS = (16, 128, 512)


def measure(
    config: EngineConfig,
    batches: tuple[int, ...] = BATCHES,
    prompts: tuple[int, ...] = PROMPTS,
    decode_tokens: int = 16,
    on_progress: Callable[[str], None] = lambda _: None,
) -> Profile:
    engine = LLMEngine.from_config(config)
    executor = engine.executor
    assert isinstance(executor, ModelExecutor)
    samples: list[tuple[StepShape, float]] = []
    execute = executor.execute

    def timed(batch):
        shape = StepShape.of(batch)
        tokens, elapsed = execute(batch)
        if batch.seqs and not (batch.swap_in or batch.swap_out):
            samples.append((shape, elapsed))
        return tokens, elapsed

    executor.execute = timed  # type: ignore[method-assign]
    rng = random.Random(0)
    vocab = executor.model.config.vocab_size
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    samples.clear()
    for n in batches:
        for length in prompts:
            on_progress(f"batch {n}, prompts of {length} tokens")
            prompts_ = [[rng.randrange(vocab) for _ in range(length)] for _ in range(n)]
            engine.generate(prompts_, SamplingParams(max_tokens=decode_tokens, ignore_eos=True))
    swap = _swap_time_per_block(executor)
    engine.check_idle()
    return Profile.fit(
        samples,
        swap_time_per_block=swap,
        bytes_per_block=executor.bytes_per_block,
        block_size=executor.block_size,
        num_blocks=executor.num_blocks,
        machine=f"{platform.machine()} {platform.processor() or ''} {_cpu_count()} cores".strip(),
        model=str(config.model or "SmolLM2-135M-Instruct (embedded default)"),
    )


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


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
