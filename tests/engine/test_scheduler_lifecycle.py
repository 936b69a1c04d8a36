"""The scheduler alone, with fake model outputs (no executor, no model): a call's whole
lifecycle through `add`, `schedule`, `update_from_output` and `finish`, and the batch
fitter's token budget."""

from __future__ import annotations

import pytest

from autellix.engine.batch import BatchFitter
from autellix.engine.call import Call, Status
from autellix.engine.config import EngineConfig
from autellix.engine.kv_cache import BlockManager
from autellix.engine.sampling_params import SamplingParams
from autellix.engine.scheduler import Scheduler
from autellix.engine.step_cost import StepCost
from autellix.programs import ProgramSnapshot
from autellix.scheduling import SchedulingConfig, make_policy

SIZE = 4
EOS = 2


def make(num_blocks: int = 32, policy: str = "plas", **kw) -> Scheduler:
    config = EngineConfig(
        **{"policy": policy, "block_size": SIZE, "max_running": 4, "max_prefill_tokens": 64, **kw}
    )
    blocks = BlockManager(num_blocks, SIZE, num_swap_blocks=16, prefix_caching=True)
    return Scheduler(config, make_policy(policy, config.scheduling), blocks, (EOS,))


def call(call_id: str, prompt: list[int], **params) -> Call:
    return Call(
        call_id,
        call_id,
        0.0,
        token_ids=list(prompt),
        num_prompt_tokens=len(prompt),
        params=SamplingParams(**{"max_tokens": 8, **params}),
    )


def step(s: Scheduler, token: int = 9, elapsed: float = 0.1, now: float = 1.0) -> list[Call]:
    batch = s.schedule(now)
    return s.update_from_output(batch, [token] * len(batch.calls), elapsed, now)


def test_a_prefill_then_decodes_until_length_and_everything_is_released() -> None:
    s = make()
    c = call("a", list(range(10, 20)), max_tokens=3)
    s.add(c, 0.0)
    assert s.num_waiting == 1
    batch = s.schedule(0.0)
    assert batch.calls == [c] and batch.num_new == [10] and len(c.block_table) == 3
    assert s.update_from_output(batch, [9], 0.25, 0.25) == [c]
    assert c.num_computed == 10 and c.output_ids == [9] and c.service == 0.25
    step(s)
    step(s)
    assert c.output_ids == [9, 9, 9] and c.status is Status.FINISHED
    assert c.finish_reason == "length" and c.block_table == [] and s.calls == {}
    assert s.computed_tokens == 12 and s.blocks.num_free == s.blocks.num_blocks
    assert len(s.policy) == 0


@pytest.mark.parametrize(
    ("token", "params", "reason", "stop_reason"),
    [
        (5, {"stop_token_ids": (5,)}, "stop", 5),
        (EOS, {}, "stop", None),
        (EOS, {"ignore_eos": True}, None, None),
        (7, {}, None, None),
    ],
)
def test_stop_tokens_and_eos_finish_a_call(token, params, reason, stop_reason) -> None:
    s = make()
    c = call("a", [10, 11, 12], **params)
    s.add(c, 0.0)
    step(s, token)
    assert c.finish_reason == reason and c.stop_reason == stop_reason
    assert (c.call_id in s.calls) == (reason is None)


def test_computed_full_blocks_are_found_by_the_next_call_with_that_prefix() -> None:
    s = make()
    shared = list(range(10, 22))  # three full blocks
    first = call("first", [*shared, 1], max_tokens=1)
    s.add(first, 0.0)
    step(s)
    assert first.status is Status.FINISHED and len(first.block_hashes) == 3
    second = call("second", [*shared, 3])
    s.add(second, 1.0)
    batch = s.schedule(1.0)
    assert batch.num_new == [1]  # the shared 12 tokens came from the prefix cache
    assert second.num_cached_prompt_tokens == 12 and s.blocks.hit_tokens == 12


@pytest.mark.parametrize(("accounting", "expected"), [("step", [0.3, 0.3]), ("share", [0.2, 0.1])])
def test_service_is_the_step_or_the_share_of_it(accounting, expected) -> None:
    s = make(service_accounting=accounting)
    a, b = call("a", [10, 11, 12, 13]), call("b", [20, 21])
    s.add(a, 0.0)
    s.add(b, 0.0)
    step(s, elapsed=0.3)  # 4 + 2 prompt tokens in one step
    assert [a.service, b.service] == pytest.approx(expected)


def test_finish_by_abort_frees_a_swapped_call() -> None:
    s = make()
    c = call("a", [10, 11, 12])
    s.add(c, 0.0)
    step(s)
    c.status, c.swap_table = Status.SWAPPED, s.blocks.allocate_swap(1)
    s.finish(c, "abort", 1.0)
    assert s.blocks.num_free_swap == s.blocks.num_swap_blocks
    assert c.finish_reason == "abort" and s.blocks.num_free == s.blocks.num_blocks


@pytest.mark.parametrize(("chunked", "taken"), [(True, [6, 2]), (False, [6])])
def test_the_fitter_spends_the_prefill_budget_in_order(chunked, taken) -> None:
    config = EngineConfig(block_size=SIZE, max_prefill_tokens=8, chunked_prefill=chunked)
    blocks = BlockManager(32, SIZE, 0)
    fitter = BatchFitter(config, blocks, [], lambda c: 0, preemptive=True)
    a, b = call("a", list(range(6))), call("b", list(range(5)))
    fits = [fitter.fits(a), fitter.fits(b)]
    assert fits == [True, chunked]
    assert list(fitter.planned.values()) == taken and fitter.prefill_left == 8 - sum(taken)


def test_a_waiting_call_evicts_only_under_a_preemptive_policy() -> None:
    config = EngineConfig(block_size=SIZE, max_prefill_tokens=64)
    for preemptive, evicted in [(True, ["holder"]), (False, [])]:
        blocks = BlockManager(3, SIZE, 4)
        holder = call("holder", list(range(8)))
        holder.block_table, holder.num_computed = blocks.allocate(2), 8
        holder.status, holder.running = Status.RUNNING, True
        fitter = BatchFitter(config, blocks, [{"holder": holder}], lambda c: 0, preemptive)
        new = call("new", list(range(20, 28)))
        assert fitter.fits(new) is preemptive
        assert [c.call_id for c in fitter.batch.evicted] == evicted
        assert (holder.status is Status.SWAPPED) is preemptive


@pytest.mark.parametrize("grower", ["running", "waiting"])
def test_an_idle_pin_goes_before_any_calls_kv_even_a_higher_ranked_programs(grower) -> None:
    """A call ranked below the agent's pin needs a block after the round took a call: a
    running one that finds none is evicted itself, a waiting one would evict a running
    call ranked below it. Either loses KV that is certain to be needed, where the pin's
    only may be: so the pin ends instead."""
    config = EngineConfig(block_size=SIZE, max_prefill_tokens=64)
    blocks = BlockManager(3, SIZE, 0)
    pinned = blocks.allocate(1)
    blocks.register(pinned[0], 1234)
    blocks.free(pinned, "agent")
    blocks.pin("agent", pinned, expires=99.0, back_at=1.0, rank=(1,))
    ranks = {"first": (0,), "grower": (5,), "victim": (9,)}

    def running(call_id: str, num_tokens: int) -> Call:
        """Decoding, its computed tokens in one block: num_tokens 5 needs a second one."""
        c = call(call_id, list(range(num_tokens)))
        c.block_table, c.num_computed = blocks.allocate(1), num_tokens - 1
        c.status, c.running = Status.RUNNING, True
        return c

    first = running("first", 4)
    if grower == "running":
        calls = [first, running("grower", 5)]
    else:
        calls = [first, running("victim", 4), call("grower", [1, 2, 3])]
    holders = {c.call_id: c for c in calls}
    fitter = BatchFitter(config, blocks, [holders], lambda c: ranks[c.call_id], True)
    assert blocks.num_free == 0
    assert fitter.fits(first) and fitter.fits(holders["grower"])
    assert fitter.batch.evicted == [] and not fitter.short
    assert not blocks.pins and blocks.pin_stats.evicted == 1


@pytest.mark.parametrize("pinned", [False, True])
def test_short_of_memory_a_program_with_kv_on_the_device_goes_first(pinned) -> None:
    """A round left a call out for want of blocks, so the next serves first the programs
    with calls holding KV on the device: the running program's second call takes the room
    before another program that least attained service ranks above it, be that program
    fresh or back to a pin of its own (only a call in flight is sure to need its KV)."""
    s = make(num_blocks=6)
    if pinned:
        held = s.blocks.allocate(1)
        s.blocks.register(held[0], 4321)
        s.blocks.free(held, "other")
        s.blocks.pin("other", held, expires=99.0, back_at=2.0, rank=(0,))
    p1 = call("p1", list(range(10, 18)), max_tokens=20)
    s.add(p1, 0.0)
    step(s)
    big = call("big", list(range(100, 120)))
    big.program = ProgramSnapshot(service=100.0)
    s.add(big, 1.0)
    step(s)
    assert big.status is Status.WAITING  # may not evict p1, which ranks above it
    p2 = Call("p2", "p1", 2.0, token_ids=list(range(30, 37)), num_prompt_tokens=7)
    p2.program = ProgramSnapshot(service=1.0)
    other = Call("o", "other", 2.0, token_ids=list(range(40, 47)), num_prompt_tokens=7)
    s.add(other, 2.0)
    s.add(p2, 2.0)
    assert [c.call_id for c in s.policy.order(2.0)][:2] == ["p1", "o"]
    step(s, now=2.0)
    assert p2.status is Status.RUNNING and other.status is Status.WAITING


def test_a_lone_decode_is_charged_the_whole_step_under_share_accounting() -> None:
    s = make(service_accounting="share")
    c = call("a", [10, 11, 12])
    s.add(c, 0.0)
    step(s, elapsed=0.3)  # the prefill: 3 tokens
    step(s, elapsed=0.1)  # one decode token: its share is the whole step
    assert c.service == pytest.approx(0.4)


def test_every_call_preempted_in_a_round_is_resident_or_evicted() -> None:
    """B started before A, so the round meets B first among the preempted: B was already
    evicted to make room, and A, after it, must still be kept resident."""
    s = make(num_blocks=4, max_running=2, scheduling=SchedulingConfig(preempt=True))
    b = call("b", [10, 11, 12])
    b.program = ProgramSnapshot(service=100.0)
    s.add(b, 0.0)
    step(s)
    a = call("a", [20, 21, 22])
    a.program = ProgramSnapshot(service=50.0)
    s.add(a, 1.0)
    step(s)
    assert list(s.policy.running) == ["b", "a"] and s.blocks.num_free == 2
    s.add(call("n1", [30, 31, 32]), 2.0)
    s.add(call("n2", [40, 41, 42, 43, 44]), 2.0)
    batch = s.schedule(3.0)
    assert [c.call_id for c in batch.calls] == ["n1", "n2"] and batch.evicted == [b]
    assert b.status is Status.SWAPPED and list(s.resident) == ["a"] and a.block_table


def test_the_step_cost_is_learned_from_the_steps_run() -> None:
    truth = (0.04, 0.0012, 0.0006, 1.2e-5)  # fixed, per new token, per call, per context token
    cost = StepCost()
    for i in range(40):
        calls = [call(f"c{j}", [1] * (10 + 37 * j + i)) for j in range(1 + i % 5)]
        num_new = [1 + (i * j) % 9 for j in range(len(calls))]
        for c, n in zip(calls, num_new, strict=True):
            c.num_computed = c.num_tokens - n
        tokens = sum(num_new)
        context = sum(c.num_computed + n for c, n in zip(calls, num_new, strict=True))
        seconds = truth[0] + truth[1] * tokens + truth[2] * len(calls) + truth[3] * context
        assert (cost.coefficients is None) == (i < cost.min_steps)
        cost.observe(calls, num_new, seconds)
    assert cost.coefficients == pytest.approx(truth, rel=1e-3)
    c = call("x", [1] * 100)
    c.num_computed = 99
    assert cost.of(c, 1) == pytest.approx(0.0012 + 0.0006 + 1.2e-5 * 100, rel=1e-3)


@pytest.mark.parametrize("batch_cut", [True, False])
def test_the_batch_cut_leaves_a_heavy_programs_long_call_out(batch_cut: bool) -> None:
    s = make(
        num_blocks=128,
        max_prefill_tokens=512,
        scheduling=SchedulingConfig(batch_cut=batch_cut, preempt=True),
    )
    fresh = [call(f"fresh{i}", [10 + i] * 8, max_tokens=20) for i in range(2)]
    heavy = call("heavy", [30] * 200, max_tokens=20)
    # 30 s of service, a low queue; past programs say it has more to go than a fresh one
    heavy.program = ProgramSnapshot(30.0, 30.0, 0.0, (1.0,) * 8 + (300.0,))
    for c in (*fresh, heavy):
        s.add(c, 0.0)
    step(s, elapsed=0.05)  # every prompt in one step
    s.step_cost.coefficients = (0.04, 0.001, 0.0006, 1e-5)  # as if learned
    late = call("late", [40] * 100, max_tokens=20)  # as heavy, but still to prefill
    late.program = heavy.program
    s.add(late, 1.0)
    batch = s.schedule(1.0)
    assert late in batch.calls  # a prefill is never cut
    # heavy gains 1/31 of its urgency per step of 0.0434 s; it costs the two fresh calls
    # (urgency ~1 each) 0.0036 s a step: cut
    assert (heavy in batch.calls) is not batch_cut
    assert all(c in batch.calls for c in fresh)
    assert s.num_preemptions == int(batch_cut) and heavy.block_table  # it keeps its KV
