"""FCFS, vLLM's default: arrival order, running calls first (preempted only under
memory pressure, by the engine)."""

from __future__ import annotations

from autellix.scheduling.call import CallState
from autellix.scheduling.config import SchedulingConfig
from autellix.scheduling.queues import MultiLevelPolicy


class FCFS(MultiLevelPolicy):
    name = "fcfs"
    preemptive = False
    anti_starvation = False

    def __init__(self, config: SchedulingConfig | None = None) -> None:
        super().__init__(SchedulingConfig(boundaries=()))

    def rank_key(self, call: CallState) -> tuple:
        return (not call.running, call.arrival, call.seq)

    def entry_priority(self, call: CallState) -> float:
        return 0.0
