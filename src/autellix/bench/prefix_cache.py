"""An endpoint's prefix-cache counters, read from its /metrics (Autellix's or vLLM's), so
that a bench run reports each endpoint's prefix-cache hit rate over the run."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

# (prompt tokens found in the cache, prompt tokens looked up): each engine's sample names
COUNTERS = (
    ("autellix_prefix_hit_tokens", "autellix_prefix_queried_tokens"),
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
)


def prefix_cache_tokens(server_url: str) -> tuple[float, float] | None:
    """(hit, queried) prompt tokens so far, summed over the server's replicas or engines;
    None where its /metrics has neither engine's counters (a frontend over backends, a
    server without /metrics)."""
    try:
        text = httpx.get(f"{server_url}/metrics", timeout=10).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return None
    totals: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    for hit, queried in COUNTERS:
        if hit in totals and queried in totals:
            return totals[hit], totals[queried]
    return None


def hit_rate(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """The share of prompt tokens served from the cache between two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])
