"""Clairvoyant shortest-remaining-processing-time at program level: the lower bound.

Ranks by the work left in the call's program, which only a simulator knows
(`CallState.remaining_work`). Exact order, no queues, preemptive unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

from autellix.scheduling.call import CallState
from autellix.scheduling.policy import Policy


class SRPT(Policy):
    name = "srpt"
    cuts_batch = True

    def urgency(self, call: CallState) -> float:
        return 1.0 / max(call.remaining_work - call.service, 1e-6)

    def rank_key(self, call: CallState) -> tuple:
        return (call.remaining_work - call.service, call.seq)

    def ranked(self, now: float) -> Iterator[CallState]:
        calls = sorted(self.calls.values(), key=self.rank_key)
        if not self.preemptive:
            calls.sort(key=lambda c: not c.running)  # running first, each part in rank order
        return iter(calls)
