"""Fair shares of the batch between tenants (autellix.scheduling.shares): a tenant that
floods an engine gets its share of the slots, not the batch."""

from __future__ import annotations

import random

import pytest

from autellix.programs import ProgramSnapshot, program_key
from autellix.scheduling import (
    FCFS,
    PLAS,
    CallState,
    SchedulingConfig,
    make_policy,
    select_batch,
)
from autellix.scheduling.shares import by_share

CONFIG = SchedulingConfig(boundaries=(1.0, 2.0, 4.0), beta=100.0, preempt=True)


def call(
    tenant: str, name: str, arrival: float, service: float = 0.0, weight: float = 1.0
) -> CallState:
    snapshot = ProgramSnapshot(service, service, 0.0, tenant_weight=weight)
    return CallState(f"{tenant}:{name}", program_key(tenant, name), arrival, snapshot)


def tenants_of(calls) -> list[str]:
    return [c.tenant for c in calls]


def flood_then_two(policy, flood: int = 20, max_running: int = 4) -> list[CallState]:
    """Alice's fresh programs flood the engine; then two calls of Bob's programs, which
    have had some service (so program-level LAS alone ranks them behind the flood)."""
    for i in range(flood):
        policy.add(call("alice", f"a{i}", arrival=i * 0.01), i * 0.01)
    select_batch(policy, 0.5, max_running)
    for i in range(2):
        policy.add(call("bob", f"b{i}", arrival=1.0, service=1.5), 1.0)
    batch, _ = select_batch(policy, 1.0, max_running)
    return batch


def test_a_tenant_beside_a_flood_gets_its_share_of_the_batch() -> None:
    batch = flood_then_two(PLAS(CONFIG))
    assert tenants_of(batch) == ["alice", "bob", "alice", "bob"]


def test_without_shares_the_flood_takes_the_batch() -> None:
    policy = make_policy("plas", SchedulingConfig(boundaries=(1.0, 2.0, 4.0), tenant_shares=False))
    assert tenants_of(flood_then_two(policy)) == ["alice"] * 4


def test_a_tenant_with_few_calls_leaves_the_rest_of_its_share() -> None:
    policy = PLAS(CONFIG)
    for i in range(10):
        policy.add(call("alice", f"a{i}", 0.0), 0.0)
    policy.add(call("bob", "b", 0.0, service=3.0), 0.0)
    batch, _ = select_batch(policy, 0.0, max_running=6)
    assert sorted(tenants_of(batch)) == ["alice"] * 5 + ["bob"]


def test_weights_divide_the_batch() -> None:
    policy = PLAS(CONFIG)
    for i in range(10):
        policy.add(call("alice", f"a{i}", 0.0, weight=3.0), 0.0)
        policy.add(call("bob", f"b{i}", 0.0), 0.0)
    batch, _ = select_batch(policy, 0.0, max_running=8)
    assert tenants_of(batch).count("alice") == 6 and tenants_of(batch).count("bob") == 2


def test_inside_a_tenant_the_policys_order_stands() -> None:
    policy = PLAS(CONFIG)
    policy.add(call("alice", "heavy", 0.0, service=3.0), 0.0)  # Q3
    policy.add(call("alice", "light", 1.0), 1.0)  # Q1, later
    policy.add(call("bob", "b", 0.0), 0.0)
    batch, _ = select_batch(policy, 1.0, max_running=2)
    assert [c.call_id for c in batch] == ["bob:b", "alice:light"]  # ties: the policy's order


def test_a_non_preemptive_policy_keeps_its_running_calls() -> None:
    policy = FCFS(CONFIG)
    for i in range(6):
        policy.add(call("alice", f"a{i}", i * 0.01), i * 0.01)
    select_batch(policy, 0.1, max_running=3)  # a0..a2 run
    policy.add(call("bob", "b", 1.0), 1.0)
    batch, preempted = select_batch(policy, 1.0, max_running=4)
    assert preempted == []
    # the free slot goes to bob: alice already holds more than her share
    assert [c.call_id for c in batch] == ["alice:a0", "alice:a1", "alice:a2", "bob:b"]


@pytest.mark.parametrize("seed", range(20))
def test_every_call_once_and_one_tenant_unchanged(seed: int) -> None:
    rng = random.Random(seed)
    calls = [
        call(rng.choice("xyz"), f"p{i}", rng.random(), rng.random() * 8, rng.choice((1, 2, 0.5)))
        for i in range(rng.randrange(1, 40))
    ]
    counts: dict[str, int] = {}
    weights: dict[str, float] = {}
    for c in calls:
        counts[c.tenant] = counts.get(c.tenant, 0) + 1
        weights[c.tenant] = c.program.tenant_weight
    shared = list(by_share(iter(calls), counts, weights))
    assert sorted(c.call_id for c in shared) == sorted(c.call_id for c in calls)
    for tenant in counts:  # each tenant's own calls keep their order
        assert [c for c in shared if c.tenant == tenant] == [c for c in calls if c.tenant == tenant]
    alone = [c for c in calls if c.tenant == "x"]
    assert list(by_share(iter(alone), {"x": len(alone)}, {"x": 3.0})) == alone
    # the whole order is weighted fair queuing's: the k-th call of a tenant of weight w at
    # place k / w, ties in the policy's order, however lazily it was dealt
    seen: dict[str, int] = {}
    places = []
    for i, c in enumerate(calls):
        seen[c.tenant] = seen.get(c.tenant, 0) + 1
        places.append((seen[c.tenant] / weights[c.tenant], i, c))
    assert shared == [c for _, _, c in sorted(places, key=lambda p: p[:2])]
    # counts that overstate a tenant's calls still give every call, once
    more = {t: n + 1 for t, n in counts.items()}
    assert sorted(c.call_id for c in by_share(iter(calls), more, weights)) == sorted(
        c.call_id for c in calls
    )
