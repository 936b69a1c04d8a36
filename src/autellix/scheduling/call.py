"""The scheduling state of one call inside an engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autellix.programs import ProgramSnapshot, split_key


@dataclass(eq=False)
class CallState:
    call_id: str
    program_id: str
    arrival: float
    program: ProgramSnapshot = field(default_factory=ProgramSnapshot)
    prompt_tokens: int = 0
    # Clairvoyant: the program's work left when this call arrived, this call
    # included (only a simulator knows it; SRPT ranks by it).
    remaining_work: float = math.inf
    # The queue a client asked for (vLLM's `priority`: lower is served first), e.g. an
    # Autellix frontend in front of this engine; None: the policy's own entry queue.
    priority: int | None = None

    service: float = 0.0  # attained executor seconds
    waiting: float = 0.0  # seconds spent queued and not running (closed intervals)
    running: bool = False
    wait_since: float = 0.0  # start of the current waiting interval

    # multi-level queue state, owned by the policy
    level: int = 0
    quantum_used: float = 0.0
    starve_wait: float = 0.0  # W_call and T_call for anti-starvation: reset on promotion
    starve_service: float = 0.0
    promotions: int = 0
    seq: int = 0  # tie-break inside a queue: order of arrival at this engine

    @property
    def tenant(self) -> str:
        return split_key(self.program_id)[0]

    def waited(self, now: float) -> float:
        """Waiting time including the open interval, if waiting now."""
        return self.waiting if self.running else self.waiting + (now - self.wait_since)
