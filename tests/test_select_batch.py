"""One scheduling round (`select_batch`) and the policy's bookkeeping around it: which
calls `fits` is asked about and in what order, who is preempted, and the waiting and
service clocks of calls that start, stop and leave."""

from __future__ import annotations

import pytest

from autellix.programs import ProgramSnapshot
from autellix.scheduling import FCFS, PLAS, SRPT, CallState, SchedulingConfig, select_batch

CONFIG = SchedulingConfig(boundaries=(1.0, 2.0, 4.0), beta=2.0, preempt=True)


def call(call_id: str, arrival: float = 0.0, service: float = 0.0, **kwargs) -> CallState:
    return CallState(call_id, call_id, arrival, ProgramSnapshot(service, service, 0.0), **kwargs)


def ids(calls) -> list[str]:
    return [c.call_id for c in calls]


class Fits:
    """A `fits` that records what it was asked and refuses the named calls."""

    def __init__(self, refuse=()) -> None:
        self.refuse = set(refuse)
        self.asked: list[str] = []

    def __call__(self, c: CallState) -> bool:
        self.asked.append(c.call_id)
        return c.call_id not in self.refuse


def test_the_batch_is_the_top_calls_in_priority_order() -> None:
    policy = PLAS(CONFIG)
    for name, arrival, service in (("heavy", 0.0, 3.0), ("b", 2.0, 0.0), ("a", 1.0, 0.0)):
        policy.add(call(name, arrival, service), arrival)
    fits = Fits()
    batch, preempted = select_batch(policy, 2.0, max_running=2, fits=fits)
    assert ids(batch) == ["a", "b"] and preempted == []
    assert fits.asked == ["a", "b"]  # the scan stops at a full batch
    assert set(policy.running) == {"a", "b"} and all(c.running for c in batch)


def test_after_a_waiting_call_is_refused_only_running_calls_are_asked() -> None:
    policy = PLAS(CONFIG)
    runner = call("runner", 0.0, service=3.0)  # Q3, behind the fresh calls
    policy.add(runner, 0.0)
    select_batch(policy, 0.0, max_running=4)
    for name in ("w1", "w2", "w3"):
        policy.add(call(name, 1.0), 1.0)
    fits = Fits(refuse={"w2"})
    batch, preempted = select_batch(policy, 1.0, max_running=4, fits=fits)
    # w3 would fit but may not overtake w2; the running call behind them keeps its place
    assert fits.asked == ["w1", "w2", "runner"]
    assert ids(batch) == ["w1", "runner"] and preempted == []


def test_the_scan_stops_once_blocked_with_no_running_call_left() -> None:
    policy = PLAS(CONFIG)
    runner = call("runner", 0.0)
    policy.add(runner, 0.0)
    select_batch(policy, 0.0, max_running=4)
    for name in ("w1", "w2", "w3"):
        policy.add(call(name, 1.0, service=3.0), 1.0)  # behind the running call
    fits = Fits(refuse={"w1"})
    batch, _ = select_batch(policy, 1.0, max_running=4, fits=fits)
    # nothing after w1 is asked: fits() would reserve memory for calls that cannot run
    assert fits.asked == ["runner", "w1"]
    assert ids(batch) == ["runner"]


def test_two_running_calls_behind_a_blocked_one_are_both_asked() -> None:
    policy = PLAS(CONFIG)
    r1, r2 = call("r1", 0.0, service=3.0), call("r2", 0.5, service=3.0)
    policy.add(r1, 0.0)
    policy.add(r2, 0.5)
    select_batch(policy, 0.5, max_running=4)
    policy.add(call("w", 1.0), 1.0)
    policy.add(call("w_late", 1.5), 1.5)
    fits = Fits(refuse={"w"})
    batch, preempted = select_batch(policy, 2.0, max_running=4, fits=fits)
    assert fits.asked == ["w", "r1", "r2"]
    assert ids(batch) == ["r1", "r2"] and preempted == []


def test_a_running_call_that_does_not_fit_is_preempted_and_waits_from_now() -> None:
    policy = PLAS(CONFIG)
    a, b = call("a", 0.0), call("b", 0.0)
    policy.add(a, 0.0)
    policy.add(b, 0.0)
    select_batch(policy, 1.0, max_running=2)
    batch, preempted = select_batch(policy, 3.0, max_running=2, fits=Fits(refuse={"a"}))
    assert ids(batch) == ["b"] and ids(preempted) == ["a"]
    assert not a.running and a.wait_since == 3.0 and policy.running == {"b": b}
    assert a.waiting == 1.0 and a.waited(5.0) == 3.0


def test_a_smaller_batch_preempts_the_lowest_ranked_running_calls() -> None:
    policy = PLAS(CONFIG)
    calls = [call(f"c{i}", float(i)) for i in range(3)]
    for c in calls:
        policy.add(c, c.arrival)
    select_batch(policy, 2.0, max_running=3)
    batch, preempted = select_batch(policy, 2.0, max_running=1)
    assert ids(batch) == ["c0"] and sorted(ids(preempted)) == ["c1", "c2"]


def test_starting_and_stopping_twice_changes_nothing() -> None:
    policy = PLAS(CONFIG)
    c = call("c")
    policy.add(c, 0.0)
    policy.start_running(c, 1.0)
    policy.start_running(c, 2.0)
    assert c.waiting == 1.0 and c.starve_wait == 1.0 and policy.running == {"c": c}
    assert c.waited(2.5) == 1.0  # a running call's wait is closed
    policy.stop_running(c, 3.0)
    policy.stop_running(c, 4.0)
    assert c.wait_since == 3.0 and policy.running == {}
    policy.remove(c, 5.0)
    assert c.waiting == 3.0 and c.starve_wait == 3.0  # both waits, 0..1 and 3..5


def test_removing_a_running_call_does_not_count_waiting() -> None:
    policy = PLAS(CONFIG)
    c = call("c")
    policy.add(c, 0.0)
    policy.start_running(c, 1.0)
    policy.add_service(c, 0.5)
    policy.add_service(c, 0.25)
    policy.remove(c, 10.0)
    assert (c.waiting, c.service, c.running) == (1.0, 0.75, False)
    assert policy.running == {} and len(policy) == 0 and "c" not in policy


def test_a_new_call_waits_from_its_arrival_at_this_engine() -> None:
    policy = SRPT()
    c = call("c", arrival=0.0, remaining_work=1.0)
    c.running = True  # whatever it was elsewhere
    policy.add(c, 4.0)
    assert not c.running and c.wait_since == 4.0 and c.waited(6.0) == 2.0
    assert "c" in policy and len(policy) == 1


def test_arrival_order_breaks_ties_at_this_engine() -> None:
    policy = SRPT()
    first, second = call("first", remaining_work=2.0), call("second", remaining_work=2.0)
    policy.add(first, 0.0)
    policy.add(second, 0.0)
    assert second.seq == first.seq + 1
    assert ids(policy.ranked(0.0)) == ["first", "second"]


def test_a_non_preemptive_policy_keeps_its_running_calls_in_a_full_batch() -> None:
    policy = FCFS()
    late = call("late", 5.0)
    policy.add(late, 5.0)
    select_batch(policy, 5.0, max_running=1)
    early = call("early", 0.0)
    policy.add(early, 6.0)
    batch, preempted = select_batch(policy, 6.0, max_running=1)
    assert ids(batch) == ["late"] and preempted == []
    assert early.waited(6.0) == 0.0


@pytest.mark.parametrize("max_running", [1, 2])
def test_the_batch_is_never_larger_than_max_running(max_running: int) -> None:
    policy = FCFS()
    for i in range(4):
        policy.add(call(f"c{i}", float(i)), 0.0)
    batch, _ = select_batch(policy, 0.0, max_running=max_running)
    assert ids(batch) == [f"c{i}" for i in range(max_running)]
