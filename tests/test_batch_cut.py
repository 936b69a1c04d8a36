"""The batch cut (scheduling/cut.py): a call is left out of the batch exactly when the
time it adds to each step costs the more urgent calls more than it gains; equals never
cut each other; exempt calls are always taken; and `select_batch` skips a cut call
without blocking the calls behind it."""

from __future__ import annotations

import pytest

from autellix.programs import ProgramSnapshot
from autellix.scheduling import PLAS, SRPT, CallState, SchedulingConfig, select_batch
from autellix.scheduling.cut import BatchCut, attained_urgency, outlives_fresh

CONFIG = SchedulingConfig(boundaries=(1.0, 2.0, 4.0), preempt=True)


HEAVY = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0)  # past programs: most small, one huge
ALIKE = (9.0, 10.0, 10.0, 11.0)


def call(
    call_id: str, attained: float = 0.0, arrival: float = 0.0, sizes: tuple = HEAVY
) -> CallState:
    return CallState(call_id, call_id, arrival, ProgramSnapshot(attained, attained, 0.0, sizes))


def make_cut(urgency: dict[str, float], cost: dict[str, float], exempt=(), fixed=0.04):
    return BatchCut(
        lambda c: urgency[c.call_id],
        fixed,
        lambda c: cost[c.call_id],
        lambda c: c.call_id in exempt,
    )


@pytest.mark.parametrize(("price", "taken"), [(0.0029, True), (0.0031, False)])
def test_a_call_is_cut_exactly_when_it_costs_the_more_urgent_more_than_it_gains(
    price: float, taken: bool
) -> None:
    # a step of 0.04 + 2 * 0.01 = 0.06 s; j gains 0.1 * 0.06 = 0.006 and costs 2 * price
    cut = make_cut({"a": 1.0, "b": 1.0, "j": 0.1}, {"a": 0.01, "b": 0.01, "j": price})
    batch = [call("a"), call("b")]
    assert cut(call("j"), batch) is taken


def test_calls_of_equal_urgency_never_cut_each_other() -> None:
    names = [f"c{i}" for i in range(20)]
    cost = {name: 0.001 * (1 + i % 2) for i, name in enumerate(names)} | {"dear": 10.0}
    cut = make_cut(dict.fromkeys([*names, "dear"], 0.5), cost)
    batch: list[CallState] = []
    for name in names:
        assert cut(call(name), batch)
        batch.append(call(name))
    assert cut(call("dear"), batch)  # 250 steps' worth, but no one is more urgent


def test_only_the_more_urgent_count_against_a_call() -> None:
    urgency = {"top": 1.0, "peer": 0.1, "low": 0.01, "j": 0.1}
    cost = {"top": 0.01, "peer": 0.01, "low": 0.01, "j": 0.05}
    cut = make_cut(urgency, cost)
    # ahead of j: only "top" (1.0): 0.1 * (0.04 + 0.03) = 0.007 < 1.0 * 0.05
    assert not cut(call("j"), [call("top"), call("peer"), call("low")])
    cut = make_cut(urgency, cost)
    assert cut(call("j"), [call("peer"), call("low")])  # no one ahead


def test_exempt_calls_are_always_taken() -> None:
    cut = make_cut({"a": 1.0, "j": 1e-6}, {"a": 0.01, "j": 10.0}, exempt={"j"})
    assert cut(call("j"), [call("a")])


def test_the_urgency_of_attained_service_is_capped_at_the_top_of_the_queue() -> None:
    bounds = CONFIG.boundaries
    assert attained_urgency(0.0, 0, bounds) == 1.0  # 1 / (0 + the first boundary)
    assert attained_urgency(3.0, 2, bounds) == 1 / 4
    assert attained_urgency(10.0, 2, bounds) == 1 / 5  # capped at 4: the queue's top
    assert attained_urgency(50.0, 0, bounds) == 1 / 2  # promoted to the first queue
    assert attained_urgency(50.0, 3, bounds) == 1 / 51  # the last queue has no top
    assert attained_urgency(3.0, 0, ()) == 1 / 4  # no queues: 1 / (attained + 1 s)
    assert attained_urgency(0.0, 0, (2.0, 8.0)) == 1 / 2  # the first boundary, whatever it is


def test_a_call_that_gains_exactly_what_it_costs_is_taken() -> None:
    # (binary fractions, so the tie is exact) j gains 0.5 * (0.5 + 0.25) = 0.375 and costs
    # the more urgent a 1.0 * 0.375
    cut = make_cut({"a": 1.0, "j": 0.5}, {"a": 0.25, "j": 0.375}, fixed=0.5)
    assert cut(call("j"), [call("a")])


def test_a_cut_reads_each_call_of_the_growing_batch_once() -> None:
    # asked again as the batch grows, the cut counts each taken call once: j gains
    # 0.5 * (0.04 + 0.01 + 0.01) = 0.03 and costs a (the only one more urgent) 0.025; read
    # from its start again, a would count twice: 0.5 * 0.07 = 0.035 against 2 * 0.025
    cut = make_cut({"a": 1.0, "b": 0.5, "j": 0.5}, {"a": 0.01, "b": 0.01, "j": 0.025})
    assert cut(call("b"), [call("a")])  # 0.5 * 0.05 >= 1.0 * 0.01
    assert cut(call("j"), [call("a"), call("b")])


def test_plas_ranks_urgency_by_program_service_and_exempts_its_first_queue() -> None:
    policy = PLAS(CONFIG)
    fresh, heavy = call("fresh"), call("heavy", attained=3.0)
    for c in (fresh, heavy):
        policy.add(c, 0.0)
    heavy.service = 0.5
    assert policy.urgency(fresh) == 1.0 and policy.urgency(heavy) == 1 / 4.5
    assert policy.cut_exempt(fresh) and not policy.cut_exempt(heavy)
    assert policy.cuts_batch and not SRPT().cut_exempt(heavy)


def test_only_programs_expected_to_outlive_a_fresh_one_are_cut() -> None:
    # heavy tail: past 1 s of service only the huge program is left, 96.5 s to go (mean 13.4)
    assert outlives_fresh(HEAVY, 3.5)
    assert not outlives_fresh(HEAVY, 0.5)  # the small ones are still in: 12.5 s to go
    assert not outlives_fresh(ALIKE, 3.5)  # alike: more service, nearer the end
    assert not outlives_fresh(HEAVY, 100.0)  # past every size seen: not known
    assert not outlives_fresh((), 3.5)  # nothing learned yet
    policy = PLAS(CONFIG)
    calls = {sizes: call(str(sizes), 3.0, sizes=sizes) for sizes in (HEAVY, ALIKE, ())}
    for c in calls.values():
        policy.add(c, 0.0)
        assert c.level > 0
    assert [policy.cut_exempt(c) for c in calls.values()] == [False, True, True]
    # a program whose class has no law of its own is judged by the law of all classes
    classless = CallState("x", "x", 0.0, ProgramSnapshot(3.0, 3.0, 0.0, (), HEAVY))
    policy.add(classless, 0.0)
    assert not policy.cut_exempt(classless)


def test_select_batch_preempts_a_cut_running_call_and_skips_a_cut_waiting_one() -> None:
    policy = PLAS(CONFIG)
    for name, attained in (("heavy", 3.0), ("a", 0.0)):
        policy.add(call(name, attained), 0.0)
    select_batch(policy, 0.0, max_running=4)
    assert set(policy.running) == {"heavy", "a"}
    for name, attained, arrival in (("big", 2.5, 1.0), ("b", 0.0, 1.0), ("late", 5.0, 1.0)):
        policy.add(call(name, attained, arrival), 1.0)
    asked: list[str] = []

    def fits(c: CallState) -> bool:
        asked.append(c.call_id)
        return True

    def cut(c: CallState, batch: list[CallState]) -> bool:
        return c.call_id not in {"heavy", "big"}

    batch, preempted = select_batch(policy, 1.0, max_running=4, fits=fits, cut=cut)
    assert [c.call_id for c in batch] == ["a", "b", "late"]
    assert [c.call_id for c in preempted] == ["heavy"] and not policy.calls["heavy"].running
    assert asked == ["a", "b", "late"]  # what the cut leaves out is never fitted
