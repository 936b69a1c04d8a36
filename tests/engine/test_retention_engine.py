"""KV retention in the engine (simulated executor, virtual clock): a live program's
finished call keeps its blocks pinned from LRU until its TTL passes, its next call
arrives (which then finds them), it ends, or a higher-ranked call needs the memory; a
pool full of pins never stops a call from running; while memory is short the blocks are
written to host memory instead of pinned."""

from __future__ import annotations

from autellix.engine.call import Call, Status
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot
from autellix.scheduling.retention import RetentionConfig

SIZE = 4
ONE = SamplingParams(max_tokens=1, ignore_eos=True)
LONG = SamplingParams(max_tokens=12, ignore_eos=True)
AGENT_PROMPT = list(range(100, 112))  # 3 full blocks
BACK_SOON = ProgramSnapshot(expect_return=0.05)  # the client's hint: back in 50 ms
HEAVY = ProgramSnapshot(service=100.0)  # a program far down the queues


def make(
    num_blocks: int = 7, retention: bool = True, policy: str = "plas", swap_blocks: int = 16
) -> LLMEngine:
    config = EngineConfig(
        policy=policy,
        block_size=SIZE,
        max_running=4,
        max_prefill_tokens=64,
        retention=RetentionConfig(enabled=retention),
    )
    executor = SimulatedExecutor(
        lambda shape: 0.001 + 0.01 * shape.new_tokens,  # 10 ms a token: recompute is dear
        block_size=SIZE,
        num_blocks=num_blocks,
        num_swap_blocks=swap_blocks,
        token_id=7,
    )
    return LLMEngine(config, executor, eos_token_ids=(2,), max_model_len=4096)


def run_until_done(engine: LLMEngine, call: Call, max_steps: int = 200) -> None:
    for _ in range(max_steps):
        if call.status is Status.FINISHED:
            return
        engine.step()
    raise AssertionError(f"{call.call_id} did not finish in {max_steps} steps")


def agent_finished_a_call(engine: LLMEngine, snapshot: ProgramSnapshot = BACK_SOON) -> Call:
    """A runner decodes on (so later rounds have taken a call first; it grows to 4 of the
    7 blocks); the agent's call of 12 prompt tokens finishes, leaving 3 cached blocks."""
    engine.add_call([1], LONG, call_id="runner", program_id="runner")
    call = engine.add_call(AGENT_PROMPT, ONE, call_id="a1", program_id="agent", program=snapshot)
    run_until_done(engine, call)
    return call


def heavy_wants_four_blocks(engine: LLMEngine) -> Call:
    return engine.add_call(list(range(200, 216)), ONE, call_id="heavy", program=HEAVY)


def test_a_returning_program_finds_its_context_that_a_heavy_call_would_have_evicted() -> None:
    engine = make()
    first = agent_finished_a_call(engine)
    assert engine.blocks.num_pinned == 3
    heavy = heavy_wants_four_blocks(engine)
    engine.step()
    assert heavy.status is Status.WAITING  # the pin outranks it
    assert engine.stats()["pins_made"] == 1
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    run_until_done(engine, back)
    assert back.num_cached_prompt_tokens == 12
    assert engine.stats()["pins_hit"] == 1
    run_until_done(engine, heavy)


def test_without_retention_the_heavy_call_takes_the_programs_blocks() -> None:
    engine = make(retention=False)
    first = agent_finished_a_call(engine)
    heavy = heavy_wants_four_blocks(engine)
    engine.step()
    assert heavy.status is not Status.WAITING
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    run_until_done(engine, back)
    assert back.num_cached_prompt_tokens < 12
    assert engine.stats()["pins_made"] == 0


def test_a_call_waiting_on_pins_is_counted_as_their_cost() -> None:
    engine = make()
    agent_finished_a_call(engine)
    heavy_wants_four_blocks(engine)
    engine.step()
    engine.step()
    assert engine.stats()["pin_blocked_seconds"] > 0


def test_a_pin_lapses_after_its_ttl_and_the_waiting_call_runs() -> None:
    engine = make()
    agent_finished_a_call(engine)
    heavy = heavy_wants_four_blocks(engine)
    run_until_done(engine, heavy)  # the runner's decodes move the clock past the TTL
    stats = engine.stats()
    assert (stats["pins_expired"], stats["pinned_blocks"]) == (1, 0)


def test_a_higher_ranked_call_evicts_a_lower_ranked_programs_pin() -> None:
    engine = make()
    agent_finished_a_call(engine, ProgramSnapshot(service=100.0, expect_return=0.05))
    fresh = engine.add_call(list(range(200, 216)), ONE, call_id="fresh", program_id="fresh")
    engine.step()
    assert fresh.status is not Status.WAITING
    assert engine.stats()["pins_evicted"] == 1


def test_a_pool_full_of_pins_never_stops_a_call() -> None:
    engine = make(num_blocks=6)
    for i in range(2):  # two programs pin 3 blocks each, for long: the whole pool
        prompt = list(range(100 * (i + 1), 100 * (i + 1) + 12))
        call = engine.add_call(prompt, ONE, call_id=f"p{i}", program_id=f"p{i}")
        run_until_done(engine, call)
        cached = [b.block_id for b in engine.blocks.blocks if b.hash is not None]
        engine.blocks.pin(f"p{i}", cached, expires=1e9, back_at=1e9, rank=(-1,))
    assert engine.blocks.num_pinned == 6 and engine.blocks.num_free == 0
    heavy = heavy_wants_four_blocks(engine)  # ranks below both pins, and is alone
    run_until_done(engine, heavy, max_steps=3)
    assert engine.stats()["pins_evicted"] >= 1
    engine.blocks.check_states()


def test_ending_the_program_frees_its_pin_at_once() -> None:
    engine = make()
    agent_finished_a_call(engine)
    engine.end_program("agent")
    assert engine.blocks.num_pinned == 0
    assert engine.stats()["pins_ended"] == 1


def test_a_program_with_no_gaps_and_no_hint_is_left_to_lru() -> None:
    engine = make()
    agent_finished_a_call(engine, ProgramSnapshot())
    assert engine.blocks.num_pinned == 0


def test_past_gaps_of_the_program_make_a_pin_without_a_hint() -> None:
    engine = make()
    agent_finished_a_call(engine, ProgramSnapshot(return_gaps=(0.05, 0.06)))
    assert engine.blocks.num_pinned == 3


def test_a_program_whose_next_call_began_elsewhere_keeps_nothing_of_its_next() -> None:
    """A tree search: its next call begins with other instructions, so none of the first
    call's blocks were used; its second call's blocks are left to LRU, not pinned."""
    engine = make(num_blocks=16)
    first = agent_finished_a_call(engine)
    elsewhere = engine.add_call(
        list(range(300, 312)), ONE, call_id="a2", program_id="agent", program=BACK_SOON
    )
    assert engine.blocks.num_pinned == 0  # its prompt begins with none of the pinned blocks
    run_until_done(engine, elsewhere)
    assert engine.blocks.num_pinned == 0
    assert engine.stats()["pins_made"] == 1
    # a program whose next call extended its context keeps all of it
    chat = engine.add_call(
        [*first.token_ids, 9], ONE, call_id="c1", program_id="chat", program=BACK_SOON
    )
    run_until_done(engine, chat)
    engine.add_call([*chat.token_ids, 5], ONE, call_id="c2", program_id="chat", program=BACK_SOON)
    assert engine.scheduler.head_reuse.head("chat", None, 3) == 3


def test_a_program_whose_next_call_used_half_its_context_pins_that_half() -> None:
    engine = make(num_blocks=16)
    first = agent_finished_a_call(engine)
    half = [*first.token_ids[: SIZE * 2], *range(400, 408)]  # 2 of its 3 blocks, then more
    second = engine.add_call(half, ONE, call_id="a2", program_id="agent", program=BACK_SOON)
    run_until_done(engine, second)
    assert engine.blocks.num_pinned == 3  # ceil(2/3 of its 4 cached blocks), the head
    pinned = {engine.blocks.blocks[b].hash for b in engine.blocks.pins["agent"].block_ids}
    assert pinned == set(second.block_hashes[:3])


def test_an_aborted_call_pins_nothing() -> None:
    engine = make()
    call = engine.add_call(AGENT_PROMPT, LONG, call_id="a1", program_id="agent", program=BACK_SOON)
    engine.step()
    engine.abort(call.call_id)
    assert engine.blocks.num_pinned == 0
    engine.check_idle()


def test_prefix_hits_are_counted_per_program_class() -> None:
    engine = make()
    kind = ProgramSnapshot(expect_return=0.05, kind="react")
    first = engine.add_call(AGENT_PROMPT, ONE, call_id="a1", program_id="agent", program=kind)
    run_until_done(engine, first)
    back = engine.add_call(
        [*first.token_ids, 9], ONE, call_id="a2", program_id="agent", program=kind
    )
    run_until_done(engine, back)
    queried, hit = engine.stats()["prefix_by_kind"]["react"]
    assert (queried, hit) == (12 + 14, 12)


def memory_short_beside_a_pin(engine: LLMEngine, agent_service: float) -> Call:
    """The agent's first call finishes and pins 3 blocks; a heavy call ranked below the
    pin finds no room (it may not end the pin), so the round leaves a call out for want
    of memory: the next round serves resident programs first."""
    snapshot = ProgramSnapshot(service=agent_service, expect_return=0.05)
    first = agent_finished_a_call(engine, snapshot)
    heavy = heavy_wants_four_blocks(engine)
    engine.step()
    assert heavy.status is Status.WAITING and engine.blocks.num_pinned == 3
    return first


def test_under_memory_pressure_a_returning_program_runs_before_a_fresh_one() -> None:
    """Least attained service ranks a fresh program above the returning agent, and that
    rank may end the agent's pin. Short of memory, the agent's context is resident, so its
    call is served first and finds it: the fresh program waits for memory instead."""
    engine = make()
    first = memory_short_beside_a_pin(engine, agent_service=1.5)  # queue 1; fresh: queue 0
    fresh = engine.add_call(list(range(300, 316)), ONE, call_id="fresh", program_id="fresh")
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    engine.step()
    assert back.status is not Status.WAITING and fresh.status is Status.WAITING
    assert back.num_cached_prompt_tokens == 12
    assert engine.stats()["pins_evicted"] == 0
    run_until_done(engine, fresh)
    engine.blocks.check_states()


def test_a_returned_call_that_queues_past_the_ttl_still_finds_its_pin() -> None:
    engine = make()
    first = memory_short_beside_a_pin(engine, agent_service=0.0)
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    engine.blocks.expire(engine.executor.clock() + 100.0)  # long past the 0.11 s TTL
    assert engine.blocks.num_pinned == 3
    run_until_done(engine, back)
    assert back.num_cached_prompt_tokens == 12
    assert engine.stats()["pins_expired"] == 0


def test_a_returned_call_aborted_before_it_runs_releases_the_pin() -> None:
    engine = make()
    first = agent_finished_a_call(engine)
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    engine.abort(back.call_id)
    assert not engine.blocks.pins and engine.blocks.num_pinned == 0
    engine.blocks.check_states()


def finished_while_memory_is_short(engine: LLMEngine) -> tuple[Call, Call]:
    """The agent's call (3 of the 5 blocks) runs beside the runner while a heavy call of 4
    blocks finds no room, so memory is short when the agent's call finishes; the heavy
    call then may take every block the runner does not hold, the agent's among them."""
    engine.add_call([1], LONG, call_id="runner", program_id="runner")
    back_soon = ProgramSnapshot(expect_return=0.15)  # holding beats recomputing, barely
    call = engine.add_call(AGENT_PROMPT, ONE, call_id="a1", program_id="agent", program=back_soon)
    heavy = heavy_wants_four_blocks(engine)
    engine.step()
    assert call.status is Status.FINISHED and heavy.status is Status.WAITING
    engine.step()
    return call, heavy


def test_while_memory_is_short_a_finished_calls_blocks_go_to_host_not_into_a_pin() -> None:
    engine = make(num_blocks=5)
    first, heavy = finished_while_memory_is_short(engine)
    assert heavy.status is Status.FINISHED
    stats = engine.stats()
    assert (stats["pins_made"], engine.blocks.num_pinned) == (0, 0)
    assert engine.blocks.pin_stats.to_host == 3
    assert engine.scheduler.swapped_out_blocks == 3  # copied before any step reused them
    # kept past the pin's TTL (0.24 s), up to the longest (30 s): host memory is cheap
    assert engine.blocks.host.expires["agent"] > engine.executor.clock() + 25
    back = engine.add_call([*first.token_ids, 9], ONE, call_id="a2", program_id="agent")
    run_until_done(engine, back)
    assert back.num_cached_prompt_tokens == 12
    assert engine.blocks.pin_stats.from_host == 3  # the heavy call had taken the device's
    engine.blocks.check_states()
    run_until_done(engine, engine.calls["runner"])
    engine.check_idle()


def test_while_memory_is_short_blocks_the_host_cannot_take_are_pinned() -> None:
    engine = make(num_blocks=5, swap_blocks=4)  # retention may fill 2 swap blocks; 3 needed
    _, heavy = finished_while_memory_is_short(engine)
    assert engine.stats()["pins_made"] == 1 and engine.blocks.pin_stats.to_host == 0
    assert heavy.status is Status.WAITING  # the pin outranks it


def test_without_host_retention_blocks_are_pinned_while_memory_is_short() -> None:
    engine = make(num_blocks=5)
    engine.blocks.host_retention = False
    _, heavy = finished_while_memory_is_short(engine)
    assert engine.stats()["pins_made"] == 1 and engine.blocks.pin_stats.to_host == 0
    assert heavy.status is Status.WAITING  # the pin outranks it
