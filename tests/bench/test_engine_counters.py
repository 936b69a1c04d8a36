"""What the bench reports of an endpoint's engines per run: counters read before and
after (the prefix-cache hit rate, per program class, preemption and retention)."""

import pytest

from autellix.bench.engine_counters import (
    RUN_COUNTERS,
    EngineCounters,
    from_stats,
    hit_rate,
    over_run,
    read_counters,
)
from autellix.bench.metrics import Summary
from autellix.bench.report import table


def test_hit_rate_is_the_share_of_the_runs_lookups_that_hit() -> None:
    assert hit_rate((10.0, 100.0), (40.0, 160.0)) == pytest.approx(0.5)
    assert hit_rate(None, (40.0, 160.0)) is None  # no counters: unknown, not 0
    assert hit_rate((10.0, 100.0), (10.0, 100.0)) is None  # nothing looked up
    assert hit_rate((10.0, 100.0), None) is None


def test_a_server_without_metrics_has_no_counters() -> None:
    assert read_counters("http://127.0.0.1:9") is None  # nothing listens on port 9


def test_a_run_counts_what_changed_over_it() -> None:
    before = EngineCounters(
        (10.0, 100.0),
        {"react": (10.0, 80.0), "chat": (0.0, 20.0)},
        {"pins_made": 3.0, "pin_blocked_seconds": 1.5},
    )
    after = EngineCounters(
        (70.0, 200.0),
        {"react": (50.0, 130.0), "chat": (0.0, 20.0), "new": (20.0, 50.0)},
        {"pins_made": 7.0, "pin_blocked_seconds": 4.0, "appeared": 1.0},
    )
    run = over_run(before, after)
    assert run.prefix_hit_rate == pytest.approx(0.6)
    # a class that looked nothing up in the run has no rate; one first seen now counts all
    assert run.hit_rate_by_kind == {"react": pytest.approx(0.8), "new": pytest.approx(0.4)}
    assert run.changes == {"pins_made": 4.0, "pin_blocked_seconds": 2.5}
    # past the classes that looked up most, the others are one
    many = {f"k{i}": (float(i), 10.0 * (i + 1)) for i in range(7)}  # k6 looked up most
    run = over_run(EngineCounters((0.0, 0.0)), EngineCounters((21.0, 280.0), many))
    assert list(run.hit_rate_by_kind) == ["k6", "k5", "k4", "k3", "3 others"]
    assert run.hit_rate_by_kind["3 others"] == pytest.approx((0 + 1 + 2) / (10 + 20 + 30))
    assert over_run(None, after).prefix_hit_rate is None and over_run(before, None).changes == {}


def test_the_report_shows_the_counters_where_an_endpoint_has_them() -> None:
    def summary(name: str, **counted) -> Summary:
        return Summary(name, 1.0, 4, 4, 0, 2.0, 3.0, 3.0, 0.1, 0.2, 0.2, 0.5, 100, **counted)

    counted = {
        "preemptions": 5.0,
        "evictions": 2.0,
        "pins_made": 9.0,
        "pins_hit": 6.0,
        "pin_hit_blocks": 240.0,
        "pin_blocked_seconds": 3.25,
        "retention_swap_out_bytes": 3 * 2**20,
        "retention_swap_in_bytes": 2**20,
    }
    on = summary("on", hit_rate_by_kind={"react": 0.82, "": 0.5}, counters=counted)
    markdown = table("t", {"on": [on], "vllm": [summary("vllm")]}, "vllm")
    assert "| on | 1 | react 82%, no class 50% | 5 | 2 | 9 | 6 (240) | 3.2 | 3 / 1 |" in markdown
    assert "| vllm | 1 | n/a | n/a | n/a | n/a | n/a (n/a) | n/a | n/a / n/a |" in markdown
    assert "hit rate by program class" not in table("t", {"vllm": [summary("vllm")]}, "vllm")


def test_a_simulations_counters_are_its_replicas_summed() -> None:
    def stats(hit: int, queried: int, by_kind: dict, pins: int) -> dict:
        counted = dict.fromkeys(RUN_COUNTERS, 1.0) | {"pins_made": pins}
        return (
            {"prefix_hit_tokens": hit, "prefix_queried_tokens": queried}
            | counted
            | {
                "prefix_by_kind": by_kind  # kind -> (queried, hit), as the engine keeps them
            }
        )

    two = [stats(30, 100, {"a": (100, 30)}, 2), stats(10, 100, {"a": (40, 0), "b": (60, 10)}, 5)]
    run = over_run(from_stats([]), from_stats(two))
    assert run.prefix_hit_rate == pytest.approx(0.2)
    assert run.hit_rate_by_kind == {"a": pytest.approx(30 / 140), "b": pytest.approx(10 / 60)}
    assert run.changes["pins_made"] == 7 and run.changes["evictions"] == 2
