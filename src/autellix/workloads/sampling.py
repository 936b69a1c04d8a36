"""Seeded randomness shared by the builders: arrivals, counts, record draws."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """``n`` arrival times (seconds) of a Poisson process of ``rate`` programs/s; an
    infinite rate puts every program at time 0."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(f"arrivals-{seed}")  # independent of the content's random choices
    t, times = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        times.append(t)
    return times


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: fine for the small means used here)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def draw(pool: Sequence[T], rng: random.Random) -> Iterator[T]:
    """Items of ``pool`` without replacement, reshuffled each time it runs out."""
    if not pool:
        raise ValueError("nothing to draw from")
    while True:
        yield from rng.sample(pool, len(pool))
