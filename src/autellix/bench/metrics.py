"""The paper's metrics over program records, and throughput at equal latency."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from autellix.bench.runner import ProgramRecord


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class Summary:
    endpoint: str
    rate: float
    programs: int
    completed: int
    failed: int
    latency_mean: float
    latency_p95: float
    latency_p99: float
    token_latency_mean: float
    token_latency_p95: float
    token_latency_p99: float
    ttft_mean: float  # first token of each call: its waiting plus prefill
    decode_tokens: int

    @classmethod
    def of(cls, endpoint: str, rate: float, records: list[ProgramRecord]) -> Summary:
        done = [r for r in records if r.error is None and r.latency is not None]
        lat = [r.latency for r in done]  # type: ignore[misc]
        tok = [r.token_latency for r in done if r.token_latency is not None]
        ttft = [c.first_token - c.start for r in done for c in r.calls if c.first_token]
        mean = lambda xs: statistics.fmean(xs) if xs else math.nan  # noqa: E731
        return cls(
            endpoint,
            rate,
            len(records),
            len(done),
            len(records) - len(done),
            mean(lat),
            percentile(lat, 95),
            percentile(lat, 99),
            mean(tok),
            percentile(tok, 95),
            percentile(tok, 99),
            mean(ttft),
            sum(r.decode_tokens for r in done),
        )


def throughput_at_latency(summaries: list[Summary], bound: float) -> float:
    """The highest rate whose mean program token latency stays under `bound` (0 if none),
    counting only rates at which every program completed."""
    ok = [s.rate for s in summaries if s.failed == 0 and s.token_latency_mean <= bound]
    return max(ok, default=0.0)


def equal_latency_table(
    by_endpoint: dict[str, list[Summary]], baseline: str, bound: float | None = None
) -> tuple[float, dict[str, tuple[float, float]]]:
    """(bound, {endpoint: (throughput, ratio to the baseline)}). The default bound is
    twice the baseline's token latency at its lowest rate: "the same latency" as a
    loaded but healthy baseline."""
    if bound is None:
        base = min(by_endpoint[baseline], key=lambda s: s.rate)
        bound = 2 * base.token_latency_mean
    out = {}
    base_tp = throughput_at_latency(by_endpoint[baseline], bound)
    for name, summaries in by_endpoint.items():
        tp = throughput_at_latency(summaries, bound)
        out[name] = (tp, tp / base_tp if base_tp else math.inf)
    return bound, out
