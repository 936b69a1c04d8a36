"""Fair shares of the batch between tenants.

Inside a tenant the policy's order stands (program-level LAS, its queues, anti-starvation).
Between tenants, slots are dealt as weighted fair queuing deals packets: the k-th call of a
tenant of weight w, in the policy's order, stands at place k / w, and the calls are served
by place (ties in the policy's order). Two tenants of weight 1 with calls waiting each get
every other slot of the batch, whatever their programs' attained service; a tenant with
fewer calls than its share leaves the rest to the others (max-min fair). With one tenant
the places rise with the policy's order, which is kept exactly.

Shares are counted in running slots, not in service: every call in a batch gets a step, so
equal slots are equal decode tokens per step. The places are recomputed each round from the
calls present, so a tenant that was idle banks no credit (unlike a tenant-level LAS, which
would starve a tenant for its past use).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping
from typing import TypeVar

from autellix.scheduling.call import CallState

C = TypeVar("C", bound=CallState)


def by_share(
    ranked: Iterator[C],
    calls: Mapping[str, int],
    weights: Mapping[str, float],
    running_first: bool = False,
) -> Iterator[C]:
    """`ranked` (every call once, the policy's order) re-dealt by the calls' places in their
    tenants' shares, lazily: a call is yielded once no call not yet read can come before it.

    `calls` counts each tenant's calls in `ranked`; `weights` gives each tenant's weight (1
    if absent). With `running_first` (a non-preemptive policy, whose running calls come
    first and keep their slots) the running calls pass through in place; they still use
    their tenant's share."""
    left = dict(calls)  # calls of each tenant not read yet
    place: dict[str, float] = dict.fromkeys(calls, 0.0)  # the place of its last call read
    ready: list[tuple[float, int, C]] = []  # read and placed, not yet yielded
    for i, call in enumerate(ranked):
        tenant = call.tenant
        left[tenant] = left.get(tenant, 1) - 1
        place[tenant] = place.get(tenant, 0.0) + 1.0 / weights.get(tenant, 1.0)
        if running_first and call.running:
            yield call
            continue
        heapq.heappush(ready, (place[tenant], i, call))
        first_unread = min(
            (place[t] + 1.0 / weights.get(t, 1.0) for t, n in left.items() if n > 0),
            default=math.inf,
        )
        while ready and ready[0][0] <= first_unread:
            yield heapq.heappop(ready)[2]
    while ready:
        yield heapq.heappop(ready)[2]
