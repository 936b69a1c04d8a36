"""The Autellix scheduler class inside vLLM's real V1 scheduler: the order calls are served
in, preemption of running calls by waiting ones, anti-starvation, and nothing leaked."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from harness import Engine, build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from autellix.vllm_scheduler import AutellixAsyncScheduler, AutellixScheduler, PluginConfig

LADDER = {"first_boundary": 1.0, "boundary_ratio": 2.0, "num_queues": 4}  # 1 s, 2 s, 4 s
PREEMPT = {**LADDER, "preempt": True}  # a waiting call may preempt (off by default)


def history(engine: Engine, program: str, steps: int) -> None:
    """Give a program `steps` steps of service (0.1 s each) in one finished call."""
    call = engine.add(program, tokens=steps)
    engine.run(lambda: engine.done(call))


AUTELLIX_AND_VLLM = pytest.mark.parametrize(
    "cls", [AutellixScheduler, AutellixAsyncScheduler, Scheduler], ids=["sync", "async", "vllm"]
)


@AUTELLIX_AND_VLLM
def test_a_new_program_preempts_a_running_call_of_a_served_program(cls):
    autellix = issubclass(cls, AutellixScheduler)
    engine = build(cls, max_num_seqs=1, autellix=PREEMPT)
    long = engine.add("A", tokens=200)
    for _ in range(15):  # 1.5 s of service: past Q1's quantum, so in Q2
        engine.step()
    short = engine.add("B", tokens=5)
    engine.step()
    if not autellix:  # vLLM never preempts a running request for a waiting one
        assert engine.running() == {long}
        return
    assert engine.running() == {short}
    assert engine.scheduler.requests[long].status == RequestStatus.PREEMPTED
    assert set(engine.scheduler.ranking.running) == {short}
    engine.run(lambda: engine.done(short))
    assert not engine.done(long)
    engine.run(lambda: engine.done(long))  # and it resumes


def test_without_preemption_a_waiting_call_only_goes_first_in_the_queue():
    engine = build(AutellixScheduler, max_num_seqs=1, autellix=LADDER)
    history(engine, "A", 30)  # 3 s: program A enters Q3
    long = engine.add("C", tokens=40)
    for _ in range(15):  # 1.5 s: C's call is in Q2
        engine.step()
    served = engine.add("A", tokens=3)
    fresh = engine.add("B", tokens=3)
    engine.step()
    assert engine.running() == {long}
    engine.run(lambda: engine.done(long))
    engine.step()
    assert engine.running() == {fresh}
    assert not engine.done(served)


@AUTELLIX_AND_VLLM
def test_waiting_calls_are_served_by_their_programs_attained_service(cls):
    autellix = issubclass(cls, AutellixScheduler)
    engine = build(cls, max_num_seqs=1, autellix=LADDER)
    history(engine, "A", 30)  # 3 s: program A enters Q3
    served = engine.add("A", tokens=3)  # arrives first
    fresh = engine.add("B", tokens=3)
    engine.step()
    assert engine.running() == ({fresh} if autellix else {served})


def test_plas_charges_a_program_all_its_calls_and_atlas_its_critical_path():
    # Two parallel 1.5 s calls: PLAS's program has 3 s (Q3), ATLAS's critical path 1.5 s (Q2).
    for policy, level in (("plas", 2), ("atlas", 1)):
        engine = build(AutellixScheduler, max_num_seqs=2, autellix={**LADDER, "policy": policy})
        calls = [engine.add("A", tokens=15), engine.add("A", tokens=15)]
        engine.run(lambda e=engine, c=calls: all(e.done(x) for x in c))
        nxt = engine.add("A", tokens=3)
        assert engine.scheduler.calls[nxt].level == level, policy


def test_a_call_demotes_as_it_gains_service():
    engine = build(AutellixScheduler, max_num_seqs=1, autellix=LADDER)
    call = engine.add("A", tokens=100)
    levels = []
    for _ in range(40):
        engine.step()
        levels.append(engine.scheduler.calls[call].level)
    assert levels[5] == 0 and levels[15] == 1 and levels[35] == 2  # 1 s, then 2 s more


def test_vllm_priority_picks_the_queue():
    engine = build(AutellixScheduler, max_num_seqs=1, autellix=LADDER)
    low = engine.add("A", tokens=3, priority=3)
    high = engine.add("B", tokens=3, priority=1)
    default = engine.add("C", tokens=3)  # 0: the policy's own entry, Q1 for a new program
    assert [engine.scheduler.calls[c].level for c in (low, high, default)] == [3, 1, 0]
    engine.step()
    assert engine.running() == {default}


def test_anti_starvation_promotes_a_waiting_call():
    # beta 1: a call of a program with 3 s of service is promoted once it has waited 3 s,
    # even while fresh programs keep arriving ahead of it.
    engine = build(AutellixScheduler, max_num_seqs=1, autellix={**LADDER, "beta": 1.0})
    history(engine, "A", 30)
    starving = engine.add("A", tokens=2)
    arrived = engine.clock.now
    served_at = None
    for _ in range(100):
        if not engine.scheduler.running:
            engine.add(None, tokens=3)  # a stream of fresh one-call programs
        if starving in engine.step():
            served_at = engine.clock.now
            break
    assert served_at is not None
    assert 3.0 <= served_at - arrived <= 3.6
    assert engine.scheduler.calls[starving].promotions == 1


@AUTELLIX_AND_VLLM
def test_memory_a_waiting_call_needs_is_taken_from_a_lower_ranked_call(cls):
    autellix = issubclass(cls, AutellixScheduler)
    # 2 slots, 10 blocks: the long call holds 9, the newcomer's prompt needs 4.
    engine = build(cls, max_num_seqs=2, num_blocks=11, autellix=PREEMPT)
    long = engine.add("A", prompt=120, tokens=100)
    for _ in range(15):
        engine.step()
    newcomer = engine.add("B", prompt=60, tokens=3)
    engine.step()
    assert engine.running() == ({newcomer} if autellix else {long})


@AUTELLIX_AND_VLLM
def test_when_memory_runs_out_the_lowest_ranked_running_call_is_preempted(cls):
    autellix = issubclass(cls, AutellixScheduler)
    # vLLM preempts the last-scheduled call (here the fresh one); Autellix the lowest-ranked.
    engine = build(cls, max_num_seqs=2, num_blocks=11, autellix=LADDER)
    calls = {"A": engine.add("A", prompt=64, tokens=200)}
    for _ in range(15):
        engine.step()
    calls["B"] = engine.add("B", prompt=64, tokens=200)
    engine.step()
    assert len(engine.running()) == 2
    engine.run(lambda: len(engine.running()) < 2)
    victim = calls["A" if autellix else "B"]
    assert engine.scheduler.requests[victim].status == RequestStatus.PREEMPTED


def test_settings_are_checked_at_start():
    config = PluginConfig.parse({"autellix": {"policy": "atlas", **LADDER, "beta": 2}})
    assert config.policy == "atlas"
    assert config.scheduling.boundaries == (1.0, 2.0, 4.0)
    assert config.scheduling.beta == 2
    assert PluginConfig.parse(None).policy == "plas"
    with pytest.raises(ValueError, match="unknown autellix settings \\['betta'\\]"):
        PluginConfig.parse({"autellix": {"betta": 2}})
    assert PluginConfig.parse(None).scheduling.preempt is False
    assert PluginConfig.parse({"autellix": {"preempt": True}}).scheduling.preempt is True
    with pytest.raises(ValueError, match="preempt must be true or false, not 'no'"):
        PluginConfig.parse({"autellix": {"preempt": "no"}})
    with pytest.raises(ValueError, match="batch_cut is not served inside vLLM"):
        PluginConfig.parse({"autellix": {"batch_cut": True}})
    with pytest.raises(ValueError, match="unknown policy 'lifo'"):
        PluginConfig.parse({"autellix": {"policy": "lifo"}})
    with pytest.raises(ValueError, match=r"gittins_per_size false \(--no-gittins-per-size\)"):
        PluginConfig.parse({"autellix": {"gittins_per_size": False}})
    with pytest.raises(ValueError, match=r"skip_join \(--skip-join\) applies only to policy mlfq"):
        PluginConfig.parse({"autellix": {"skip_join": True}})
    with pytest.raises(ValueError, match="either boundaries"):
        PluginConfig.parse({"autellix": {"boundaries": [1, 2], "num_queues": 3}})
    with pytest.raises(ValueError, match=r"beta \(--beta\) must be more than 0, not 0"):
        PluginConfig.parse({"autellix": {"beta": 0}})


def check_invariants(engine: Engine) -> None:
    scheduler = engine.scheduler
    running = {r.request_id for r in scheduler.running}
    waiting = {r.request_id for r in scheduler.waiting}
    assert not running & waiting  # every call in exactly one queue
    assert running | waiting == set(scheduler.requests)
    assert set(scheduler.calls) == set(scheduler.requests)
    assert set(scheduler.ranking.calls) == set(scheduler.calls)
    assert set(scheduler.ranking.running) == running  # the policy sees who runs
    live = {c for p in scheduler.table.programs.values() for c in p.calls}
    assert live == set(scheduler.calls)


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(["A", "B", "C", None]),
            st.integers(1, 80),
            st.integers(1, 30),
        ),
        st.tuples(st.just("step"), st.integers(1, 5)),
        st.tuples(st.just("abort"), st.integers(0, 40)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    operations,
    st.integers(1, 4),
    st.sampled_from(["plas", "atlas", "mlfq", "fcfs", "gittins"]),
    st.sampled_from([AutellixScheduler, AutellixAsyncScheduler]),
    st.booleans(),
)
def test_every_call_in_one_queue_and_nothing_leaked(ops, slots, policy, cls, preempt):
    engine = build(
        cls,
        max_num_seqs=slots,
        num_blocks=24,
        autellix={"first_boundary": 0.2, "num_queues": 4, "policy": policy, "preempt": preempt},
    )
    scheduler = engine.scheduler
    free_at_start = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    added: list[str] = []
    for op in ops:
        if op[0] == "add":
            added.append(engine.add(op[1], prompt=op[2], tokens=op[3]))
        elif op[0] == "step":
            for _ in range(op[1]):
                engine.step()
        elif added:
            scheduler.finish_requests(added[op[1] % len(added)], RequestStatus.FINISHED_ABORTED)
        check_invariants(engine)
    engine.run(lambda: not scheduler.requests, limit=5000)
    check_invariants(engine)
    assert not scheduler.ranking.calls and not scheduler.ranking.running
    assert scheduler.kv_cache_manager.block_pool.get_num_free_blocks() == free_at_start
