"""The KV retention policy on its own: hold a finished call's blocks for its program's
return, or drop them, by memory-time (InferCept's rule) with a TTL from the gaps seen."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.scheduling.retention import (
    HeadReuse,
    RetentionConfig,
    RetentionCost,
    ReturnOutlook,
    decide,
    ttl_for,
)

CONFIG = RetentionConfig(enabled=True, max_ttl=10.0, ttl_slack=1.25, ttl_margin=0.05)
# 20 blocks of 16 tokens; 1 ms a token: a recompute of 0.32 s while 200 blocks wait on it
COST = RetentionCost(num_blocks=20, num_tokens=320, seconds_per_token=1e-3, batch_blocks=200)
DROP_COST = 320 * 1e-3 * (200 + 20)  # 70.4 block-seconds


def test_with_nothing_known_of_the_program_the_blocks_are_left_to_lru() -> None:
    assert not decide(ReturnOutlook(), COST, CONFIG).hold


def test_a_program_back_soon_is_held_for_a_little_longer_than_its_gap() -> None:
    retention = decide(ReturnOutlook(gaps=(0.5, 0.5, 0.5)), COST, CONFIG)
    assert retention.hold
    assert retention.ttl == pytest.approx(0.5 * 1.25 + 0.05)
    assert retention.expected_return == pytest.approx(0.5)


def test_a_program_that_pauses_longer_than_holding_is_worth_is_dropped() -> None:
    # holding 20 blocks for 4 s (80 block-s) costs more than the recompute (70.4)
    assert not decide(ReturnOutlook(gaps=(4.0,)), COST, CONFIG).hold
    assert decide(ReturnOutlook(gaps=(3.0,)), COST, CONFIG).hold  # 60 < 70.4


def test_the_ttl_lets_a_rare_long_pause_lapse() -> None:
    # nine returns after 0.2 s, one after 9 s: waiting for the straggler costs more than
    # the one recompute it would save
    gaps = (0.2,) * 9 + (9.0,)
    retention = decide(ReturnOutlook(gaps=gaps), COST, CONFIG)
    assert retention.hold and retention.ttl == pytest.approx(ttl_for(0.2, CONFIG))
    assert retention.expected_return == pytest.approx(0.2)


def test_the_clients_hint_overrides_the_gaps_seen() -> None:
    slow = ReturnOutlook(gaps=(9.0,) * 5, hint=0.3)
    assert decide(slow, COST, CONFIG).ttl == pytest.approx(ttl_for(0.3, CONFIG))
    fast = ReturnOutlook(gaps=(0.1,) * 5, hint=9.0)
    assert not decide(fast, COST, CONFIG).hold


def test_a_gap_past_the_longest_ttl_is_never_held() -> None:
    assert not decide(ReturnOutlook(hint=20.0), COST, CONFIG).hold
    assert not decide(ReturnOutlook(hint=20.0), COST, RetentionConfig(max_ttl=0.0)).hold


def test_no_blocks_or_a_free_recompute_is_never_held() -> None:
    outlook = ReturnOutlook(gaps=(0.1,))
    assert not decide(outlook, RetentionCost(0, 0, 1e-3, 200), CONFIG).hold
    assert not decide(outlook, RetentionCost(20, 320, 0.0, 200), CONFIG).hold


def test_bad_settings_are_refused() -> None:
    for bad, refused in (
        ({"ttl_slack": 0.5}, r"ttl_slack must be at least 1, not 0.5"),
        ({"max_ttl": -1}, r"max_ttl \(--kv-retention-max-ttl\) must be at least 0, not -1"),
        ({"ttl_margin": -0.01}, r"ttl_margin must be at least 0, not -0.01"),
    ):
        with pytest.raises(ValueError, match=f"^{refused}$"):
            RetentionConfig(**bad)
    RetentionConfig(max_ttl=0.0, ttl_slack=1.0, ttl_margin=0.0)  # each bound is allowed


def test_a_hold_that_would_save_nothing_is_not_made() -> None:
    # a program back at once costs no memory-time, but with no prefill measured yet
    # (0 s a token) dropping its blocks costs nothing either
    free = RetentionCost(num_blocks=20, num_tokens=320, seconds_per_token=0.0, batch_blocks=200)
    assert not decide(ReturnOutlook(gaps=(0.0, 0.0)), free, CONFIG).hold


gaps_st = st.lists(st.floats(0, 60, allow_nan=False), min_size=1, max_size=12).map(tuple)
costs_st = st.builds(
    RetentionCost,
    num_blocks=st.integers(1, 500),
    num_tokens=st.integers(1, 8000),
    seconds_per_token=st.floats(1e-6, 1e-2),
    batch_blocks=st.integers(0, 5000),
)


@given(gaps_st, costs_st)
def test_a_hold_is_bounded_and_worth_its_memory_time(gaps, cost) -> None:
    retention = decide(ReturnOutlook(gaps=gaps), cost, CONFIG)
    if not retention.hold:
        return
    assert 0 < retention.ttl <= CONFIG.max_ttl
    back = [g for g in gaps if g <= retention.ttl]
    assert back and retention.expected_return <= retention.ttl
    held = sum(min(g, retention.ttl) for g in gaps) / len(gaps)
    saved = len(back) / len(gaps) * cost.num_tokens * cost.seconds_per_token
    assert saved * (cost.batch_blocks + cost.num_blocks) > cost.num_blocks * held


@given(gaps_st, costs_st, st.floats(1.0, 10.0))
def test_longer_pauses_never_turn_a_drop_into_a_hold(gaps, cost, stretch) -> None:
    if decide(ReturnOutlook(gaps=gaps), cost, CONFIG).hold:
        return
    longer = tuple(g * stretch for g in gaps)
    assert not decide(ReturnOutlook(gaps=longer), cost, CONFIG).hold


@given(gaps_st, costs_st, st.floats(1.0, 100.0))
def test_a_dearer_recompute_never_turns_a_hold_into_a_drop(gaps, cost, dearer) -> None:
    if not decide(ReturnOutlook(gaps=gaps), cost, CONFIG).hold:
        return
    pricier = RetentionCost(
        cost.num_blocks, cost.num_tokens, cost.seconds_per_token * dearer, cost.batch_blocks
    )
    assert decide(ReturnOutlook(gaps=gaps), pricier, CONFIG).hold


@given(st.floats(0, 60), costs_st)
def test_a_hint_is_held_exactly_when_its_memory_time_is_below_the_recompute(hint, cost) -> None:
    retention = decide(ReturnOutlook(hint=hint), cost, CONFIG)
    ttl = ttl_for(hint, CONFIG)
    drop = cost.num_tokens * cost.seconds_per_token * (cost.batch_blocks + cost.num_blocks)
    expected = hint <= ttl and cost.num_blocks * hint < drop
    assert retention.hold == expected
    if expected:
        assert retention.ttl == ttl and math.isclose(retention.expected_return, hint)


@given(gaps_st, costs_st)
def test_the_ttl_chosen_saves_the_most_of_every_ttl_the_gaps_suggest(gaps, cost) -> None:
    """Each candidate TTL's saving, computed directly: the one chosen is the best (a tie
    to within rounding may go either way), and a drop means none saves anything."""
    drop_cost = cost.num_tokens * cost.seconds_per_token * (cost.batch_blocks + cost.num_blocks)

    def saving(ttl: float) -> float:
        back = sum(1 for g in gaps if g <= ttl)
        held = sum(min(g, ttl) for g in gaps) / len(gaps)
        return back / len(gaps) * drop_cost - cost.num_blocks * held if back else 0.0

    best = max(saving(ttl_for(g, CONFIG)) for g in gaps)
    retention = decide(ReturnOutlook(gaps=gaps), cost, CONFIG)
    tolerance = 1e-9 * (drop_cost + cost.num_blocks * CONFIG.max_ttl)
    if not retention.hold:
        assert best <= tolerance
        return
    assert saving(retention.ttl) == pytest.approx(best, abs=tolerance)
    back = [g for g in gaps if g <= retention.ttl]
    assert retention.expected_return == pytest.approx(sum(back) / len(back))


def test_a_program_whose_next_prompts_extend_its_context_keeps_all_of_it() -> None:
    reuse = HeadReuse()
    reuse.left("chat", "chat", [1, 2, 3, 4])
    reuse.arrived("chat", iter([1, 2, 3, 4, 5, 6]))
    assert reuse.head("chat", "chat", 10) == 10


def test_a_program_whose_next_call_shares_a_head_keeps_that_fraction_rounded_up() -> None:
    reuse = HeadReuse()
    reuse.left("search", "lats", [1, 2, 3, 4])
    reuse.arrived("search", iter([1, 9, 3, 4]))  # the first block only: a prefix, chained
    assert reuse.head("search", "lats", 8) == 2
    assert reuse.head("search", "lats", 9) == 3
    reuse.left("search", "lats", [1, 2, 3, 4])
    reuse.arrived("search", iter([8]))  # nothing: another stage's instructions
    assert reuse.head("search", "lats", 8) == 1  # the mean of 1/4 and 0


def test_a_program_with_no_history_of_its_own_takes_its_class_then_everyones() -> None:
    reuse = HeadReuse()
    assert reuse.head("new", "lats", 8) == 8  # nothing known: all of it
    reuse.left("old", "lats", [1, 2])
    reuse.arrived("old", iter([7]))
    assert reuse.head("new", "lats", 8) == 0
    assert reuse.head("new", "chat", 8) == 0  # everyone's: one search that shared nothing
    reuse.left("talker", "chat", [1, 2])
    reuse.arrived("talker", iter([1, 2, 3]))
    assert reuse.head("new", "chat", 8) == 8
    assert reuse.head("new", None, 8) == 4  # everyone's: 0 and 1


def test_only_the_first_call_after_a_finish_is_counted_and_an_ended_program_is_forgotten() -> None:
    reuse = HeadReuse()
    reuse.left("p", None, [1, 2])
    reuse.arrived("p", iter([1, 2]))
    reuse.arrived("p", iter([5]))  # a parallel call of the same stage: nothing left since
    assert reuse.head("p", None, 4) == 4
    reuse.left("p", None, [1, 2])
    reuse.forget("p")
    reuse.arrived("p", iter([5]))
    assert reuse.head("p", None, 4) == 4  # everyone's still has the first return
    reuse.left("q", None, [1, 2])
    reuse.arrived("q", iter([9]))  # q shares nothing
    assert reuse.head("p", None, 4) == 2  # p's own history is gone: everyone's mean, 1/2


def test_a_programs_own_history_is_its_last_few_returns() -> None:
    reuse = HeadReuse(keep=2)
    for prompt in ([9], [1, 2], [1, 2]):  # shares nothing, then all, then all
        reuse.left("p", None, [1, 2])
        reuse.arrived("p", iter(prompt))
    assert reuse.head("p", None, 10) == 10  # the first return no longer counts


def test_the_prompt_is_read_only_to_its_first_block_not_left() -> None:
    reuse = HeadReuse()
    reuse.left("p", None, [1, 2])
    prompt = iter([1, 7, 2, 3])
    reuse.arrived("p", prompt)
    assert list(prompt) == [2, 3]  # hashes are computed lazily: the rest is never needed


@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 60)), min_size=1, max_size=20),
    st.integers(0, 500),
)
def test_the_head_is_the_mean_fraction_shared_rounded_up_and_never_past_the_blocks(
    returns, num_blocks
) -> None:
    reuse = HeadReuse(keep=len(returns))
    for num_left, shared in returns:
        left = list(range(num_left))
        reuse.left("p", None, left)
        reuse.arrived("p", iter([*left[:shared], -1]))
    mean = sum(min(s, n) / n for n, s in returns) / len(returns)
    head = reuse.head("p", None, num_blocks)
    assert 0 <= head <= num_blocks
    assert head == pytest.approx(math.ceil(num_blocks * mean), abs=1)
    assert head >= num_blocks * mean - 1e-6
