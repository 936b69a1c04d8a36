"""The batch cut: which calls a round leaves out of the batch although they would fit.

On an engine whose step time grows with the batch (each call in it adds its own work to
every step: its token, its attention over its context), a call taken into the batch
slows every call already in it. Taking call j lengthens a step of time T by its cost
c_j: the calls ahead of it each lose c_j per step, and j gains a step of progress. With
each call weighed by its urgency u (how likely it is to finish per second of service),
j is taken when

    u_j * T >= U_ahead * c_j

where T is the step time of the batch so far (its fixed cost included) and U_ahead the
summed urgency of the calls in it that are more urgent than j. Calls of equal urgency
never cut each other, so with one program or programs alike nothing is cut.

The urgency of a call whose program has attained `a` seconds of service is
1 / (a + first boundary): the Gittins index of a Pareto size law with that minimum, up
to a constant that cancels. Its attained service is capped at the upper boundary of the
call's queue, so anti-starvation, which promotes a call to the first queue, restores its
urgency; and calls in the first queue are never cut.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Generic

from autellix.scheduling.policy import C


class BatchCut(Generic[C]):
    """One round's cut, called as `cut(call, batch)` by `select_batch` before it asks
    whether a call fits; `batch` is the round's batch so far (it only grows)."""

    def __init__(
        self,
        urgency: Callable[[C], float],
        fixed: float,
        cost: Callable[[C], float],
        exempt: Callable[[C], bool],
    ) -> None:
        self.urgency = urgency
        self.cost = cost
        self.exempt = exempt
        self.step = fixed  # the batch's step time so far
        self.urgencies: list[float] = []  # of the batch so far, ascending
        self.total = 0.0
        self.seen = 0

    def __call__(self, call: C, batch: Sequence[C]) -> bool:
        for taken in batch[self.seen :]:
            u = self.urgency(taken)
            bisect.insort(self.urgencies, u)
            self.total += u
            self.step += self.cost(taken)
        self.seen = len(batch)
        if self.exempt(call):
            return True
        u = self.urgency(call)
        ahead = self.total - sum(self.urgencies[: bisect.bisect_right(self.urgencies, u)])
        return u * self.step >= ahead * self.cost(call)


def outlives_fresh(sizes: Sequence[float], attained: float) -> bool:
    """Whether, by the empirical law of `sizes` (sorted ascending), a program that has had
    `attained` seconds of service expects more remaining service than a fresh one:
    E[S - a | S > a] > E[S]. Without sizes, or past every size seen, it is not known."""
    first = bisect.bisect_right(sizes, attained)
    if first == len(sizes):
        return False
    beyond = sizes[first:]
    return sum(beyond) / len(beyond) - attained > sum(sizes) / len(sizes)


def attained_urgency(attained: float, level: int, boundaries: Sequence[float]) -> float:
    """1 / (attained + first boundary), the attained service capped at the top of the
    call's queue (see the module's docstring)."""
    if level < len(boundaries):
        attained = min(attained, boundaries[level])
    return 1.0 / (attained + (boundaries[0] if boundaries else 1.0))
