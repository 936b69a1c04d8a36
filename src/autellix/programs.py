"""Programs, their calls, and the process table that tracks them.

The process table is the one place that knows programs. Engines receive a call
with a snapshot of its program (`ProgramSnapshot`) and report the call's waiting
and service when it finishes; the table then updates the program: PLAS adds the
call's service to `service`, ATLAS takes
`critical_path = max(critical_path, call.start_priority + call.service)`.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field


class UnknownProgram(KeyError):
    def __str__(self) -> str:
        return f"unknown program: {self.args[0]!r}"


class ProgramEnded(RuntimeError):
    pass


@dataclass(frozen=True)
class ProgramSnapshot:
    """What an engine needs to know of a call's program, taken at the call's arrival."""

    service: float = 0.0  # T_program: PLAS priority, the sum of completed calls' service
    critical_path: float = 0.0  # ATLAS priority
    waiting: float = 0.0  # W_program: the sum of completed calls' waiting


@dataclass
class Call:
    call_id: str
    program_id: str
    thread_id: str | None
    arrival: float
    start_priority: float  # the program's critical path when the call arrived (ATLAS)
    engine: int | None = None
    waiting: float = 0.0  # as last reported by the engine
    service: float = 0.0


@dataclass
class Program:
    program_id: str
    started: float
    service: float = 0.0
    critical_path: float = 0.0
    waiting: float = 0.0
    engines: set[int] = field(default_factory=set)  # every engine it ran on
    pinned_engine: int | None = None  # where its long prompts go (locality balancer)
    calls: dict[str, Call] = field(default_factory=dict)  # active calls (threads)
    completed_calls: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    last_completion: float | None = None
    ended: bool = False  # ended by the client; leaves the table when its calls finish

    @property
    def last_activity(self) -> float:
        return max(self.started, self.last_arrival or 0.0, self.last_completion or 0.0)

    def snapshot(self) -> ProgramSnapshot:
        return ProgramSnapshot(self.service, self.critical_path, self.waiting)

    def live_service(self) -> float:
        """Service including what active calls have attained so far."""
        return self.service + sum(c.service for c in self.calls.values())

    def live_waiting(self) -> float:
        return self.waiting + sum(c.waiting for c in self.calls.values())

    @property
    def latency(self) -> float | None:
        """First call's arrival to last call's completion."""
        if self.first_arrival is None or self.last_completion is None:
            return None
        return self.last_completion - self.first_arrival


class ProcessTable:
    """Every live program, keyed by id. Not thread-safe: one owner (the frontend's loop)."""

    def __init__(self, ttl: float = 600.0, clock=time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.programs: dict[str, Program] = {}
        self.reaped = 0  # programs removed for being idle past the TTL
        self._call_ids = itertools.count()

    def __len__(self) -> int:
        return len(self.programs)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self.programs

    def start(self, program_id: str | None = None) -> Program:
        program_id = program_id or f"prog-{uuid.uuid4().hex[:16]}"
        if program_id in self.programs:
            raise ValueError(f"program {program_id!r} already exists")
        program = Program(program_id, started=self.clock())
        self.programs[program_id] = program
        return program

    def get(self, program_id: str) -> Program:
        try:
            return self.programs[program_id]
        except KeyError:
            raise UnknownProgram(program_id) from None

    def end(self, program_id: str) -> Program:
        """End a session. With calls in flight the program stays (marked ended, taking
        no new calls) until the last one finishes, so their service is still counted."""
        program = self.get(program_id)
        program.ended = True
        if not program.calls:
            del self.programs[program_id]
        return program

    def call_arrived(
        self, program_id: str | None, thread_id: str | None = None, call_id: str | None = None
    ) -> tuple[Call, ProgramSnapshot]:
        """Register a call. An unknown program id starts that program; no id makes a
        program of one call (ended as soon as the call finishes)."""
        now = self.clock()
        if program_id is None:
            program = self.start()
            program.ended = True
        else:
            program = self.programs.get(program_id) or self.start(program_id)
            if program.ended:
                raise ProgramEnded(f"program {program_id!r} has ended")
        call_id = call_id or f"call-{next(self._call_ids)}"
        call = Call(call_id, program.program_id, thread_id, now, program.critical_path)
        program.calls[call_id] = call
        if program.first_arrival is None:
            program.first_arrival = now
        program.last_arrival = now
        return call, program.snapshot()

    def call_progress(
        self,
        program_id: str,
        call_id: str,
        waiting: float,
        service: float,
        engine: int | None = None,
    ) -> None:
        """An engine's report on a running call (each scheduling round, or when it likes)."""
        call = self.get(program_id).calls[call_id]
        call.waiting, call.service = waiting, service
        if engine is not None:
            call.engine = engine
            self.programs[program_id].engines.add(engine)

    def call_finished(
        self,
        program_id: str,
        call_id: str,
        waiting: float,
        service: float,
        engine: int | None = None,
    ) -> Program:
        """A call completed or was aborted: fold its waiting and service into the program."""
        program = self.get(program_id)
        call = program.calls.pop(call_id)
        program.waiting += waiting
        program.service += service
        program.critical_path = max(program.critical_path, call.start_priority + service)
        program.completed_calls += 1
        program.last_completion = self.clock()
        if engine is not None:
            program.engines.add(engine)
        if program.ended and not program.calls:
            del self.programs[program_id]
        return program

    def reap(self) -> list[Program]:
        """Remove programs with no call in flight and no activity for `ttl` seconds."""
        now = self.clock()
        stale = [
            p for p in self.programs.values() if not p.calls and now - p.last_activity > self.ttl
        ]
        for program in stale:
            del self.programs[program.program_id]
        self.reaped += len(stale)
        return stale
