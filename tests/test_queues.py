"""The multi-level queues shared by FCFS, MLFQ, PLAS and ATLAS: entry, demotion by
quantum, the non-preemptive order, and anti-starvation's deadlines (exact promotion
times, stale deadlines that must not fire)."""

from __future__ import annotations

import weakref

import pytest

from autellix.programs import ProgramSnapshot
from autellix.scheduling import ATLAS, FCFS, MLFQ, PLAS, SRPT, CallState, SchedulingConfig

# Q1 [0, 1), Q2 [1, 2), Q3 [2, 4), Q4 [4, inf); quanta 1, 1, 2, inf
# W_p counts (the paper's rule): the deadline machinery is the same under either rule
CONFIG = SchedulingConfig(
    boundaries=(1.0, 2.0, 4.0), beta=2.0, starvation_program_waiting=True, preempt=True
)


def call(
    call_id: str,
    arrival: float = 0.0,
    service: float = 0.0,
    waiting: float = 0.0,
    critical_path: float | None = None,
    **kwargs,
) -> CallState:
    program = ProgramSnapshot(
        service=service,
        critical_path=service if critical_path is None else critical_path,
        waiting=waiting,
    )
    return CallState(call_id, call_id, arrival, program, **kwargs)


def ids(calls) -> list[str]:
    return [c.call_id for c in calls]


def test_queue_lengths_follow_entry_and_demotion() -> None:
    policy = PLAS(CONFIG)
    policy.add(call("a"), 0.0)
    policy.add(call("b", service=1.5), 0.0)
    policy.add(call("c", service=100.0), 0.0)
    assert policy.queue_lengths() == [1, 1, 0, 1]
    policy.add_service(policy.calls["a"], 1.0)
    assert policy.queue_lengths() == [0, 2, 0, 1]
    assert len(policy) == 3 and "a" in policy and "z" not in policy


def test_demotion_carries_the_service_left_over_into_the_next_quantum() -> None:
    policy = PLAS(CONFIG)
    c = call("c")
    policy.add(c, 0.0)
    policy.add_service(c, 0.75)
    assert (c.level, c.quantum_used) == (0, 0.75)
    policy.add_service(c, 0.5)  # 1.25: Q1's quantum of 1 used up, 0.25 into Q2's
    assert (c.level, c.quantum_used) == (1, 0.25)
    policy.add_service(c, 0.75)  # exactly Q2's quantum
    assert (c.level, c.quantum_used) == (2, 0.0)
    assert c.service == c.starve_service == 2.0
    assert policy.demotions == 2


def test_custom_quanta_are_per_queue() -> None:
    config = SchedulingConfig(boundaries=(1.0, 2.0), quanta=(0.5, 3.0, 1.0))
    assert config.quanta == (0.5, 3.0, 1.0)
    policy = MLFQ(config)
    c = call("c")
    policy.add(c, 0.0)
    policy.add_service(c, 0.5)
    assert c.level == 1
    policy.add_service(c, 2.9)
    assert c.level == 1
    policy.add_service(c, 0.1)
    assert c.level == 2
    policy.add_service(c, 50.0)  # the last queue keeps its calls whatever its quantum
    assert c.level == 2


def test_a_call_enters_with_a_fresh_quantum() -> None:
    policy = ATLAS(CONFIG)
    c = call("c", service=9.0, critical_path=1.0)  # ATLAS: Q2 by the critical path
    c.quantum_used = 0.9  # left over from another engine, say
    policy.add(c, 0.0)
    assert (c.level, c.quantum_used) == (1, 0.0)
    policy.add_service(c, 0.9)
    assert c.level == 1


def test_preemptive_ranking_is_by_queue_then_arrival() -> None:
    policy = PLAS(CONFIG)
    late_light = call("late_light", arrival=5.0)
    early_heavy = call("early_heavy", arrival=0.0, service=3.0)
    mid_light = call("mid_light", arrival=2.0)
    for c in (late_light, early_heavy, mid_light):
        policy.add(c, c.arrival)
    assert ids(policy.ranked(5.0)) == ["mid_light", "late_light", "early_heavy"]
    policy.start_running(early_heavy, 5.0)  # running does not move a call up
    assert ids(policy.ranked(5.0)) == ["mid_light", "late_light", "early_heavy"]
    assert policy.rank_key(early_heavy) == (2, 0.0, early_heavy.seq)


def test_fcfs_ranks_running_calls_first_in_arrival_order() -> None:
    policy = FCFS()
    a, b, c = call("a", 0.0), call("b", 1.0), call("c", 2.0)
    for x in (c, b, a):
        policy.add(x, 3.0)
    policy.start_running(c, 3.0)
    policy.start_running(b, 3.0)
    # every FCFS call sits in the first queue whatever its program's service
    assert policy.queue_lengths()[0] == 3 and sum(policy.queue_lengths()) == 3
    assert ids(policy.ranked(3.0)) == ["b", "c", "a"]
    # running calls rank ahead of waiting ones: the running one is the last to lose memory
    assert policy.rank_key(a) > policy.rank_key(c) > policy.rank_key(b)
    policy.stop_running(b, 4.0)
    assert ids(policy.ranked(4.0)) == ["c", "a", "b"]


def starving_call(policy, now: float = 1.0) -> CallState:
    """A call in Q4 with T = 5 + 1 and W_p = 4 that starts waiting at `now` (beta 2:
    it is due at W_p + W_c >= 12, i.e. 8 s later)."""
    c = call("c", 0.0, service=5.0, waiting=4.0)
    policy.add(c, 0.0)
    policy.start_running(c, 0.0)
    policy.add_service(c, 1.0)
    policy.stop_running(c, now)
    assert c.level == 3
    return c


def test_a_running_call_is_never_promoted() -> None:
    policy = PLAS(CONFIG)
    c = starving_call(policy)
    policy.start_running(c, 2.0)  # it runs before its deadline (9) and past it
    list(policy.ranked(100.0))
    assert c.level == 3 and c.promotions == 0 and c.waiting == 1.0


def test_a_deadline_armed_for_an_earlier_wait_does_not_fire() -> None:
    policy = PLAS(CONFIG)
    c = starving_call(policy, now=1.0)  # due at 9
    policy.start_running(c, 2.0)
    policy.stop_running(c, 3.0)  # waits again: W_c = 1 so far, due at 3 + 12 - 4 - 1 = 10
    list(policy.ranked(9.5))
    assert c.level == 3 and c.promotions == 0
    list(policy.ranked(10.0))
    assert c.level == 0 and c.promotions == 1
    assert c.waiting == 8.0  # 0..0 queued, 1..2 and 3..10


def test_a_removed_call_is_not_promoted() -> None:
    policy = PLAS(CONFIG)
    c = starving_call(policy)
    policy.remove(c, 2.0)
    assert list(policy.ranked(100.0)) == []
    assert c.promotions == 0 and policy.promotions == 0 and c.waiting == 1.0


def test_a_call_readded_under_the_same_id_keeps_only_its_new_deadline() -> None:
    policy = PLAS(CONFIG)
    old = starving_call(policy)  # due at 9
    policy.remove(old, 1.0)
    new = call("c", 1.0, service=5.0, waiting=0.0)  # T = 5: due at 1 + 10 = 11
    policy.add(new, 1.0)
    list(policy.ranked(9.0))
    assert new.level == 3 and policy.promotions == 0
    list(policy.ranked(11.0))
    assert new.level == 0 and policy.promotions == 1


def test_promotion_from_q2_and_promotions_count_up() -> None:
    policy = PLAS(CONFIG)
    c = call("c", service=1.0)  # Q2; T = max(1 + 0, floor 1) = 1: due after 2 s of waiting
    policy.add(c, 0.0)
    assert c.level == 1
    list(policy.ranked(1.9))
    assert c.level == 1
    list(policy.ranked(2.0))
    assert c.level == 0 and c.promotions == 1
    # it runs 1.5 s (demoted twice: Q1 then Q2's quanta), then waits again
    policy.start_running(c, 2.0)
    policy.add_service(c, 1.5)
    assert c.level == 1 and c.quantum_used == 0.5
    policy.stop_running(c, 3.5)
    # W and T restarted at the promotion: T = 1 (program) + 1.5, due at 3.5 + 2 * 2.5
    list(policy.ranked(8.4))
    assert c.level == 1
    list(policy.ranked(8.5))
    assert c.level == 0 and c.promotions == 2 and policy.promotions == 2


def test_a_promoted_call_starts_q1_with_a_full_quantum() -> None:
    policy = PLAS(CONFIG)
    c = call("c", service=1.0)
    policy.add(c, 0.0)
    policy.start_running(c, 0.0)
    policy.add_service(c, 0.5)  # half of Q2's quantum
    policy.stop_running(c, 0.5)
    list(policy.ranked(10.0))
    assert c.level == 0 and c.quantum_used == 0.0 and c.wait_since == 10.0
    policy.start_running(c, 10.0)
    policy.add_service(c, 0.75)
    assert c.level == 0  # a whole Q1 quantum (1 s), not what was left of Q2's


def test_the_waiting_clock_restarts_at_promotion() -> None:
    policy = PLAS(CONFIG)
    c = starving_call(policy)
    list(policy.ranked(9.0))
    assert c.waiting == 8.0 and c.wait_since == 9.0
    assert c.waited(12.0) == 11.0
    policy.remove(c, 12.0)
    assert c.waiting == 11.0


def test_mlfq_starvation_counts_the_call_alone() -> None:
    # the program's history (lots of waiting, lots of service) does not count: T is the
    # call's own 1.5 s, W its own wait, so it is due after beta * 1.5 = 3 s
    policy = MLFQ(CONFIG)
    c = call("c", service=50.0, waiting=50.0)
    policy.add(c, 0.0)
    assert c.level == 0
    policy.start_running(c, 0.0)
    policy.add_service(c, 1.5)
    policy.stop_running(c, 1.5)
    assert c.level == 1
    list(policy.ranked(4.4))
    assert c.level == 1
    list(policy.ranked(4.5))
    assert c.level == 0


def test_the_starvation_floor_applies_to_program_and_call_service_together() -> None:
    config = SchedulingConfig(boundaries=(1.0, 2.0), beta=1.0, min_starvation_service=4.0)
    policy = PLAS(config)
    small = call("small", service=1.0)  # T = 1 < floor 4: due at 4
    big = call("big", service=5.0)  # T = 5 > floor: due at 5
    policy.add(small, 0.0)
    policy.add(big, 0.0)
    list(policy.ranked(3.9))
    assert (small.level, big.level) == (1, 2)
    list(policy.ranked(4.0))
    assert (small.level, big.level) == (0, 2)
    list(policy.ranked(5.0))
    assert big.level == 0


def test_q1_calls_are_never_armed_and_fcfs_has_no_anti_starvation() -> None:
    policy = PLAS(CONFIG)
    policy.add(call("fresh"), 0.0)
    assert policy._deadlines == []
    fcfs = FCFS(CONFIG)
    fcfs.add(call("x", service=100.0), 0.0)
    assert fcfs._deadlines == [] and fcfs.calls["x"].level == 0


def test_fcfs_serves_priorities_as_vllm_does() -> None:
    """A call's priority (lower first) is its queue; arrival order inside one; no call
    ever leaves its queue; running calls stay ahead (no preemption)."""
    policy = FCFS(CONFIG)
    calls = [call("late-urgent", 3.0), call("early", 0.0), call("mid-low", 1.0), call("run", 0.0)]
    calls[0].priority, calls[2].priority, calls[3].priority = 0, 2, 3
    calls[1].priority = None  # no priority: the first queue
    for c in calls:
        policy.add(c, 3.0)
    policy.start_running(calls[3], 3.0)
    assert ids(policy.ranked(3.0)) == ["run", "early", "late-urgent", "mid-low"]
    policy.add_service(calls[2], 1e9)
    assert calls[2].level == 2 and calls[3].level == 3
    calls.append(call("huge", 4.0))
    calls[-1].priority = 99  # past the last queue: the last queue
    policy.add(calls[-1], 4.0)
    assert calls[-1].level == CONFIG.num_queues - 1
    calls.append(call("eager", 5.0))
    calls[-1].priority = -5  # vLLM takes any int: below 0, the first queue
    policy.add(calls[-1], 5.0)
    assert calls[-1].level == 0


def test_srpt_keeps_one_queue_and_serves_the_shortest_remainder() -> None:
    policy = SRPT()
    for name, work in (("a", 5.0), ("b", 1.0), ("c", 3.0)):
        policy.add(call(name, remaining_work=work), 0.0)
    assert policy.queue_lengths() == [3]
    assert ids(policy.ranked(0.0)) == ["b", "c", "a"]


@pytest.mark.parametrize("policy_cls", [PLAS, ATLAS, MLFQ])
def test_removing_a_call_frees_its_queue_slot(policy_cls) -> None:
    policy = policy_cls(CONFIG)
    c = call("c")
    policy.add(c, 0.0)
    policy.start_running(c, 0.0)
    policy.add_service(c, 1.5)
    policy.remove(c, 2.0)
    assert policy.queue_lengths() == [0, 0, 0, 0] and policy.running == {} and len(policy) == 0
    assert not c.running and c.waiting == 0.0


def test_static_priority_is_the_programs_queue() -> None:
    config = SchedulingConfig()
    plas, atlas = PLAS(config), ATLAS(config)

    def level(policy, **snapshot) -> int:
        return policy.static_priority(CallState("c", "p", 0.0, ProgramSnapshot(**snapshot)))

    assert level(plas) == 0
    assert level(plas, service=100.0, critical_path=1.0) == config.queue_of(100.0) > 0
    assert level(atlas, service=100.0, critical_path=1.0) == config.queue_of(1.0)
    # a program that has waited beta times its service is promoted to the first queue
    assert level(plas, service=100.0, waiting=config.beta * 100.0) == 0
    assert level(FCFS(config), service=100.0) == 0
    # a call's own priority wins over its program's
    asked = CallState("c", "p", 0.0, ProgramSnapshot(service=100.0), priority=1)
    assert plas.static_priority(asked) == 1


def test_a_call_that_left_is_not_kept_by_its_deadline() -> None:
    # a stale deadline may lie far ahead (beta x its program's service); until then it
    # must not keep the call (and in an engine, its tokens) alive, nor pile up
    policy = PLAS(CONFIG)
    left = call("left", service=1000.0)
    policy.add(left, 0.0)  # due at 2000
    gone = weakref.ref(left)
    policy.remove(left, 1.0)
    del left
    assert gone() is None
    for i in range(500):
        c = call(f"c{i}", service=1000.0)
        policy.add(c, float(i))
        policy.remove(c, float(i))
    assert len(policy._deadlines) <= 64
    # the live ones stay armed through the clean-ups
    waiting = call("waiting", service=1.5)
    policy.add(waiting, 0.0)
    for i in range(200):
        c = call(f"d{i}", service=1000.0)
        policy.add(c, 0.0)
        policy.remove(c, 0.0)
    list(policy.ranked(2 * 1.5 + 1e-9))
    assert waiting.level == 0


@pytest.mark.parametrize(
    ("steps", "level"),
    [
        ([0.5, 0.5], 1),  # ends on Q1's quantum exactly (binary fractions): a tie demotes
        ([0.5] * 12, 3),  # lands on each quantum in turn
        ([0.25, 0.75, 1.0, 0.5, 1.5, 3.0, 2.0], 3),  # through every queue to the last, and on
        ([5.0], 3),  # one step past every quantum at once
    ],
)
def test_several_steps_charged_at_once_are_those_steps_charged_one_by_one(
    steps: list[float], level: int
) -> None:
    """`add_services` (a simulator's fast-forward) is `add_service` step by step: the
    same service, queue, quantum used and demotions, down to the last queue."""
    one, many = PLAS(CONFIG), PLAS(CONFIG)
    a, b = call("a"), call("a")
    one.add(a, 0.0)
    many.add(b, 0.0)
    for seconds in steps:
        one.add_service(a, seconds)
    many.add_services(b, steps)
    assert (b.service, b.level, b.quantum_used) == (a.service, a.level, a.quantum_used)
    assert many.demotions == one.demotions and many.queue_lengths() == one.queue_lengths()
    assert b.level == level
