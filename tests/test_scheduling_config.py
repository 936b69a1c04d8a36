"""Scheduling settings: the default ladder of queues, what is rejected, and
`make_policy` handing the settings to the policy it makes."""

from __future__ import annotations

import math

import pytest

from autellix.scheduling import (
    ATLAS,
    FCFS,
    MLFQ,
    PLAS,
    POLICIES,
    SRPT,
    Gittins,
    SchedulingConfig,
    make_policy,
)
from autellix.scheduling.config import geometric_boundaries


def test_the_default_ladder_doubles_from_one_second_to_512() -> None:
    assert geometric_boundaries() == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
    assert geometric_boundaries(0.5, 3.0, 4) == (0.5, 1.5, 4.5)
    assert geometric_boundaries(num_queues=1) == ()


def test_default_quanta_are_the_queue_widths() -> None:
    config = SchedulingConfig(boundaries=(1, 3, 4))
    assert config.boundaries == (1.0, 3.0, 4.0)
    assert config.quanta[:3] == (1.0, 2.0, 1.0) and math.isinf(config.quanta[3])
    assert config.num_queues == 4
    assert all(isinstance(q, float) for q in config.quanta)


def test_queue_of_puts_a_boundary_in_the_queue_above_it() -> None:
    config = SchedulingConfig(boundaries=(1.0, 2.0))
    assert [config.queue_of(p) for p in (0.0, 0.5, 1.0, 1.5, 2.0, 1e12)] == [0, 0, 1, 1, 2, 2]


def test_the_starvation_floor_defaults_to_the_first_boundary() -> None:
    assert SchedulingConfig(boundaries=(0.25, 8.0)).min_starvation_service == 0.25
    assert SchedulingConfig(min_starvation_service=3.0).min_starvation_service == 3.0
    one_queue = SchedulingConfig(boundaries=())
    assert one_queue.num_queues == 1 and math.isinf(one_queue.quanta[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boundaries": (1.0, 1.0)}, "strictly increasing"),
        ({"boundaries": (-1.0, 1.0)}, "positive"),
        ({"boundaries": (0.0,), "quanta": (1.0, 1.0)}, "boundaries must be positive"),
        ({"boundaries": (1.0,), "quanta": (1.0, 0.0)}, "quanta must be positive"),
        ({"boundaries": (1.0,), "quanta": (1.0, -2.0)}, "quanta must be positive"),
        ({"boundaries": (1.0,), "quanta": (1.0, 1.0, 1.0)}, r"need 2 quanta .* got 3"),
        ({"beta": -1.0}, r"^beta \(--beta\) must be more than 0, not -1.0$"),
        ({"batch_cut": True, "preempt": False}, "leaves running calls out: it needs preempt"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulingConfig(**kwargs)


def test_small_positive_settings_are_accepted() -> None:
    config = SchedulingConfig(boundaries=(0.001, 0.002), quanta=(0.5, 0.5, 0.5), beta=0.5)
    assert config.beta == 0.5 and config.quanta == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("policy_cls", [MLFQ, PLAS, ATLAS, Gittins])
def test_make_policy_gives_multi_level_policies_the_settings(policy_cls) -> None:
    config = SchedulingConfig(boundaries=(3.0,), beta=7.0)
    policy = make_policy(policy_cls.name, config)
    assert type(policy) is policy_cls and policy.config is config
    assert len(policy.levels) == 2
    default = make_policy(policy_cls.name)
    assert default.config.boundaries == geometric_boundaries()


def test_make_policy_fcfs_srpt_and_unknown_names() -> None:
    assert type(make_policy("fcfs", SchedulingConfig(boundaries=(3.0,)))) is FCFS
    fcfs = make_policy("fcfs", SchedulingConfig(boundaries=(3.0,)))
    assert fcfs.config.num_queues == 2 and fcfs.config.quanta == (math.inf, math.inf)
    assert type(make_policy("srpt")) is SRPT
    assert sorted(POLICIES) == ["atlas", "fcfs", "gittins", "mlfq", "plas", "srpt"]
    with pytest.raises(ValueError, match=r"unknown policy 'lifo'; choose from fcfs, mlfq, "):
        make_policy("lifo")
