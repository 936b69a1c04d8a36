"""An endpoint's engine counters, read from its /metrics (Autellix's or vLLM's) before and
after a bench run: the run's prefix-cache hit rate, overall and per program class, and
what preemption and KV retention did and cost over it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# (prompt tokens found in the cache, prompt tokens looked up): each engine's sample names
PREFIX = (
    ("autellix_prefix_hit_tokens", "autellix_prefix_queried_tokens"),
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
)
BY_KIND = ("autellix_prefix_hit_tokens_by_kind", "autellix_prefix_queried_tokens_by_kind")
# Autellix's counters whose change over a run the bench reports (server/metrics.py)
RUN_COUNTERS = (
    "preemptions",
    "evictions",
    "pins_made",
    "pins_hit",
    "pin_hit_blocks",
    "pins_evicted",
    "pins_expired",
    "pin_blocked_seconds",
    "retention_swap_out_bytes",
    "retention_swap_in_bytes",
)

VLLM_COUNTERS = {"preemptions": "vllm:num_preemptions_total"}  # the same, where vLLM has it

KINDS_SHOWN = 4  # classes whose hit rate a run reports apart


@dataclass
class EngineCounters:
    """Counters so far, summed over the endpoint's replicas or engines."""

    prefix: tuple[float, float] | None = None  # (hit, queried) prompt tokens
    by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> same
    totals: dict[str, float] = field(default_factory=dict)  # RUN_COUNTERS, where served


def read_counters(server_url: str) -> EngineCounters | None:
    """None where the server has no /metrics, or a /metrics with neither engine's prefix
    counters (a frontend over backends)."""
    try:
        text = httpx.get(f"{server_url}/metrics", timeout=10).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return None
    totals: dict[str, float] = {}
    kinds: dict[str, list[float]] = {}
    for family in families:
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            if sample.name in BY_KIND:
                kind = kinds.setdefault(sample.labels.get("kind", ""), [0.0, 0.0])
                kind[BY_KIND.index(sample.name)] += sample.value
    prefix = next(((totals[h], totals[q]) for h, q in PREFIX if h in totals and q in totals), None)
    if prefix is None:
        return None
    served = {
        name: totals[f"autellix_{name}"] for name in RUN_COUNTERS if f"autellix_{name}" in totals
    }
    served |= {name: totals[vllm] for name, vllm in VLLM_COUNTERS.items() if vllm in totals}
    return EngineCounters(prefix, {k: (h, q) for k, (h, q) in kinds.items()}, served)


def from_stats(stats: Sequence[Mapping[str, Any]]) -> EngineCounters:
    """The same counters from engines' own `stats()` (a simulation's replicas)."""
    by_kind: dict[str, tuple[float, float]] = {}
    for s in stats:
        for kind, (queried, hit) in s["prefix_by_kind"].items():
            h, q = by_kind.get(kind, (0.0, 0.0))
            by_kind[kind] = (h + hit, q + queried)
    prefix = (
        float(sum(s["prefix_hit_tokens"] for s in stats)),
        float(sum(s["prefix_queried_tokens"] for s in stats)),
    )
    return EngineCounters(
        prefix, by_kind, {n: float(sum(s[n] for s in stats)) for n in RUN_COUNTERS}
    )


def hit_rate(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """The share of prompt tokens served from the cache between two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


@dataclass
class RunCounters:
    """What an endpoint's engines counted over one run."""

    prefix_hit_rate: float | None = None
    hit_rate_by_kind: dict[str, float] = field(default_factory=dict)  # classes that looked up
    changes: dict[str, float] = field(default_factory=dict)  # RUN_COUNTERS' increase


def over_run(before: EngineCounters | None, after: EngineCounters | None) -> RunCounters:
    if before is None or after is None:
        return RunCounters()
    looked_up = []  # (queried, hit) tokens over the run, per class that looked up
    for kind, (hit, queried) in after.by_kind.items():
        hit_before, queried_before = before.by_kind.get(kind, (0.0, 0.0))
        if queried > queried_before:
            looked_up.append((queried - queried_before, hit - hit_before, kind))
    looked_up.sort(reverse=True)
    # the classes that looked up the most; the rest together (a class per system prompt
    # can mean one per program)
    by_kind = {kind: hit / queried for queried, hit, kind in looked_up[:KINDS_SHOWN]}
    rest = looked_up[KINDS_SHOWN:]
    if rest:
        by_kind[f"{len(rest)} others"] = sum(h for _, h, _ in rest) / sum(q for q, _, _ in rest)
    changes = {
        name: value - before.totals.get(name, 0.0)
        for name, value in after.totals.items()
        if name in before.totals
    }
    return RunCounters(hit_rate(before.prefix, after.prefix), by_kind, changes)
