"""Throughput at equal latency by search: more arrival rates are measured until the rate
at which the mean program token latency crosses the bound is bracketed, then narrowed
by bisection, so the crossing is read between two close measured rates, not guessed
beyond the last one."""

from __future__ import annotations

import math
from collections.abc import Callable

from autellix.bench.metrics import Summary


def over(summary: Summary, bound: float) -> bool:
    return summary.failed > 0 or not summary.token_latency_mean <= bound


def search_rate(
    measure: Callable[[float], Summary],
    points: list[Summary],
    bound: float,
    steps: int = 3,
    max_doublings: int = 4,
) -> list[Summary]:
    """Measure rates beyond `points` until the bound is crossed between two of them, then
    `steps` bisections (geometric) of the first crossing; returns the new points."""
    new: list[Summary] = []

    def ordered() -> list[Summary]:
        return sorted([*points, *new], key=lambda s: s.rate)

    for _ in range(max_doublings):  # the highest rate is still under the bound: go up
        top = ordered()[-1]
        if any(over(s, bound) for s in ordered()):
            break
        new.append(measure(2 * top.rate))
    for _ in range(max_doublings):  # even the lowest rate is over: go down
        bottom = ordered()[0]
        if not over(bottom, bound):
            break
        new.append(measure(bottom.rate / 2))
    for _ in range(steps):
        pts = ordered()
        i = next((i for i, s in enumerate(pts) if over(s, bound)), 0)
        if i == 0:
            break
        new.append(measure(math.sqrt(pts[i - 1].rate * pts[i].rate)))
    return new
