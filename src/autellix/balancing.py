"""Balancers: which engine replica serves a call.

Pure: engines are seen through `EngineView` (their load and, for the cache-aware
balancer, how much of a prompt they hold cached); programs through the process
table's `Program`, where the locality balancer keeps its pins.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autellix.programs import Program


class EngineView(Protocol):
    engine_id: int

    @property
    def active_calls(self) -> int: ...

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` this engine holds in its prefix cache."""
        ...


@dataclass
class Route:
    """What a balancer knows of a call."""

    prompt_tokens: Sequence[int]
    program: Program | None = None


class Balancer(ABC):
    name: str = ""
    reads_caches: bool = False  # whether `pick` asks engines for their cached prefixes

    @abstractmethod
    def pick(self, route: Route, engines: Sequence[EngineView]) -> int:
        """The id of the engine to serve the call. `engines` are the live ones."""


def least_used(engines: Sequence[EngineView]) -> EngineView:
    if not engines:
        raise RuntimeError("no engine replica is available")
    return min(engines, key=lambda e: (e.active_calls, e.engine_id))


class RoundRobin(Balancer):
    name = "round-robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, route: Route, engines: Sequence[EngineView]) -> int:
        if not engines:
            raise RuntimeError("no engine replica is available")
        return engines[next(self._turn) % len(engines)].engine_id


class LeastUsed(Balancer):
    name = "least-used"

    def pick(self, route: Route, engines: Sequence[EngineView]) -> int:
        return least_used(engines).engine_id


class Locality(Balancer):
    """Autellix: short prompts go to the least-used engine; long ones to the engine the
    program is pinned to, where its history (and so its prefix-cache hits) lives."""

    name = "locality"

    def __init__(self, long_prompt_tokens: int = 2048) -> None:
        self.long_prompt_tokens = long_prompt_tokens

    def pick(self, route: Route, engines: Sequence[EngineView]) -> int:
        program = route.program
        if program is None or len(route.prompt_tokens) <= self.long_prompt_tokens:
            return least_used(engines).engine_id
        if program.pinned_engine not in {e.engine_id for e in engines}:
            program.pinned_engine = least_used(engines).engine_id
        return program.pinned_engine


class CacheAware(Balancer):
    """SGLang-router style: the engine with the longest cached prefix when it covers at
    least `match_threshold` of the prompt, unless the engines are imbalanced
    (max - min load > `balance_abs` and max > `balance_rel` x min): then least-used."""

    name = "cache-aware"
    reads_caches = True

    def __init__(
        self, match_threshold: float = 0.3, balance_abs: int = 64, balance_rel: float = 1.5
    ) -> None:
        self.match_threshold = match_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel

    def pick(self, route: Route, engines: Sequence[EngineView]) -> int:
        fallback = least_used(engines)
        loads = [e.active_calls for e in engines]
        lo, hi = min(loads), max(loads)
        if hi - lo > self.balance_abs and hi > self.balance_rel * lo:
            return fallback.engine_id
        tokens = route.prompt_tokens
        if not tokens:
            return fallback.engine_id
        best = max(engines, key=lambda e: (e.cached_prefix(tokens), -e.active_calls))
        if best.cached_prefix(tokens) / len(tokens) >= self.match_threshold:
            return best.engine_id
        return fallback.engine_id


BALANCERS: dict[str, type[Balancer]] = {
    b.name: b for b in (RoundRobin, LeastUsed, Locality, CacheAware)
}


def make_balancer(name: str, long_prompt_tokens: int = 2048) -> Balancer:
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; choose from {', '.join(BALANCERS)}")
    if name == Locality.name:
        return Locality(long_prompt_tokens)
    return BALANCERS[name]()


@dataclass
class PrefixIndex:
    """Which prompt prefixes an engine holds, by chained hashes of fixed-size token
    blocks (as a paged prefix cache keys them). For engines that report no cache of
    their own, a balancer can record the prompts it routed here. It keeps the
    `max_blocks` most recently routed blocks, as the engine's cache keeps the most
    recently used: an index of every prompt ever routed grows without bound."""

    block_size: int = 16
    max_blocks: int = 1 << 18
    blocks: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def _hashes(self, tokens: Sequence[int]) -> list[int]:
        hashes, h = [], 0
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            h = hash((h, tuple(tokens[start : start + self.block_size])))
            hashes.append(h)
        return hashes

    def insert(self, tokens: Sequence[int]) -> None:
        blocks = self.blocks
        for h in self._hashes(tokens):
            blocks[h] = None
            blocks.move_to_end(h)
        while len(blocks) > self.max_blocks:
            blocks.popitem(last=False)

    def match(self, tokens: Sequence[int]) -> int:
        matched = 0
        for h in self._hashes(tokens):
            if h not in self.blocks:
                break
            matched += self.block_size
        return matched
