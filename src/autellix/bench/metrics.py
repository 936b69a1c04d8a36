"""The paper's metrics over program records, and throughput at equal latency."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autellix.bench.runner import ProgramRecord

if TYPE_CHECKING:
    from autellix.bench.engine_counters import RunCounters


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
    machine: str = ""  # where it was measured ("" for simulations and older results)
    # prompt tokens served from the endpoint's prefix cache over the run (None: unknown)
    prefix_hit_rate: float | None = None
    hit_rate_by_kind: dict[str, float] | None = None  # the same, per program class
    # what the engines' counters counted over the run (bench.engine_counters.RUN_COUNTERS)
    counters: dict[str, float] | None = None

    @classmethod
    def of(
        cls, endpoint: str, rate: float, records: list[ProgramRecord], machine: str = ""
    ) -> Summary:
        done = [r for r in records if r.error is None and r.latency is not None]
        lat = [r.latency for r in done if r.latency is not None]
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
            machine,
        )

    def add_counters(self, run: RunCounters) -> None:
        """What the endpoint's engines counted over the run (bench.engine_counters)."""
        self.prefix_hit_rate = run.prefix_hit_rate
        self.hit_rate_by_kind = run.hit_rate_by_kind or None
        self.counters = run.changes or None


def throughput_at_latency(summaries: list[Summary], bound: float) -> tuple[float, bool]:
    """(the arrival rate at which mean program token latency reaches `bound`, capped).

    Rates are walked upwards; where the latency first goes over the bound (or programs
    first fail), the crossing is interpolated linearly from the rate before. 0 if even
    the lowest rate is over; the highest rate and capped=True if none is, since the
    real crossing lies beyond what was measured."""
    points = sorted(summaries, key=lambda s: s.rate)
    previous: Summary | None = None
    for s in points:
        if s.failed or not s.token_latency_mean <= bound:
            if previous is None:
                return 0.0, False
            if s.failed or math.isnan(s.token_latency_mean):
                return previous.rate, False
            lo, hi = previous.token_latency_mean, s.token_latency_mean
            return previous.rate + (bound - lo) / (hi - lo) * (s.rate - previous.rate), False
        previous = s
    return (previous.rate if previous else 0.0), True


def equal_latency_table(
    by_endpoint: dict[str, list[Summary]], baseline: str, bound: float | None = None
) -> tuple[float, dict[str, tuple[float, float, bool]]]:
    """(bound, {endpoint: (throughput, ratio to the baseline, capped)}). The default
    bound is twice the baseline's token latency at its lowest rate: "the same latency"
    as a loaded but healthy baseline."""
    if bound is None:
        base = min(by_endpoint[baseline], key=lambda s: s.rate)
        bound = 2 * base.token_latency_mean
    out = {}
    base_tp, _ = throughput_at_latency(by_endpoint[baseline], bound)
    for name, summaries in by_endpoint.items():
        tp, capped = throughput_at_latency(summaries, bound)
        out[name] = (tp, tp / base_tp if base_tp else math.inf, capped)
    return bound, out
