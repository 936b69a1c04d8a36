"""FCFS, vLLM's default: arrival order, running calls first (preempted only under
memory pressure, by the engine). A call that asks for a priority (vLLM's `priority`
field; lower first) waits in that priority's queue: FCFS with priorities is vLLM's
priority scheduling, which an Autellix frontend in front of this engine relies on."""

from __future__ import annotations

import math

from autellix.scheduling.call import CallState
from autellix.scheduling.config import SchedulingConfig
from autellix.scheduling.queues import MultiLevelPolicy


class FCFS(MultiLevelPolicy):
    name = "fcfs"
    preemptive = False
    anti_starvation = False

    def __init__(self, config: SchedulingConfig | None = None) -> None:
        boundaries = (config or SchedulingConfig()).boundaries
        quanta = (math.inf,) * (len(boundaries) + 1)  # a call never leaves its queue
        super().__init__(SchedulingConfig(boundaries=boundaries, quanta=quanta))

    def rank_key(self, call: CallState) -> tuple:
        return (not call.running, call.level, call.arrival, call.seq)

    def entry_priority(self, call: CallState) -> float:
        return 0.0
