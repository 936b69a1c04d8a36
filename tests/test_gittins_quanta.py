"""Gittins re-ranks a call each time it uses up its queue's quantum, however the
service arrives (one long step or many short ones), and starts the next quantum afresh."""

from __future__ import annotations

import pytest

from autellix.programs import ProgramSnapshot
from autellix.scheduling import CallState, Gittins, SchedulingConfig, gittins_rank

CONFIG = SchedulingConfig(boundaries=(1, 2, 4, 8, 16), preempt=True)  # quanta 1, 1, 2, 4, 8, inf
ALIKE = tuple([10.0] * 20)  # every program needs 10 s: rank(a) = sqrt(10 (10 - a))


def started(policy: Gittins, sizes=ALIKE) -> CallState:
    c = CallState("c", "p", 0.0, ProgramSnapshot(0.0, 0.0, 0.0, sizes))
    policy.add(c, 0.0)
    policy.start_running(c, 0.0)
    return c


def test_short_steps_add_up_to_a_quantum() -> None:
    policy = Gittins(CONFIG)
    c = started(policy)
    assert c.level == CONFIG.queue_of(10.0) == 4  # [8, 16): quantum 8
    for _ in range(7):
        policy.add_service(c, 1.0)
    assert c.level == 4 and c.quantum_used == 7.0
    policy.add_service(c, 1.0)  # 8 s attained: rank sqrt(20), queue [4, 8)
    assert gittins_rank(ALIKE, 8.0) == pytest.approx(20**0.5)
    assert (c.level, c.quantum_used) == (3, 0.0)
    assert policy.demotions == 1 and c.service == 8.0


def test_the_quantum_after_a_move_is_the_new_queue_s_whole_quantum() -> None:
    policy = Gittins(CONFIG)
    c = started(policy)
    policy.add_service(c, 8.0)
    assert c.level == 3  # quantum 4
    policy.add_service(c, 1.5)
    assert (c.level, c.quantum_used) == (3, 1.5)
    policy.add_service(c, 2.5)  # 12 s: outgrew every size seen, ranked by attained (PLAS)
    assert c.level == CONFIG.queue_of(12.0) == 4
    assert policy.demotions == 2  # every move is counted, up or down


def test_a_used_quantum_that_keeps_the_rank_s_queue_does_not_move_the_call() -> None:
    policy = Gittins(CONFIG)
    c = started(policy, sizes=())  # nothing learned: rank = attained service
    policy.add_service(c, 0.5)
    assert c.level == 0
    policy.add_service(c, 0.5)  # 1 s: Q2
    assert c.level == 1 and policy.demotions == 1
    policy.add_service(c, 0.25)
    policy.add_service(c, 0.75)  # 2 s: Q3
    assert c.level == 2 and policy.demotions == 2


def test_a_fresh_program_of_a_long_class_waits_beta_times_its_rank_to_be_promoted() -> None:
    # Against its service alone (none yet: the first boundary, 1 s) it would be promoted
    # after 5 s; ranked at 10 s (queue [8, 16)) it waits 50 s.
    policy = Gittins(CONFIG)  # beta 5
    runner = started(policy, sizes=())  # holds the engine so that `fresh` waits
    fresh = CallState("f", "q", 0.0, ProgramSnapshot(0.0, 0.0, 0.0, ALIKE))
    policy.add(fresh, 0.0)
    assert fresh.level == 4 and runner.running
    list(policy.ranked(49.9))
    assert fresh.level == 4 and policy.promotions == 0
    list(policy.ranked(50.0))
    assert fresh.level == 0 and policy.promotions == 1


def test_a_program_that_waited_against_its_rank_is_promoted_when_it_arrives() -> None:
    policy = Gittins(CONFIG)
    waited = CallState("w", "p", 0.0, ProgramSnapshot(0.0, 0.0, 49.0, ALIKE))
    assert policy.static_priority(waited) == 4  # 49 s < 5 x rank 10
    waited.program = ProgramSnapshot(0.0, 0.0, 50.0, ALIKE)
    assert policy.static_priority(waited) == 0
