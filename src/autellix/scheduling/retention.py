"""KV retention: whether a finished call's blocks stay on the device until its program
comes back, and for how long. Pure: the engine's block manager applies the decision.

InferCept's rule in simple form. Holding the blocks costs memory-time: the blocks sit
idle until the program returns (or the hold ends). Dropping them costs the prefill that
recomputes them when it returns, and while that prefill runs the memory of the calls
batched with it sits idle too. Both are block-seconds:

    hold:  num_blocks x E[min(gap, ttl)]
    drop:  P(gap <= ttl) x recompute_seconds x (batch_blocks + num_blocks)

The time-to-live is chosen among the gaps seen (each stretched by a slack, and capped)
as the one whose saving is largest (Continuum picks a TTL from tool-duration statistics
in the same spirit); the blocks are held when that saving is positive. With no gap
known and no hint from the client the answer is drop: the blocks stay in the prefix
cache, in LRU order, as without retention.

Swap to host is not weighed here: copying a block back costs far less than recomputing it
on any device it serves, so with `host` the engine copies a pin that must give way to the
host swap pool if there is room, and while memory is short (a call waits for blocks) it
writes a finished call's blocks there at once instead of pinning them on the device
(engine/host_copies.py).

What is weighed is only the head of the call's cached blocks that the program's next call
is expected to begin with (`HeadReuse`): a chat's or a ReAct loop's next prompt extends
the whole context, a tree search's next call (another branch, another stage's
instructions) shares a shorter head of it, or none.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from autellix.flags import check_fields
from autellix.programs import KindSamples


@dataclass
class RetentionConfig:
    enabled: bool = field(
        default=True,
        metadata={
            "flag": "--kv-retention",
            "help": "keep a live program's KV after its call while it is likely to return"
            " (pinned for a time-to-live learned from its gaps between calls)",
        },
    )
    host: bool = field(
        default=True,
        metadata={
            "flag": "--kv-retention-host",
            "help": "copy a pin that must give way to host memory (at most half the swap"
            " pool) for its program's next call to copy back, instead of dropping it, and"
            " while calls wait for memory write held blocks there instead of pinning them",
        },
    )
    max_ttl: float = field(
        default=30.0,
        metadata={"flag": "--kv-retention-max-ttl", "help": "longest pin, in seconds", "min": 0},
    )
    ttl_slack: float = field(
        default=1.25, metadata={"flag": None, "min": 1}
    )  # a TTL is a seen gap times this, plus the margin: a program is rarely exactly on time
    ttl_margin: float = field(default=0.05, metadata={"flag": None, "min": 0})  # seconds

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ReturnOutlook:
    """What is known of when a program comes back after a call."""

    gaps: tuple[float, ...] = ()  # seconds from a completion to its next call's arrival
    hint: float | None = None  # the client's own expectation, in seconds


@dataclass(frozen=True)
class RetentionCost:
    """What holding and dropping a finished call's blocks would cost."""

    num_blocks: int  # blocks that would be held
    num_tokens: int  # tokens they hold: recomputed if dropped
    seconds_per_token: float  # prefill time per token on this engine
    batch_blocks: int  # blocks held by running calls (idle while a recompute runs)


@dataclass(frozen=True)
class Retention:
    hold: bool
    ttl: float = 0.0  # seconds to hold
    expected_return: float = math.inf  # seconds until the program is likely back


DROP = Retention(hold=False)


def decide(outlook: ReturnOutlook, cost: RetentionCost, config: RetentionConfig) -> Retention:
    """Hold the blocks for a TTL, or drop them (leave them to LRU)."""
    gaps = (outlook.hint,) if outlook.hint is not None else outlook.gaps
    if not gaps or cost.num_blocks == 0:
        return DROP
    drop_cost = cost.num_tokens * cost.seconds_per_token * (cost.batch_blocks + cost.num_blocks)
    ordered = sorted(gaps)
    summed = list(itertools.accumulate(ordered))  # summed[k - 1]: the k shortest gaps
    n = len(ordered)
    best, best_saving = DROP, 0.0
    for ttl in sorted({ttl_for(g, config) for g in ordered}):
        back = bisect.bisect_right(ordered, ttl)  # the gaps it outlasts
        if not back:
            continue
        held = (summed[back - 1] + ttl * (n - back)) / n  # E[min(gap, ttl)]
        saving = back / n * drop_cost - cost.num_blocks * held
        if saving > best_saving:
            best = Retention(True, ttl, summed[back - 1] / back)
            best_saving = saving
    return best


def ttl_for(gap: float, config: RetentionConfig) -> float:
    return min(config.max_ttl, max(0.0, gap) * config.ttl_slack + config.ttl_margin)


class HeadReuse:
    """How much of what a program's call leaves cached its next call's prompt begins with,
    as a fraction of those blocks: the program's last few, else its class's, else
    everyone's, else 1 (all of it, until something is known). Blocks are named by their
    chained hashes, so the next prompt begins with the first k of them exactly when it has
    the k-th."""

    def __init__(self, keep: int = 8, keep_of_class: int = 64, max_kinds: int = 64) -> None:
        self.keep = keep
        self._left: dict[str, tuple[str | None, frozenset[int]]] = {}
        self._own: dict[str, deque[float]] = {}
        self._of_class = KindSamples(keep_of_class, max_kinds)

    def left(self, program_id: str, kind: str | None, hashes: Sequence[int]) -> None:
        """A call of the program finished, its cached blocks named by `hashes` (in order)."""
        if hashes:
            self._left[program_id] = (kind, frozenset(hashes))

    def arrived(self, program_id: str, prompt_hashes: Iterable[int]) -> None:
        """The program's next call arrived: count the leading blocks of its prompt (lazily,
        to the first one not left) among those its last call left."""
        left = self._left.pop(program_id, None)
        if left is None:
            return
        kind, hashes = left
        shared = sum(1 for _ in itertools.takewhile(hashes.__contains__, prompt_hashes))
        fraction = shared / len(hashes)
        self._own.setdefault(program_id, deque(maxlen=self.keep)).append(fraction)
        self._of_class.observe(kind, fraction)

    def head(self, program_id: str, kind: str | None, num_blocks: int) -> int:
        """How many leading blocks of `num_blocks` the program's next call is expected to
        use: the mean fraction seen, rounded up."""
        seen = self._own.get(program_id) or self._of_class.of(kind)
        if not seen:
            return num_blocks
        return math.ceil(num_blocks * sum(seen) / len(seen) - 1e-9)

    def forget(self, program_id: str) -> None:
        """The program ended."""
        self._left.pop(program_id, None)
        self._own.pop(program_id, None)
