"""The bench's prefix-cache hit rate per run: counters read before and after."""

import pytest

from autellix.bench.prefix_cache import hit_rate, prefix_cache_tokens


def test_hit_rate_is_the_share_of_the_runs_lookups_that_hit() -> None:
    assert hit_rate((10.0, 100.0), (40.0, 160.0)) == pytest.approx(0.5)
    assert hit_rate(None, (40.0, 160.0)) is None  # no counters: unknown, not 0
    assert hit_rate((10.0, 100.0), (10.0, 100.0)) is None  # nothing looked up
    assert hit_rate((10.0, 100.0), None) is None


def test_a_server_without_metrics_has_no_counters() -> None:
    assert prefix_cache_tokens("http://127.0.0.1:9") is None  # nothing listens on port 9
