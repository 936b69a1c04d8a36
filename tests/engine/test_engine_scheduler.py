"""The engine's scheduler step by step, on a simulated executor (no model): who evicts
whom when memory runs out, what an evicted call keeps, multi-step decoding, and the
prefix cache across an eviction."""

from __future__ import annotations

import pytest

from autellix.engine.batch import ScheduledBatch
from autellix.engine.call import Call, Status
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot
from autellix.scheduling import SchedulingConfig

SIZE = 4
HEAVY = ProgramSnapshot(service=100.0)  # a program far down the queues
# a call must fit the whole pool to be accepted: 12 + 4 tokens is 4 blocks of 4
LONG = SamplingParams(max_tokens=4, ignore_eos=True)
PAIR = SamplingParams(max_tokens=8, ignore_eos=True)


def make(num_blocks: int, policy: str = "plas", swap_blocks: int = 16, **kw) -> LLMEngine:
    """An engine whose policy preempts (`--preempt`): these tests are about what preemption
    does to a call's blocks."""
    config = EngineConfig(
        **{
            "policy": policy,
            "block_size": SIZE,
            "max_running": 4,
            "max_prefill_tokens": 64,
            "scheduling": SchedulingConfig(preempt=True),
            **kw,
        }
    )
    executor = SimulatedExecutor(
        lambda shape: 0.01,
        block_size=SIZE,
        num_blocks=num_blocks,
        num_swap_blocks=swap_blocks,
        token_id=7,
    )
    return LLMEngine(config, executor, eos_token_ids=(2,), max_model_len=4096)


def step(engine: LLMEngine) -> ScheduledBatch:
    """One engine step; returns the batch the scheduler made for it."""
    made: list[ScheduledBatch] = []
    schedule = engine.scheduler.schedule

    def spy(now: float) -> ScheduledBatch:
        made.append(schedule(now))
        return made[-1]

    engine.scheduler.schedule = spy  # type: ignore[method-assign]
    try:
        engine.step()
    finally:
        del engine.scheduler.schedule
    return made[0]


def ids(seqs: list[Call]) -> list[str]:
    return [s.call_id for s in seqs]


def heavy_holding_three_blocks(engine: LLMEngine) -> Call:
    heavy = engine.add_call(list(range(10, 22)), LONG, call_id="heavy", program=HEAVY)
    step(engine)  # its 12-token prefill: 3 blocks
    assert heavy.block_table == [0, 1, 2] and engine.blocks.num_free == engine.blocks.num_blocks - 3
    assert engine.scheduler.computed_tokens == 12
    return heavy


def test_a_higher_priority_waiting_call_evicts_a_running_one_by_swapping() -> None:
    engine = make(num_blocks=4)
    heavy = heavy_holding_three_blocks(engine)
    light = engine.add_call(list(range(30, 38)), LONG, call_id="light")
    batch = step(engine)
    assert ids(batch.calls) == ["light"] and batch.num_new == [8]
    assert batch.evicted == [heavy] and heavy.status is Status.SWAPPED
    assert batch.swap_out == list(zip([0, 1, 2], heavy.swap_table, strict=True))
    assert heavy.block_table == [] and len(heavy.swap_table) == 3
    assert engine.scheduler.num_evictions == 1 and engine.scheduler.swapped_out_blocks == 3
    assert engine.scheduler.computed_tokens == 12 + 8
    # the free block, then the least recently freed cached one: heavy's tail
    assert light.block_table == [3, 2]


def test_a_swapped_call_comes_back_into_fresh_blocks() -> None:
    engine = make(num_blocks=4)
    heavy = heavy_holding_three_blocks(engine)
    engine.add_call(list(range(30, 36)), SamplingParams(max_tokens=1), call_id="light")
    step(engine)  # light's prefill evicts heavy; light finishes with its one token
    host = list(heavy.swap_table)
    batch = step(engine)
    assert ids(batch.calls) == ["heavy"] and batch.num_new == [1]  # nothing recomputed
    assert heavy.status is Status.RUNNING and heavy.swap_table == []
    assert batch.swap_in == list(zip(host, heavy.block_table[:3], strict=True))
    assert len(heavy.block_table) == 4  # three swapped in, one to grow into
    assert engine.scheduler.swapped_in_blocks == 3
    assert engine.blocks.num_free_swap == 16


@pytest.mark.parametrize("policy, preempt", [("fcfs", True), ("plas", False)])
def test_a_non_preemptive_policy_makes_a_waiting_call_wait_for_memory(
    policy: str, preempt: bool
) -> None:
    """FCFS never preempts for rank; PLAS does not either without --preempt (the default)."""
    engine = make(num_blocks=4, policy=policy, scheduling=SchedulingConfig(preempt=preempt))
    heavy_holding_three_blocks(engine)
    light = engine.add_call(list(range(30, 38)), LONG, call_id="light")
    batch = step(engine)
    assert ids(batch.calls) == ["heavy"] and batch.evicted == []
    assert light.status is Status.WAITING and light.block_table == []


def test_eviction_for_recompute_drops_the_blocks_and_keeps_the_prefix_findable() -> None:
    engine = make(num_blocks=4, preemption="recompute")
    heavy = heavy_holding_three_blocks(engine)
    engine.add_call(list(range(30, 38)), SamplingParams(max_tokens=1), call_id="light")
    batch = step(engine)
    assert batch.evicted == [heavy] and batch.swap_out == []
    assert heavy.status is Status.WAITING and heavy.num_computed == 0
    assert heavy.block_table == [] and heavy.swap_table == []
    queried, hits = engine.blocks.queried_tokens, engine.blocks.hit_tokens
    # light took the free block and heavy's least recently freed one (its tail); light
    # has finished, so heavy comes back and finds its first two blocks in the cache
    batch = step(engine)
    assert ids(batch.calls) == ["heavy"]
    assert batch.num_new == [13 - 8]
    assert heavy.block_table[:2] == [0, 1]
    assert engine.blocks.queried_tokens - queried == 13
    assert engine.blocks.hit_tokens - hits == 8
    assert heavy.num_cached_prompt_tokens == 0  # hits after its first prefill don't count


def test_a_full_swap_pool_falls_back_to_recompute() -> None:
    engine = make(num_blocks=4, swap_blocks=2)
    heavy = heavy_holding_three_blocks(engine)
    engine.add_call(list(range(30, 38)), LONG, call_id="light")
    batch = step(engine)
    assert batch.evicted == [heavy] and batch.swap_out == []
    assert heavy.status is Status.WAITING and heavy.num_computed == 0
    assert engine.blocks.num_free_swap == 2


def decoding_pair(engine: LLMEngine) -> tuple[Call, Call]:
    """Two heavy calls with 4-token prompts, prefilled and past their first decode."""
    a = engine.add_call([11, 12, 13, 14], PAIR, call_id="a", program=HEAVY)
    b = engine.add_call([21, 22, 23, 24], PAIR, call_id="b", program=HEAVY)
    step(engine)  # prefills
    batch = step(engine)  # a decode-only round
    assert ids(batch.calls) == ["a", "b"] and batch.num_new == [1, 1]
    return a, b


def test_multi_step_decoding_admits_new_calls_only_at_the_next_round() -> None:
    engine = make(num_blocks=32, schedule_every=4)
    decoding_pair(engine)  # that round was step 1 of 4
    c = engine.add_call([31, 32, 33], LONG, call_id="c")
    for _ in range(3):
        batch = step(engine)
        assert ids(batch.calls) == ["a", "b"] and batch.num_new == [1, 1]
    assert c.num_computed == 0
    batch = step(engine)  # the next round
    assert ids(batch.calls) == ["c", "a", "b"] and batch.num_new == [3, 1, 1]


def test_multi_step_decoding_grows_into_exactly_the_free_blocks() -> None:
    # a and b hold 2 blocks each of 6; at computed 8 each needs a third block: the two
    # free blocks are just enough, so the decodes go on without a round (which would
    # let the fresh call c in ahead of them)
    engine = make(num_blocks=6, schedule_every=8, max_running=2)
    a, b = decoding_pair(engine)
    while a.num_computed < 8:
        step(engine)
    assert engine.blocks.num_free == 2 and len(a.block_table) == len(b.block_table) == 2
    c = engine.add_call([31], LONG, call_id="c")
    batch = step(engine)
    assert ids(batch.calls) == ["a", "b"] and batch.num_new == [1, 1]
    assert engine.blocks.num_free == 0 and c.num_computed == 0
    assert engine.scheduler.num_preemptions == 0


def test_multi_step_decoding_needs_a_round_when_memory_runs_out() -> None:
    engine = make(num_blocks=5, schedule_every=8, max_running=2)
    a, b = decoding_pair(engine)
    while a.num_computed < 8:
        step(engine)
    assert engine.blocks.num_free == 1  # both need a block: a round decides
    batch = step(engine)
    assert ids(batch.calls) == ["a"] and batch.evicted == [b]
    assert b.status is Status.SWAPPED


def test_a_call_that_fits_in_the_free_blocks_evicts_nobody() -> None:
    engine = make(num_blocks=6)
    heavy = heavy_holding_three_blocks(engine)  # three free
    # light's 7 tokens take 2 blocks; heavy's 13th token needs the last one
    engine.add_call(list(range(30, 37)), LONG, call_id="light")
    batch = step(engine)
    assert ids(batch.calls) == ["light", "heavy"] and batch.num_new == [7, 1]
    assert batch.evicted == [] and heavy.status is Status.RUNNING
    assert engine.blocks.num_free == 0


def test_an_aborted_resident_call_leaves_nothing_behind() -> None:
    engine = make(num_blocks=8, max_running=1)
    heavy = engine.add_call(list(range(10, 18)), LONG, call_id="heavy", program=HEAVY)
    step(engine)
    light = engine.add_call(list(range(30, 34)), LONG, call_id="light")
    batch = step(engine)  # light takes the one slot; heavy keeps its blocks
    assert ids(batch.calls) == ["light"] and batch.evicted == []
    assert engine.scheduler.resident == {"heavy": heavy} and len(heavy.block_table) == 2
    engine.abort("heavy")
    assert engine.scheduler.resident == {}
    assert engine.blocks.num_free == 8 - len(light.block_table)  # only light's are held
    while engine.has_unfinished():
        step(engine)
    assert engine.scheduler.num_evictions == 0
    engine.check_idle()


def test_an_idle_multi_step_engine_takes_a_new_call_at_once() -> None:
    engine = make(num_blocks=8, schedule_every=4)
    assert step(engine).calls == []
    c = engine.add_call([1, 2, 3], LONG, call_id="c")
    batch = step(engine)
    assert ids(batch.calls) == ["c"] and batch.num_new == [3]
    assert c.num_computed == 3


def test_a_multi_step_engine_holds_a_round_after_a_prefill() -> None:
    engine = make(num_blocks=16, schedule_every=4)
    engine.add_call([1, 2, 3], LONG, call_id="a")
    step(engine)  # a's prefill: not a decode batch, so the next step is a round
    engine.add_call([4, 5], LONG, call_id="b")
    batch = step(engine)
    assert ids(batch.calls) == ["a", "b"] and batch.num_new == [1, 2]


def test_without_chunking_prompts_that_fill_the_budget_exactly_run_together() -> None:
    engine = make(num_blocks=16, chunked_prefill=False, max_prefill_tokens=16)
    for name in ("a", "b", "c"):
        engine.add_call(list(range(8)), SamplingParams(max_tokens=1), call_id=name)
    batch = step(engine)
    assert ids(batch.calls) == ["a", "b"] and batch.num_new == [8, 8]
