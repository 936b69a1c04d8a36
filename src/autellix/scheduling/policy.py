"""The policy interface: one engine's calls, in the order they should be served.

An engine (or the simulator, or the toy) drives a policy like this, once a round:

    policy.add(call, now)                 # a call arrives
    batch = select_batch(policy, now, max_running, fits)
    ...run a step...
    policy.add_service(call, seconds)     # for each call in the batch
    policy.remove(call, now)              # when a call finishes or is aborted

The policy keeps each call's waiting time (lazily: no per-round work for waiting
calls) and its place in the queues. It never calls back into the engine.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Generic, TypeVar

from autellix.scheduling.call import CallState
from autellix.scheduling.shares import by_share

C = TypeVar("C", bound=CallState)  # the owner's kind of call (the engine's carries its tokens)


class Policy(ABC, Generic[C]):
    name: str = ""
    preemptive: bool = True  # False: running calls keep their place ahead of waiting ones
    cuts_batch: bool = False  # whether a round may leave calls out by `urgency` (cut.py)

    def __init__(self) -> None:
        self.calls: dict[str, C] = {}
        self.running: dict[str, C] = {}
        self._seq = itertools.count()
        self.tenant_shares = True  # with calls of two tenants or more: see `order`
        self.tenants: Counter[str] = Counter()  # calls per tenant
        self.weights: dict[str, float] = {}  # each tenant's weight, as its last call said

    def __len__(self) -> int:
        return len(self.calls)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self.calls

    def add(self, call: C, now: float) -> None:
        if call.call_id in self.calls:
            raise ValueError(f"call {call.call_id!r} is already queued")
        call.seq = next(self._seq)
        call.running = False
        call.wait_since = now
        self.calls[call.call_id] = call
        self.tenants[call.tenant] += 1
        self.weights[call.tenant] = call.program.tenant_weight
        self._insert(call, now)

    def remove(self, call: C, now: float) -> None:
        """A call leaves the engine (finished or aborted); its waiting is closed."""
        if call.running:
            del self.running[call.call_id]
        else:
            self._close_wait(call, now)
        call.running = False
        call.wait_since = now  # it waits no more: `waited` is its total from here on
        del self.calls[call.call_id]
        self.tenants[call.tenant] -= 1
        if not self.tenants[call.tenant]:
            del self.tenants[call.tenant], self.weights[call.tenant]
        self._delete(call)

    def start_running(self, call: C, now: float) -> None:
        if call.running:
            return
        self._close_wait(call, now)
        call.running = True
        self.running[call.call_id] = call
        self._on_start(call)

    def stop_running(self, call: C, now: float) -> None:
        """The call was preempted: it waits again from `now`."""
        if not call.running:
            return
        call.running = False
        call.wait_since = now
        del self.running[call.call_id]
        self._on_stop(call, now)

    def add_service(self, call: CallState, seconds: float) -> None:
        call.service += seconds
        call.starve_service += seconds

    def add_services(self, call: CallState, steps: Sequence[float]) -> None:
        """`add_service` for several steps in turn (a simulator's fast-forward)."""
        for seconds in steps:
            self.add_service(call, seconds)

    @abstractmethod
    def rank_key(self, call: CallState) -> tuple:
        """Smaller is served first; among running calls, the largest is preempted first
        when memory runs out."""

    @abstractmethod
    def ranked(self, now: float) -> Iterator[C]:
        """Every call (running and waiting), highest priority first. Consumers stop
        early, so implementations yield lazily."""

    def urgency(self, call: CallState) -> float:
        """How likely the call's program is to finish per second of service, for the
        batch cut (scheduling.cut); only policies that cut the batch say."""
        raise NotImplementedError

    def cut_exempt(self, call: CallState) -> bool:
        """Whether the batch cut must take the call (when it fits)."""
        return False

    def order(self, now: float, first: Sequence[AbstractSet[str]] = ()) -> Iterator[C]:
        """The order a round serves calls in: `ranked`, the calls of the programs in
        each set of `first` ahead of the next and of the rest (`programs_first`), its slots
        shared fairly between tenants when calls of more than one are here
        (autellix.scheduling.shares)."""
        ranked = programs_first(self.ranked(now), first) if first else self.ranked(now)
        if self.tenant_shares and len(self.tenants) > 1:
            return by_share(ranked, self.tenants, self.weights, not self.preemptive)
        return ranked

    def queue_lengths(self) -> list[int]:
        return [len(self.calls)]

    def _close_wait(self, call: CallState, now: float) -> None:
        waited = now - call.wait_since
        call.waiting += waited
        call.starve_wait += waited

    def _insert(self, call: CallState, now: float) -> None: ...

    def _delete(self, call: CallState) -> None: ...

    def _on_start(self, call: CallState) -> None: ...

    def _on_stop(self, call: CallState, now: float) -> None: ...


def programs_first(ranked: Iterator[C], tiers: Sequence[AbstractSet[str]]) -> Iterator[C]:
    """`ranked` with the calls of the programs in `tiers[0]` first, then those in
    `tiers[1]`, ..., then the others, each part in its order.

    The engine passes, when memory is short, the programs with calls holding KV on the
    device, then those with KV pinned for their return: the working-set rule of paged
    memory. Admitting a program whose context is not resident costs its whole prefill
    and evicts another's context; served in pure rank order (a new program ranks first
    under least attained service), the programs take the memory from each other in turn
    and each comes back to a cold cache. So resident programs go first, in the policy's
    order, and the others enter, in the policy's order, as memory frees. A call in
    flight goes before a pinned program's return: the pin only may be worth its memory."""
    later: list[list[C]] = [[] for _ in tiers]
    for call in ranked:
        tier = next((i for i, t in enumerate(tiers) if call.program_id in t), len(tiers))
        if tier == 0:
            yield call
        else:
            later[tier - 1].append(call)
    for part in later:
        yield from part


def select_batch(
    policy: Policy[C],
    now: float,
    max_running: int,
    fits: Callable[[C], bool] = lambda call: True,
    cut: Callable[[C, list[C]], bool] | None = None,
    first: Sequence[AbstractSet[str]] = (),
) -> tuple[list[C], list[C]]:
    """One scheduling round: scan the calls in priority order (shared between tenants;
    the calls of the programs in `first` ahead, see `programs_first`) and take those
    that fit.

    `cut(call, batch)` says whether the call is worth taking into the batch so far
    (scheduling.cut); a call it leaves out is skipped (a running one is preempted).

    `fits(call)` reserves what the call needs (KV blocks, token budget) and says
    whether it could. After the first waiting call that does not fit, no waiting call
    is taken (a big call is not overtaken forever by small ones), but running calls
    still keep their place if they fit. Running calls left out are preempted.
    Returns (batch, preempted), both already marked in the policy; the batch is in
    priority order.
    """
    batch: list[C] = []
    blocked = False
    running_left = len(policy.running)
    for call in policy.order(now, first):
        if len(batch) == max_running or (blocked and not running_left):
            break
        taken = cut is None or cut(call, batch)
        if call.running:
            running_left -= 1
            if taken and fits(call):
                batch.append(call)
        elif not blocked and taken:
            if fits(call):
                batch.append(call)
            else:
                blocked = True
    chosen = {call.call_id for call in batch}
    preempted = [c for c in policy.running.values() if c.call_id not in chosen]
    for call in preempted:
        policy.stop_running(call, now)
    for call in batch:
        policy.start_running(call, now)
    return batch, preempted
