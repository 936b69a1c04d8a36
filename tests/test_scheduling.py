import math

import pytest

from autellix.programs import ProgramSnapshot
from autellix.scheduling import (
    ATLAS,
    FCFS,
    MLFQ,
    PLAS,
    SRPT,
    CallState,
    SchedulingConfig,
    make_policy,
    select_batch,
)
from autellix.scheduling.config import geometric_boundaries

CONFIG = SchedulingConfig(boundaries=(1.0, 2.0, 4.0), beta=2.0, preempt=True)


def call(
    call_id: str,
    arrival: float = 0.0,
    service: float = 0.0,
    critical_path: float = 0.0,
    waiting: float = 0.0,
    **kwargs,
) -> CallState:
    program = ProgramSnapshot(service=service, critical_path=critical_path, waiting=waiting)
    return CallState(call_id, kwargs.pop("program_id", call_id), arrival, program, **kwargs)


def ids(calls) -> list[str]:
    return [c.call_id for c in calls]


def test_config_defaults_and_queue_of() -> None:
    config = SchedulingConfig()
    assert config.num_queues == 11
    assert config.boundaries == geometric_boundaries()
    assert config.quanta[:3] == (1.0, 1.0, 2.0) and math.isinf(config.quanta[-1])
    assert [config.queue_of(p) for p in (0, 0.99, 1.0, 3.0, 512, 1e9)] == [0, 0, 1, 2, 10, 10]
    assert config.min_starvation_service == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boundaries": (2.0, 1.0)}, "strictly increasing"),
        ({"boundaries": (0.0, 1.0)}, "positive"),
        ({"boundaries": (1.0,), "quanta": (1.0,)}, "need 2 quanta"),
        ({"beta": 0.0}, "beta"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulingConfig(**kwargs)


def test_make_policy() -> None:
    assert isinstance(make_policy("atlas", CONFIG), ATLAS)
    assert isinstance(make_policy("srpt"), SRPT)
    with pytest.raises(ValueError, match="unknown policy 'lifo'"):
        make_policy("lifo")


def test_fcfs_is_arrival_order_and_keeps_running_calls() -> None:
    policy = FCFS()
    calls = [call("c", 2.0), call("a", 0.0), call("b", 1.0)]
    for c in calls:
        policy.add(c, c.arrival)
    batch, preempted = select_batch(policy, 3.0, max_running=2)
    assert ids(batch) == ["a", "b"] and preempted == []
    # an earlier arrival that waits (say it was preempted for memory) does not
    # displace running calls under FCFS
    early = call("early", -1.0)
    policy.add(early, 3.0)
    batch, preempted = select_batch(policy, 4.0, max_running=2)
    assert ids(batch) == ["a", "b"] and preempted == []


def test_mlfq_enters_q1_and_demotes_by_quantum() -> None:
    policy = MLFQ(CONFIG)
    long_running = call("old", 0.0, service=100.0)  # program context is ignored
    policy.add(long_running, 0.0)
    assert long_running.level == 0
    policy.add_service(long_running, 1.0)  # Q1's quantum is 1
    assert long_running.level == 1
    policy.add_service(long_running, 3.5)  # 1 (Q2) + 2 (Q3), 0.5 left in Q4
    assert long_running.level == 3 and long_running.quantum_used == 0.5
    policy.add_service(long_running, 1e6)  # the last queue has no quantum
    assert long_running.level == 3
    assert policy.demotions == 3


def test_mlfq_skip_join_enters_by_prompt_length() -> None:
    config = SchedulingConfig(
        boundaries=(1.0, 2.0, 4.0), skip_join=True, prefill_seconds_per_token=1e-3
    )
    policy = MLFQ(config)
    short, long = call("short", prompt_tokens=100), call("long", prompt_tokens=5000)
    policy.add(short, 0.0)
    policy.add(long, 0.0)
    assert (short.level, long.level) == (0, 3)


def test_plas_and_atlas_enter_by_program_service() -> None:
    plas, atlas = PLAS(CONFIG), ATLAS(CONFIG)
    for policy, expected in ((plas, 2), (atlas, 1)):
        c = call("x", service=3.0, critical_path=1.5)
        policy.add(c, 0.0)
        assert c.level == expected


def test_plas_serves_the_least_attained_program_first_and_preempts() -> None:
    policy = PLAS(CONFIG)
    heavy = call("heavy", 0.0, service=3.0)
    policy.add(heavy, 0.0)
    batch, _ = select_batch(policy, 0.0, max_running=1)
    assert ids(batch) == ["heavy"]
    fresh = call("fresh", 1.0)
    policy.add(fresh, 1.0)
    batch, preempted = select_batch(policy, 1.0, max_running=1)
    assert ids(batch) == ["fresh"] and ids(preempted) == ["heavy"]
    assert not heavy.running and heavy.wait_since == 1.0


@pytest.mark.parametrize("name", ["plas", "gittins", "srpt"])
def test_without_preemption_a_waiting_call_that_outranks_a_running_one_waits(name) -> None:
    policy = make_policy(name, SchedulingConfig(boundaries=(1.0, 2.0, 4.0), preempt=False))
    heavy = call("heavy", 0.0, service=3.0, remaining_work=10.0)
    policy.add(heavy, 0.0)
    select_batch(policy, 0.0, max_running=1)
    fresh, later = call("fresh", 1.0, remaining_work=1.0), call("later", 2.0, service=3.0)
    later.remaining_work = 5.0
    policy.add(later, 2.0)
    policy.add(fresh, 1.0)
    batch, preempted = select_batch(policy, 2.0, max_running=1)
    assert ids(batch) == ["heavy"] and preempted == []
    policy.remove(heavy, 3.0)
    batch, _ = select_batch(policy, 3.0, max_running=1)
    assert ids(batch) == ["fresh"]  # the order still acts on the waiting calls


def test_fcfs_within_a_queue_by_arrival_not_by_demotion_time() -> None:
    policy = PLAS(CONFIG)
    first, second = call("first", 0.0), call("second", 1.0)
    policy.add(first, 0.0)
    policy.add(second, 1.0)
    policy.add_service(first, 1.0)  # demoted to Q2
    policy.add_service(second, 1.0)  # demoted to Q2 after it
    assert ids(policy.ranked(2.0)) == ["first", "second"]


def test_waiting_time_is_counted_while_queued_and_not_running() -> None:
    policy = PLAS(CONFIG)
    c = call("c", 0.0)
    policy.add(c, 0.0)
    select_batch(policy, 2.0, max_running=1)  # waited 0..2
    assert c.running and c.waiting == 2.0
    policy.stop_running(c, 3.0)  # ran 2..3, preempted
    assert c.waited(4.5) == 3.5
    policy.remove(c, 5.0)
    assert c.waiting == 4.0 and len(policy) == 0


@pytest.mark.parametrize(
    ("program_waiting", "due"),
    [(False, 13.0), (True, 9.0)],
    ids=["the call's own waiting", "the program's too"],
)
def test_anti_starvation_promotes_to_q1_and_resets_call_counters(
    program_waiting: bool, due: float
) -> None:
    # beta 2: a call waiting in Q4 with T = T_p + T_c = 5 + 1 starves once it has waited
    # 12 s (from t=1, due at 13); counting its program's past waiting W_p = 4 too (the
    # paper's rule), after 8 s (due at 9).
    config = SchedulingConfig(
        boundaries=(1.0, 2.0, 4.0), beta=2.0, starvation_program_waiting=program_waiting
    )
    policy = PLAS(config)
    c = call("c", 0.0, service=5.0, waiting=4.0)
    policy.add(c, 0.0)
    assert c.level == 3
    select_batch(policy, 0.0, max_running=1)
    policy.add_service(c, 1.0)
    blocker = call("blocker", 1.0)
    policy.add(blocker, 1.0)
    select_batch(policy, 1.0, max_running=1)  # c preempted, waits from t=1
    assert not c.running
    assert ids(policy.ranked(due - 0.1)) == ["blocker", "c"] and c.level == 3
    assert ids(policy.ranked(due)) == ["c", "blocker"]  # Q1, FCFS by arrival
    assert c.level == 0 and c.promotions == 1 and policy.promotions == 1
    assert c.starve_wait == 0.0 and c.starve_service == 0.0
    assert c.waiting == due - 1 and c.service == 1.0  # the reported totals are kept


def test_fresh_call_uses_the_starvation_floor() -> None:
    config = SchedulingConfig(
        boundaries=(1.0, 2.0),
        beta=2.0,
        min_starvation_service=3.0,
        skip_join=True,
        prefill_seconds_per_token=1.0,
    )
    policy = MLFQ(config)
    c = call("c", prompt_tokens=5)
    policy.add(c, 0.0)
    assert c.level == 2
    list(policy.ranked(5.9))
    assert c.level == 2
    list(policy.ranked(6.0))
    assert c.level == 0


def test_fcfs_never_promotes() -> None:
    policy = FCFS()
    c = call("c", 0.0, service=0.0, waiting=1e9)
    policy.add(c, 0.0)
    list(policy.ranked(1e9))
    assert c.level == 0 and policy.promotions == 0


def test_select_batch_stops_at_the_first_waiting_call_that_does_not_fit() -> None:
    policy = PLAS(CONFIG)
    for i, size in enumerate((2, 5, 1)):
        policy.add(call(f"c{i}", float(i), prompt_tokens=size), float(i))
    free = [4]

    def fits(c: CallState) -> bool:
        if c.prompt_tokens > free[0]:
            return False
        free[0] -= c.prompt_tokens
        return True

    batch, _ = select_batch(policy, 3.0, max_running=3, fits=fits)
    assert ids(batch) == ["c0"]  # c2 fits but may not overtake c1


def test_running_call_that_does_not_fit_is_preempted_but_scan_goes_on() -> None:
    policy = PLAS(CONFIG)
    a, b = call("a", 0.0), call("b", 1.0)
    policy.add(a, 0.0)
    policy.add(b, 1.0)
    select_batch(policy, 1.0, max_running=2)
    batch, preempted = select_batch(policy, 2.0, max_running=2, fits=lambda c: c is not a)
    assert ids(batch) == ["b"] and ids(preempted) == ["a"]


def test_resident_programs_go_first_tier_by_tier_each_in_the_policys_order() -> None:
    policy = PLAS(CONFIG)
    calls = [
        call("fresh", 0.0, service=0.0),
        call("agent-2", 1.0, service=3.0, program_id="agent"),
        call("other", 2.0, service=0.5),
        call("agent-1", 0.5, service=3.0, program_id="agent"),
        call("old", 0.2, service=9.0),
    ]
    for c in calls:
        policy.add(c, c.arrival)
    assert ids(policy.ranked(3.0)) == ["fresh", "other", "agent-1", "agent-2", "old"]
    assert ids(policy.order(3.0, first=[{"agent", "old"}])) == [
        *("agent-1", "agent-2", "old"),
        *("fresh", "other"),
    ]
    assert ids(policy.order(3.0, first=[{"old"}, {"agent", "old"}])) == [
        *("old", "agent-1", "agent-2"),
        *("fresh", "other"),
    ]
    batch, _ = select_batch(policy, 3.0, max_running=2, first=[{"old"}])
    assert ids(batch) == ["old", "fresh"]


def test_srpt_ranks_by_remaining_work() -> None:
    policy = SRPT()
    a, b = call("a", remaining_work=5.0), call("b", remaining_work=3.0)
    policy.add(a, 0.0)
    policy.add(b, 0.0)
    assert ids(policy.ranked(0.0)) == ["b", "a"]
    policy.add_service(a, 2.5)
    assert ids(policy.ranked(0.0)) == ["a", "b"]


def test_adding_twice_is_an_error() -> None:
    policy = ATLAS(CONFIG)
    c = call("c")
    policy.add(c, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        policy.add(c, 0.0)
