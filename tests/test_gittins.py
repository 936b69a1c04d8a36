"""The Gittins policy and the size model the process table learns for it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.programs import ProcessTable, ProgramSnapshot, SizeModel, kind_of
from autellix.scheduling import CallState, Gittins, SchedulingConfig, gittins_rank, select_batch


def brute_rank(sizes: list[float], a: float, per_size: bool) -> float:
    """The definition: min over quanta d of E[min(S-a, d) | S>a] / E[w(S) 1(S-a <= d) | S>a],
    w(S) = 1/S (the square root of the ratio) or 1, with d tried at every size beyond a and
    at a fine grid in between."""
    beyond = [s for s in sizes if s > a]
    if not beyond:
        return a
    grid = sorted({s - a for s in beyond} | {(s - a) * f for s in beyond for f in (0.3, 0.7)})
    best = math.inf
    for d in grid:
        done = sum(1 / s if per_size else 1 for s in beyond if s - a <= d) / len(beyond)
        expected = sum(min(s - a, d) for s in beyond) / len(beyond)
        if done:
            best = min(best, expected / done)
    return math.sqrt(best) if per_size else best


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.floats(0.01, 100, allow_nan=False), min_size=1, max_size=30),
    a=st.floats(0, 120, allow_nan=False),
    per_size=st.booleans(),
)
def test_rank_is_the_definition(sizes: list[float], a: float, per_size: bool) -> None:
    sizes.sort()
    assert gittins_rank(sizes, a, per_size) == pytest.approx(
        brute_rank(sizes, a, per_size), rel=1e-9, abs=1e-9
    )


def test_rank_follows_the_hazard_rate() -> None:
    alike = [10.0] * 20  # sizes alike: what is nearly done goes first (SRPT)
    assert [gittins_rank(alike, a, per_size=False) for a in (0, 4, 9)] == pytest.approx([10, 6, 1])
    ranks = [gittins_rank(alike, a) for a in (0, 4, 9)]  # sqrt(left x size)
    assert ranks == pytest.approx([10, math.sqrt(60), math.sqrt(10)])
    heavy = [1.0] * 18 + [100.0, 200.0]  # mostly small, a few huge: least attained first
    assert gittins_rank(heavy, 0, per_size=False) == pytest.approx(20 / 18)  # 90% finish in 1
    assert gittins_rank(heavy, 2, per_size=False) == pytest.approx(148)  # past the small: huge
    assert gittins_rank(heavy, 0) == pytest.approx(math.sqrt(20 / 18))
    assert gittins_rank(heavy, 2) == pytest.approx(140)  # sqrt(98 x 2 / (1/100))
    assert gittins_rank((), 7.5) == 7.5  # nothing learned yet: PLAS


def call(call_id: str, service: float, sizes=(), arrival: float = 0.0) -> CallState:
    return CallState(call_id, call_id, arrival, ProgramSnapshot(service, 0.0, 0.0, sizes))


def test_alike_sizes_finish_the_older_program_first() -> None:
    """PLAS would run the fresh program first; with sizes alike Gittins finishes the one
    that is nearly done."""
    policy = Gittins(SchedulingConfig(boundaries=(1, 2, 4, 8, 16)))
    sizes = tuple([10.0] * 20)
    old, fresh = call("old", 9.5, sizes), call("fresh", 0.0, sizes, arrival=1.0)
    policy.add(fresh, 1.0)
    policy.add(old, 1.0)
    batch, _ = select_batch(policy, 1.0, max_running=1)
    assert batch == [old]


def test_a_fresh_program_goes_before_a_big_one_nearly_done() -> None:
    """Half the programs need 1 s, half 100 s. A big one with 1 s left ends within 1 s
    for sure, a fresh one half the time, so the plain index (mean latency in seconds)
    serves the big one first. Per token, ending a program of 1 s is worth a hundred times
    ending one of 100 s: the fresh one goes first."""
    sizes = tuple([1.0] * 10 + [100.0] * 10)
    assert gittins_rank(sizes, 99.0, per_size=False) < gittins_rank(sizes, 0.0, per_size=False)
    policy = Gittins(SchedulingConfig(boundaries=(1, 2, 4, 8, 16)))
    big, fresh = call("big", 99.0, sizes), call("fresh", 0.0, sizes, arrival=1.0)
    policy.add(big, 0.0)
    policy.add(fresh, 1.0)
    batch, _ = select_batch(policy, 1.0, max_running=1)
    assert batch == [fresh]


def test_a_program_without_a_law_of_its_class_ranks_by_service_or_the_law_of_all() -> None:
    """The law of all classes mixes kinds: it may move a program ahead of its attained
    service (it says the program is nearly done), never behind it."""
    policy = Gittins(SchedulingConfig())
    heavy = (1.0,) * 7 + (100.0,)
    alike = (9.0, 10.0, 10.0, 11.0)

    def classless(service: float, sizes_of_all: tuple) -> CallState:
        return CallState("c", "c", 0.0, ProgramSnapshot(service, 0.0, 0.0, (), sizes_of_all))

    assert policy.rank(classless(3.0, ())) == 3.0  # nothing learned: PLAS
    assert gittins_rank(heavy, 3.0) > 3.0  # only the huge one is left: the law says wait
    assert policy.rank(classless(3.0, heavy)) == 3.0
    assert gittins_rank(alike, 8.0) < 8.0  # alike: nearly done
    assert policy.rank(classless(8.0, alike)) == gittins_rank(alike, 8.0)
    # a law of its own class ranks it, above its service or below
    assert policy.rank(call("own", 3.0, heavy)) == gittins_rank(heavy, 3.0)


def test_a_running_call_is_reranked_up_and_down() -> None:
    config = SchedulingConfig(boundaries=(1, 2, 4, 8, 16))
    sizes = tuple([10.0] * 20)
    policy = Gittins(config)
    c = call("c", 0.0, sizes)
    policy.add(c, 0.0)
    assert c.level == config.queue_of(10.0)
    select_batch(policy, 0.0, 1)
    policy.add_service(c, config.quanta[c.level])  # 8 s: 2 s left, a better rank
    assert c.level == config.queue_of(gittins_rank(sizes, 8.0)) < config.queue_of(10.0)
    light = [1.0] * 18 + [100.0, 200.0]
    d = call("d", 0.0, tuple(light))
    policy.add(d, 0.0)
    entry = d.level
    policy.add_service(d, config.quanta[d.level])
    assert d.level > entry  # past the small programs: it is probably huge


def test_size_model_keeps_recent_sizes_per_kind_and_never_mixes_kinds() -> None:
    model = SizeModel(keep=4, min_samples=2)
    assert model.sizes("chat") == ()
    model.observe("chat", "a", 3.0)
    assert model.sizes("chat") == ()  # one is too few
    model.observe("search", "b", 50.0)
    model.observe("search", "d", 60.0)
    assert model.sizes("search") == (50.0, 60.0)
    # not everyone's: a search's size says nothing of what a chat has left (PLAS instead)
    assert model.sizes("chat") == () and model.sizes(None) == ()
    assert model.everyone() == (3.0, 50.0, 60.0)
    model.observe("chat", "c", 1.0)
    model.observe("chat", "a", 4.0)  # a report replaces the program's earlier one
    assert model.sizes("chat") == (1.0, 4.0)
    for i in range(5):
        model.observe("chat", f"n{i}", 10.0 + i)
    assert model.sizes("chat") == (11.0, 12.0, 13.0, 14.0)  # the last `keep`


def test_the_table_reports_sizes_when_programs_end_idle_or_reaped() -> None:
    now = 0.0
    table = ProcessTable(ttl=100.0, clock=lambda: now, idle_after=5.0)
    table.sizes.min_samples = 1

    def one_call(program_id: str | None, service: float, kind: str | None = None) -> None:
        c, _ = table.call_arrived(program_id, kind=kind)
        table.call_finished(c.program_id, c.call_id, 0.0, service)

    one_call(None, 2.0)  # a program of one call ends with it
    assert table.sizes.everyone() == (2.0,) and table.sizes.sizes(None) == ()
    one_call("chat", 3.0, kind="k")
    one_call("chat", 4.0)
    table.reap()
    assert table.sizes.sizes("k") == ()  # not idle long enough yet
    now = 6.0
    table.reap()
    assert table.sizes.sizes("k") == (7.0,) and "chat" in table
    _, snapshot = table.call_arrived("chat")
    assert snapshot.sizes == (7.0,) and snapshot.service == 7.0
    now = 200.0
    table.end("chat")  # still has a call: stays until it finishes
    table.call_finished("chat", next(iter(table.get("chat").calls)), 0.0, 1.0)
    assert table.sizes.sizes("k") == (8.0,) and "chat" not in table


def test_kind_is_the_system_prompt() -> None:
    system = {"role": "system", "content": "You are a search agent."}
    a = kind_of([system, {"role": "user", "content": "task 1"}])
    assert a == kind_of([system, {"role": "user", "content": "task 2"}])
    assert a != kind_of([{"role": "system", "content": "You chat."}])
    assert kind_of([{"role": "user", "content": "hi"}]) is None
