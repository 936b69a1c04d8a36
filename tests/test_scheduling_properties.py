"""Property tests: random programs, arrivals, step lengths, memory refusals and aborts
driven through a policy and the process table, checking the invariants every round."""

import dataclasses
import itertools
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autellix.programs import ProcessTable
from autellix.scheduling import (
    CallState,
    Gittins,
    MultiLevelPolicy,
    SchedulingConfig,
    make_policy,
    select_batch,
)

CONFIG = SchedulingConfig(boundaries=(0.5, 1.0, 2.0, 4.0, 8.0), beta=1.5)
EPS = 1e-9
STEPS = (0.1, 0.25, 0.5, 1.0)  # a round's step lengths

calls_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),  # program
        st.floats(0, 10, allow_nan=False),  # arrival
        st.floats(0.05, 4, allow_nan=False),  # service the call needs
    ),
    min_size=1,
    max_size=40,
)


def check_queues(policy: MultiLevelPolicy) -> None:
    seen = [c.call_id for level in policy.levels for c in level]
    assert len(seen) == len(set(seen)) == len(policy.calls), "a call is in two queues or none"
    for index, level in enumerate(policy.levels):
        assert all(c.level == index for c in level)
        keys = [(c.arrival, c.seq) for c in level]
        assert keys == sorted(keys), "not FCFS inside a queue"


def check_starvation(policy: MultiLevelPolicy, now: float) -> None:
    """After a round's promotions, no waiting call outside Q1 is past its threshold: a
    call waits at most beta x its program's and its own service (floored; Gittins: or its
    rank, if larger) plus one round. (A call preempted this very round is checked at the
    next one.)"""
    beta, floor = policy.config.beta, policy.config.min_starvation_service
    for c in policy.calls.values():
        if c.running or c.level == 0 or c.wait_since == now:
            continue
        program_wait, program_service = policy.program_context(c)
        if not policy.config.starvation_program_waiting:
            program_wait = 0.0
        waited = program_wait + c.starve_wait + (now - c.wait_since)
        service = max(program_service + c.starve_service, floor)
        if isinstance(policy, Gittins):
            service = max(service, policy.rank(c))
        assert waited < beta * service + EPS


@pytest.mark.parametrize("policy_name", ["fcfs", "mlfq", "plas", "atlas", "gittins", "srpt"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=calls_strategy, preempt=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_workloads_keep_the_invariants(
    policy_name: str, calls, preempt: bool, seed: int
) -> None:
    """Random rounds (aborts, refusals, batch sizes), then a drain with neither aborts nor
    refusals: every call finishes, within a bound of rounds."""
    rng = random.Random(seed)  # per-round choices: aborts, batch size, refusals, step
    now = 0.0
    table = ProcessTable(ttl=math.inf, clock=lambda: now)
    policy = make_policy(policy_name, dataclasses.replace(CONFIG, preempt=preempt))
    pending = sorted(enumerate(calls), key=lambda item: item[1][1])
    needed: dict[str, float] = {}
    states: dict[str, CallState] = {}
    levels: dict[str, tuple[int, int]] = {}  # call -> (level, promotions) last round
    reported: dict[str, list[tuple[float, float, float]]] = {}  # program -> (wait, service, start)
    preemptions = 0

    def finish(call: CallState) -> None:
        policy.remove(call, now)
        # every second of a call's life is either waiting or service
        assert call.waiting + call.service == pytest.approx(now - call.arrival)
        start = table.get(call.program_id).calls[call.call_id].start_priority
        table.call_finished(call.program_id, call.call_id, call.waiting, call.service)
        reported.setdefault(call.program_id, []).append((call.waiting, call.service, start))
        del states[call.call_id]

    def play_round(chaos: bool) -> None:
        """One round: arrivals, maybe an abort, select_batch, a step. Without chaos no
        call is aborted and fits() refuses nothing."""
        nonlocal now, preemptions
        while pending and pending[0][1][1] <= now:
            index, (program, _, service) = pending.pop(0)
            record, snapshot = table.call_arrived(f"p{program}", call_id=f"c{index}")
            state = CallState(
                record.call_id, record.program_id, now, snapshot, remaining_work=service
            )
            policy.add(state, now)
            states[state.call_id] = state
            needed[state.call_id] = service
        if chaos and states and rng.random() < 0.1:
            victim = rng.choice(sorted(states))
            finish(states[victim])

        max_running = rng.randint(1, 4)
        refusals = [chaos and rng.random() < 0.15 for _ in range(8)]
        answers = iter(refusals)
        refused: list[str] = []

        def fits(call: CallState) -> bool:
            if next(answers, False):
                refused.append(call.call_id)
                return False
            return True

        running_before = len(policy.running)
        # the policy's order this round (ranking first applies this round's promotions,
        # which select_batch would apply the same way at the same `now`)
        top = [c.call_id for c in itertools.islice(policy.ranked(now), max_running)]
        batch, preempted = select_batch(policy, now, max_running, fits=fits)
        preemptions += len(preempted)
        assert len(batch) <= max_running
        assert set(policy.running) == {c.call_id for c in batch}
        assert all(c.running for c in batch) and not any(c.running for c in preempted)
        if not refused:  # liveness: nothing refused, so the batch is full, and the top calls
            assert len(batch) == min(max_running, len(policy)), (len(batch), len(policy))
            assert {c.call_id for c in batch} == set(top)
        if not policy.preemptive:  # preempts only for memory (or a smaller batch)
            assert len(preempted) <= sum(refusals) + max(0, running_before - max_running)
        if isinstance(policy, MultiLevelPolicy):
            check_queues(policy)
            check_starvation(policy, now)
            for c in policy.calls.values():
                level, promotions = levels.get(c.call_id, (c.level, c.promotions))
                # moved up: only anti-starvation does that, to Q1 (Gittins re-ranks a call
                # as it gains service, up as well as down)
                if c.level < level and policy.name != "gittins":
                    assert c.level == 0 and c.promotions > promotions
                levels[c.call_id] = (c.level, c.promotions)

        step = rng.choice(STEPS)
        for call in batch:
            policy.add_service(call, step)
            needed[call.call_id] -= step
        now += step
        for call in batch:
            if needed[call.call_id] <= EPS:
                finish(call)
        if not states and pending:
            now = max(now, pending[0][1][1])

    for _ in range(rng.randint(0, 300)):  # a random length, so that the drain has calls
        if not states and not pending:
            break
        play_round(chaos=True)

    # The drain: every round serves at least one call for at least min(STEPS), so the
    # calls left (and still to arrive) finish within this many rounds.
    left = [needed[c] for c in states] + [service for _, (_, _, service) in pending]
    bound = sum(math.ceil(n / min(STEPS) - 1e-6) for n in left) + len(pending) + 1
    rounds = 0
    while (states or pending) and rounds < bound:
        play_round(chaos=False)
        rounds += 1
    assert not states and not pending, f"{len(states)} calls unfinished after {rounds} rounds"
    assert len(policy) == 0 and not policy.running
    assert all(not p.calls for p in table.programs.values())

    # the process table's totals are the sums of what the engine reported
    for program_id, calls_reported in reported.items():
        program = table.get(program_id)
        assert program.waiting == pytest.approx(sum(w for w, _, _ in calls_reported))
        assert program.service == pytest.approx(sum(s for _, s, _ in calls_reported))
        assert program.critical_path == pytest.approx(
            max(start + s for _, s, start in calls_reported)
        )
        assert program.completed_calls == len(calls_reported)
