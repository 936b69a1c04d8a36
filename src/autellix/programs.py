"""Programs, their calls, and the process table that tracks them.

The process table is the one place that knows programs. Engines receive a call
with a snapshot of its program (`ProgramSnapshot`) and report the call's waiting
and service when it finishes; the table then updates the program: PLAS adds the
call's service to `service`, ATLAS takes
`critical_path = max(critical_path, call.start_priority + call.service)`.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_TENANT = "default"  # every program's tenant when the server has no keys
TENANT_SEP = "\x1f"  # never in a client's program id (refused) nor in a tenant's name


def program_key(tenant: str, name: str) -> str:
    """The table's id of the program a tenant calls `name`: the name itself in the default
    tenant, else namespaced, so that no tenant can reach another's program by its id."""
    return name if tenant == DEFAULT_TENANT else f"{tenant}{TENANT_SEP}{name}"


def split_key(program_id: str) -> tuple[str, str]:
    """(tenant, the id its client knows) of a table id."""
    tenant, _, name = program_id.rpartition(TENANT_SEP)
    return tenant or DEFAULT_TENANT, name


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
    sizes: tuple[float, ...] = ()  # total service of past programs of its class, sorted
    sizes_of_all: tuple[float, ...] = ()  # of every class's together (the batch cut's guard)
    # KV retention: past gaps between a completion and the next call's arrival (its own,
    # else its class's), and the client's expected return after this call (seconds)
    return_gaps: tuple[float, ...] = ()
    expect_return: float | None = None
    kind: str | None = None
    tenant_weight: float = 1.0  # its tenant's weight in the batch's shares (see scheduling)


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
    kind: str | None = None  # its class: programs of one kind share a size law
    observed: float | None = None  # the size last reported to the size model
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=GAPS_KEPT))

    def snapshot(
        self, sizes: tuple[float, ...] = (), sizes_of_all: tuple[float, ...] = ()
    ) -> ProgramSnapshot:
        return ProgramSnapshot(
            self.service, self.critical_path, self.waiting, sizes, sizes_of_all, kind=self.kind
        )

    @property
    def tenant(self) -> str:
        return split_key(self.program_id)[0]

    @property
    def name(self) -> str:
        """The id its client knows (program_id is the table's, namespaced by tenant)."""
        return split_key(self.program_id)[1]

    @property
    def last_activity(self) -> float:
        return max(self.started, self.last_arrival or 0.0, self.last_completion or 0.0)

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


GAPS_KEPT = 32  # a program's last gaps between calls


class KindSamples:
    """The last values seen of something per program class and over all classes (the
    gaps between a completion and the next call's arrival; the share of a call's KV its
    program's next call used): what a program with none of its own is expected to do."""

    def __init__(self, keep: int = 256, max_kinds: int = 1024) -> None:
        self.keep = keep
        self.max_kinds = max_kinds
        self._seen: OrderedDict[str | None, deque[float]] = OrderedDict()  # least recent first

    def observe(self, kind: str | None, value: float) -> None:
        for key in {kind, None}:
            seen = self._seen.pop(key, None) or deque(maxlen=self.keep)
            seen.append(value)
            self._seen[key] = seen
        while len(self._seen) > self.max_kinds + 1:  # + 1: all classes together
            del self._seen[next(k for k in self._seen if k is not None)]

    def of(self, kind: str | None) -> tuple[float, ...]:
        """The class's values, else everyone's, else none."""
        for key in (kind, None):
            if self._seen.get(key):
                return tuple(self._seen[key])
        return ()


class SizeModel:
    """The sizes (total service) of the last programs of each class. Classes come from
    clients (a kind, a system prompt), so only the `max_kinds` last reported are kept.

    A program of no class, or of a class with too few sizes, gets none of its own; the
    sizes of all classes together (`everyone`) are a mixture of kinds, which the Gittins
    policy uses only to move such a program ahead (scheduling/gittins.py)."""

    def __init__(self, keep: int = 256, min_samples: int = 8, max_kinds: int = 1024) -> None:
        self.keep = keep
        self.min_samples = min_samples
        self.max_kinds = max_kinds
        self._sizes: dict[str | None, OrderedDict[str, float]] = {}  # least recent first
        self._sorted: dict[str | None, tuple[float, ...]] = {}

    def observe(self, kind: str | None, program_id: str, size: float) -> None:
        """A program's size as of now; a later report of the same program replaces it."""
        for key in {kind, None}:  # None: all classes together, for `everyone`
            sizes = self._sizes.pop(key, None) or OrderedDict()
            self._sizes[key] = sizes
            sizes.pop(program_id, None)
            sizes[program_id] = size
            while len(sizes) > self.keep:
                sizes.popitem(last=False)
            self._sorted.pop(key, None)
        self._forget_old_kinds()

    def _forget_old_kinds(self) -> None:
        while len(self._sizes) > self.max_kinds + 1:  # + 1: all classes together
            oldest = next(k for k in self._sizes if k is not None)
            del self._sizes[oldest]
            self._sorted.pop(oldest, None)

    def sizes(self, kind: str | None) -> tuple[float, ...]:
        """Sorted sizes of this class's programs; none for no class or too few."""
        if kind is None or len(self._sizes.get(kind, ())) < self.min_samples:
            return ()
        return self._sorted_sizes(kind)

    def everyone(self) -> tuple[float, ...]:
        """The sorted sizes of the last programs of every class (and of none) together;
        none while they are too few."""
        if len(self._sizes.get(None, ())) < self.min_samples:
            return ()
        return self._sorted_sizes(None)

    def save(self, path: str | Path) -> None:
        """Write the sizes to `path` (JSON, replaced whole), least recent first."""
        classes = [[k, list(sizes.items())] for k, sizes in self._sizes.items()]
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps({"version": 1, "classes": classes}))
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        """Read sizes that `save` wrote into this (empty) model, as many as it keeps (the
        last `keep` of a class, the last `max_kinds` classes); a file of another shape is a
        ValueError that names it."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("version") != 1:
                raise ValueError(f"version {data.get('version')!r}, not 1")
            for kind, sizes in data["classes"]:
                if kind is not None and not isinstance(kind, str):
                    raise ValueError(f"a class named {kind!r}")
                kept = list(sizes)[-self.keep :]
                self._sizes[kind] = OrderedDict((str(p), float(s)) for p, s in kept)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} holds no program sizes: {exc}") from None
        self._forget_old_kinds()
        self._sorted.clear()

    def _sorted_sizes(self, key: str | None) -> tuple[float, ...]:
        if key not in self._sorted:
            self._sorted[key] = tuple(sorted(self._sizes[key].values()))
        return self._sorted[key]


def new_program_name() -> str:
    return f"prog-{uuid.uuid4().hex[:16]}"


def kind_of(messages: list[dict]) -> str | None:
    """A program's class when its client names none: the start of its system prompt (the
    instructions that agents of one kind share), or None without one."""
    if messages and messages[0].get("role") == "system":
        content = str(messages[0].get("content"))[:256]
        return "system-" + hashlib.sha256(content.encode()).hexdigest()[:12]
    return None


class ProcessTable:
    """Every live program, keyed by id (`program_key`: namespaced by tenant). Not
    thread-safe: one owner (the frontend's loop).

    It also learns what sizes programs come in (for the Gittins policy): a program's size
    is reported when it ends, is reaped, or has been idle for `idle_after` seconds (it
    may be done; if it comes back, its next report replaces that one).
    """

    def __init__(self, ttl: float = 600.0, clock=time.monotonic, idle_after: float = 10.0) -> None:
        self.ttl = ttl
        self.clock = clock
        self.idle_after = idle_after
        self.sizes = SizeModel()
        self.gaps = KindSamples()
        self.programs: dict[str, Program] = {}
        self.tenants: dict[str, dict[str, Program]] = {}  # tenant -> its programs by id
        self.reaped = 0  # programs removed for being idle past the TTL
        self.reaped_by: Counter[str] = Counter()  # the same, per tenant
        self._call_ids = itertools.count()

    def __len__(self) -> int:
        return len(self.programs)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self.programs

    def count(self, tenant: str) -> int:
        """The tenant's programs in the table."""
        return len(self.tenants.get(tenant, ()))

    def page(self, tenant: str, limit: int, after: str | None = None) -> tuple[list[Program], bool]:
        """(up to `limit` of the tenant's programs in order of name, after `after`; whether
        there are more). By name, so that a page still follows one whose last program left."""
        mine = self.tenants.get(tenant, {}).values()
        rest = (p for p in mine if after is None or p.name > after)
        page = heapq.nsmallest(limit + 1, rest, key=lambda p: p.name)
        return page[:limit], len(page) > limit

    def start(
        self, name: str | None = None, kind: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> Program:
        """Start the program the tenant calls `name` (None: a fresh name); its id in the
        table is `program_key(tenant, name)`."""
        name = name or new_program_name()
        program_id = program_key(tenant, name)
        if program_id in self.programs:
            raise ValueError(f"program {name!r} already exists")
        program = Program(program_id, started=self.clock(), kind=kind)
        self.programs[program_id] = program
        self.tenants.setdefault(tenant, {})[program_id] = program
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
            self._leave(program)
        return program

    def call_arrived(
        self,
        program_id: str | None,
        thread_id: str | None = None,
        call_id: str | None = None,
        kind: str | None = None,
        expect_return: float | None = None,
    ) -> tuple[Call, ProgramSnapshot]:
        """Register a call. An unknown program id starts that program; no id makes a
        program of one call (ended as soon as the call finishes). A program's first call
        that names a kind sets it. `expect_return`: the client's hint of how soon after
        this call the program calls again (seconds)."""
        now = self.clock()
        if program_id is None:
            program = self.start()
            program.ended = True
        else:
            tenant, name = split_key(program_id)
            program = self.programs.get(program_id) or self.start(name, tenant=tenant)
            if program.ended:
                raise ProgramEnded(f"program {program_id!r} has ended")
        call_id = call_id or f"call-{next(self._call_ids)}"
        call = Call(call_id, program.program_id, thread_id, now, program.critical_path)
        program.kind = program.kind or kind
        self._observe_gap(program, now)
        program.calls[call_id] = call
        if program.first_arrival is None:
            program.first_arrival = now
        program.last_arrival = now
        snapshot = replace(
            program.snapshot(self.sizes.sizes(program.kind), self.sizes.everyone()),
            return_gaps=self.return_gaps(program),
            expect_return=expect_return,
        )
        return call, snapshot

    def return_gaps(self, program: Program) -> tuple[float, ...]:
        """How long the program has paused between calls: its own gaps, else its class's;
        none for a program that cannot come back."""
        if program.ended:
            return ()
        return tuple(program.gaps) or self.gaps.of(program.kind)

    def _observe_gap(self, program: Program, now: float) -> None:
        """A call arrives at a program with no call in flight: the pause since its last
        completion is a gap (a parallel stage's later calls are not)."""
        if program.calls or program.last_completion is None:
            return
        gap = max(0.0, now - program.last_completion)
        program.gaps.append(gap)
        self.gaps.observe(program.kind, gap)

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
            self._leave(program)
        return program

    def reap(self) -> list[Program]:
        """Remove programs with no call in flight and no activity for `ttl` seconds, and
        report the size of those idle for `idle_after`."""
        now = self.clock()
        idle = [p for p in self.programs.values() if not p.calls]
        for program in idle:
            if now - program.last_activity > self.idle_after:
                self._observe(program)
        stale = [p for p in idle if now - p.last_activity > self.ttl]
        for program in stale:
            self._leave(program)
            self.reaped_by[program.tenant] += 1
        self.reaped += len(stale)
        return stale

    def report_sizes(self) -> None:
        """Report the size of every program with no call in flight, idle or not (a server
        stopping: what each has had is all that will be known of it)."""
        for program in self.programs.values():
            if not program.calls:
                self._observe(program)

    def _leave(self, program: Program) -> None:
        self._observe(program)
        del self.programs[program.program_id]
        mine = self.tenants[program.tenant]
        del mine[program.program_id]
        if not mine:
            del self.tenants[program.tenant]

    def _observe(self, program: Program) -> None:
        if program.observed != program.service and program.completed_calls:
            self.sizes.observe(program.kind, program.program_id, program.service)
            program.observed = program.service
