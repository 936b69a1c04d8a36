"""Discretized multi-level queues: the machinery shared by FCFS, MLFQ, PLAS and ATLAS.

A call enters the queue its entry priority falls in, waits FCFS (by arrival)
inside it, and moves down one queue each time it uses up that queue's quantum.
Anti-starvation moves a waiting call to Q1 once W_call / (T_program + T_call) >= beta
(with `starvation_program_waiting`, the paper's (W_program + W_call) / (T_program +
T_call); Gittins: the denominator is at least the call's rank, `starvation_service`),
then resets the call's own W and T.
That test needs no per-round work: while a call waits nothing on the right changes,
so the moment it becomes true is known when the wait begins and sits in a heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

from sortedcontainers import SortedKeyList

from autellix.scheduling.call import CallState
from autellix.scheduling.config import SchedulingConfig
from autellix.scheduling.cut import attained_urgency, outlives_fresh
from autellix.scheduling.policy import Policy


def _fcfs_key(call: CallState) -> tuple[float, int]:
    return (call.arrival, call.seq)


class MultiLevelPolicy(Policy):
    anti_starvation: bool = True

    def __init__(self, config: SchedulingConfig | None = None) -> None:
        super().__init__()
        self.config = config or SchedulingConfig()
        self.levels = [SortedKeyList(key=_fcfs_key) for _ in range(self.config.num_queues)]
        # (deadline, seq, armed at, call id): ids, not calls, so that a call that left is
        # not kept alive by its stale entry (with its tokens) until its deadline passes
        self._deadlines: list[tuple[float, int, float, str]] = []
        self.promotions = 0
        self.demotions = 0

    def entry_priority(self, call: CallState) -> float:
        raise NotImplementedError

    def priority_now(self, call: CallState) -> float:
        """The priority the call would enter with now, its service so far included."""
        return self.entry_priority(call) + call.service

    def urgency(self, call: CallState) -> float:
        return attained_urgency(self.priority_now(call), call.level, self.config.boundaries)

    def cut_exempt(self, call: CallState) -> bool:
        if call.level == 0:  # fresh, or promoted by anti-starvation
            return True
        program = call.program
        sizes = program.sizes or program.sizes_of_all  # a law of all classes may tell a tail
        return not outlives_fresh(sizes, program.service + call.service)

    def starvation_service(self, call: CallState, program_service: float) -> float:
        """The service a call's waiting is weighed against (T_program + T_call)."""
        return max(program_service + call.starve_service, self.config.min_starvation_service)

    def program_context(self, call: CallState) -> tuple[float, float]:
        """(W_program, T_program) for anti-starvation; W_program counts only under
        `starvation_program_waiting` (and in `static_priority`)."""
        return call.program.waiting, call.program.service

    def rank_key(self, call: CallState) -> tuple:
        return (call.level, call.arrival, call.seq)

    def queue_lengths(self) -> list[int]:
        return [len(level) for level in self.levels]

    def ranked(self, now: float) -> Iterator[CallState]:
        self._promote_starving(now)
        if self.preemptive:
            for level in self.levels:
                yield from level
            return
        yield from sorted(self.running.values(), key=_fcfs_key)
        for level in self.levels:
            for call in level:
                if not call.running:
                    yield call

    def add_service(self, call: CallState, seconds: float) -> None:
        super().add_service(call, seconds)
        call.quantum_used += seconds
        quanta = self.config.quanta
        while call.level < len(self.levels) - 1 and call.quantum_used >= quanta[call.level]:
            call.quantum_used -= quanta[call.level]
            self._move(call, call.level + 1)
            self.demotions += 1

    def add_services(self, call: CallState, steps: Sequence[float]) -> None:
        # add_service's arithmetic, step by step, without a call per step
        service, starve, used = call.service, call.starve_service, call.quantum_used
        quanta, last = self.config.quanta, len(self.levels) - 1
        for seconds in steps:
            service += seconds
            starve += seconds
            used += seconds
            while call.level < last and used >= quanta[call.level]:
                used -= quanta[call.level]
                self._move(call, call.level + 1)
                self.demotions += 1
        call.service, call.starve_service, call.quantum_used = service, starve, used

    def entry_level(self, call: CallState) -> int:
        """The queue a call enters: the one it asks for, else its entry priority's."""
        if call.priority is not None:
            return min(max(call.priority, 0), len(self.levels) - 1)
        return self.config.queue_of(self.entry_priority(call))

    def static_priority(self, call: CallState) -> int:
        """What an engine that knows only fixed priorities (vLLM's) should be told: the
        queue this call would enter here, or the first if its program has waited long
        enough for anti-starvation to promote it. A fixed priority is set before the call
        waits, so its program's past waiting is all there is to weigh."""
        program_wait, program_service = self.program_context(call)
        service = self.starvation_service(call, program_service)
        if self.anti_starvation and program_wait >= self.config.beta * service:
            return 0
        return self.entry_level(call)

    def _insert(self, call: CallState, now: float) -> None:
        call.level = self.entry_level(call)
        call.quantum_used = 0.0
        self.levels[call.level].add(call)
        self._arm(call, now)

    def _delete(self, call: CallState) -> None:
        self.levels[call.level].remove(call)

    def _on_stop(self, call: CallState, now: float) -> None:
        self._arm(call, now)

    def _move(self, call: CallState, level: int) -> None:
        self.levels[call.level].remove(call)
        call.level = level
        self.levels[level].add(call)

    def _arm(self, call: CallState, now: float) -> None:
        """Schedule the anti-starvation check of a call that starts waiting now."""
        if not self.anti_starvation or call.level == 0 or call.running:
            return
        program_wait, program_service = self.program_context(call)
        if not self.config.starvation_program_waiting:
            program_wait = 0.0
        service = self.starvation_service(call, program_service)
        deadline = now + self.config.beta * service - program_wait - call.starve_wait
        heapq.heappush(self._deadlines, (deadline, call.seq, call.wait_since, call.call_id))
        if len(self._deadlines) > 2 * len(self.calls) + 64:  # mostly stale: drop those
            self._deadlines = [d for d in self._deadlines if self._armed(*d[1:]) is not None]
            heapq.heapify(self._deadlines)

    def _armed(self, seq: int, armed_at: float, call_id: str) -> CallState | None:
        """The call a deadline entry was armed for, if it still waits as it did then."""
        call = self.calls.get(call_id)
        if call is None or call.seq != seq or call.running or call.wait_since != armed_at:
            return None
        return None if call.level == 0 else call

    def _promote_starving(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq, armed_at, call_id = heapq.heappop(self._deadlines)
            call = self._armed(seq, armed_at, call_id)
            if call is None:
                continue
            self._close_wait(call, now)
            call.wait_since = now
            call.starve_wait = call.starve_service = call.quantum_used = 0.0
            call.promotions += 1
            self.promotions += 1
            self._move(call, 0)
