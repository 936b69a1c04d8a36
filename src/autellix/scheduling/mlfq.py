"""Request-level MLFQ (the paper's baseline, after FastServe): no program context.

New calls enter Q1; with `skip_join` they enter the queue of their estimated
prefill time instead (FastServe's skip-join). Demotion by quantum and
anti-starvation count the call alone.
"""

from __future__ import annotations

from autellix.scheduling.call import CallState
from autellix.scheduling.queues import MultiLevelPolicy


class MLFQ(MultiLevelPolicy):
    name = "mlfq"

    def entry_priority(self, call: CallState) -> float:
        if self.config.skip_join:
            return call.prompt_tokens * self.config.prefill_seconds_per_token
        return 0.0

    def program_context(self, call: CallState) -> tuple[float, float]:
        return 0.0, 0.0
