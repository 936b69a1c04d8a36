from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from autellix.balancing import (
    CacheAware,
    LeastUsed,
    Locality,
    PrefixIndex,
    RoundRobin,
    Route,
    make_balancer,
)
from autellix.programs import Program


@dataclass
class FakeEngine:
    engine_id: int
    active_calls: int = 0
    cache: PrefixIndex = field(default_factory=lambda: PrefixIndex(block_size=4))

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        return self.cache.match(tokens)


def engines(*loads: int) -> list[FakeEngine]:
    return [FakeEngine(i, load) for i, load in enumerate(loads)]


def route(n_tokens: int, program: Program | None = None) -> Route:
    return Route(list(range(n_tokens)), program)


def test_round_robin_cycles() -> None:
    balancer, pool = RoundRobin(), engines(5, 0, 9)
    assert [balancer.pick(route(1), pool) for _ in range(4)] == [0, 1, 2, 0]


def test_least_used_breaks_ties_by_id() -> None:
    assert LeastUsed().pick(route(1), engines(3, 1, 1)) == 1


def test_no_engine_is_a_clear_error() -> None:
    for balancer in (RoundRobin(), LeastUsed(), Locality(), CacheAware()):
        with pytest.raises(RuntimeError, match="no engine replica"):
            balancer.pick(route(10), [])


def test_locality_short_prompts_spread_long_prompts_stay_pinned() -> None:
    balancer = Locality(long_prompt_tokens=100)
    program = Program("p", started=0.0)
    pool = engines(2, 0, 1)
    assert balancer.pick(route(100, program), pool) == 1  # at the threshold: short
    assert program.pinned_engine is None
    assert balancer.pick(route(101, program), pool) == 1  # first long call pins
    assert program.pinned_engine == 1
    pool[1].active_calls = 50
    assert balancer.pick(route(5000, program), pool) == 1  # stays, however loaded
    assert balancer.pick(route(10, program), pool) == 2  # short calls still spread


def test_locality_repins_when_the_pinned_engine_is_gone() -> None:
    balancer = Locality(long_prompt_tokens=10)
    program = Program("p", started=0.0, pinned_engine=7)
    assert balancer.pick(route(50, program), engines(4, 3)) == 1
    assert program.pinned_engine == 1


def test_locality_default_threshold_is_2048() -> None:
    assert Locality().long_prompt_tokens == 2048


def test_cache_aware_prefers_the_best_prefix_match() -> None:
    pool = engines(0, 5, 0)
    pool[1].cache.insert(list(range(40)))
    assert CacheAware().pick(route(100), pool) == 1  # 40/100 >= 0.3
    assert CacheAware().pick(route(200), pool) == 0  # 40/200 < 0.3: least used


def test_cache_aware_falls_back_to_least_used_when_imbalanced() -> None:
    pool = engines(200, 10)
    pool[0].cache.insert(list(range(100)))
    assert CacheAware().pick(route(100), pool) == 1  # 190 > 64 and 200 > 1.5 * 10
    pool[0].active_calls = 70  # 60 apart: balanced enough
    assert CacheAware().pick(route(100), pool) == 0


def test_prefix_index_matches_whole_leading_blocks() -> None:
    index = PrefixIndex(block_size=4)
    index.insert([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert index.match([1, 2, 3, 4, 5, 6, 7, 8]) == 8
    assert index.match([1, 2, 3, 4, 5, 6, 7, 0]) == 4
    assert index.match([0, 2, 3, 4, 5, 6, 7, 8]) == 0  # chained: no match after a miss
    assert index.match([1, 2, 3]) == 0


def test_prefix_index_keeps_the_most_recently_routed_blocks() -> None:
    index = PrefixIndex(block_size=2, max_blocks=4)
    index.insert([1, 2, 3, 4])  # 2 blocks
    index.insert([5, 6, 7, 8])
    index.insert([1, 2, 3, 4])  # routed again: the most recent
    index.insert([9, 9])  # one over: the oldest goes, [5, 6]
    assert len(index.blocks) == 4
    assert index.match([1, 2, 3, 4]) == 4 and index.match([9, 9]) == 2
    assert index.match([5, 6, 7, 8]) == 0


def test_make_balancer() -> None:
    assert isinstance(make_balancer("locality"), Locality)
    with pytest.raises(ValueError, match="unknown balancer 'random'"):
        make_balancer("random")
