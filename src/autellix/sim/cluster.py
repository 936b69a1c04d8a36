"""The discrete-event simulator: workload specs through real engines in virtual time.

Every replica is a real `LLMEngine` (scheduler, block manager, policy) whose executor
is a `SimulatedExecutor`: a step takes what the latency model says, on a virtual
clock. In front of the replicas sit the same `ProcessTable` and balancer as in
`autellix serve`. Events (a program arriving, a stage starting after its tool delay,
a replica finishing a step) are processed in time order from one heap; nothing
sleeps, nothing runs in threads, and a run is deterministic for its specs.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import gc
import heapq
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from autellix.balancing import PrefixIndex, Route, make_balancer
from autellix.bench.runner import CallRecord, ProgramRecord
from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import CallOutput, LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProcessTable, kind_of
from autellix.sim.prompts import output_ids, prompt_ids
from autellix.workloads.spec import ProgramSpec


@contextlib.contextmanager
def no_collections() -> Iterator[None]:
    """A simulation allocates small objects by the million (blocks, tokens, outputs,
    events) and makes no reference cycles (tests/sim/test_simulator.py checks), so the
    cyclic collector has nothing to find in it; it took a fifth of a run's time, mostly
    walking the replicas' blocks (benchmarks/sim_speed.py). So it is off meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class ClusterConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    replicas: int = 1
    balancer: str = "locality"
    long_prompt_tokens: int = 2048  # the locality balancer's threshold
    num_kv_blocks: int = 4096  # per replica
    num_swap_blocks: int | None = None  # per replica; None: the engine's default
    swap_time_per_block: float = 0.0
    max_model_len: int = 1 << 30
    # each call tells the server its stage's tool delay (X-Autellix-Expect-Return), as a
    # client that knows its tools would
    expect_return_hints: bool = False
    # each program names its kind (the SDK's `kind`, here the spec's workload: chat,
    # fan-out, search, react, ...), as a client that knows its agents would; otherwise its
    # class is the hash of its system prompt
    named_kinds: bool = False
    # run a replica's stretches of decode steps that nothing in it can change at once
    # (LLMEngine.repeat_steps); the results are the step-by-step run's
    fast_forward: bool = True


@dataclass
class DecodeRun:
    """Decode steps planned on a replica (fast-forward). They are applied when they end,
    or, if the replica is touched first (a call routed to it, a program's end), those
    begun by then are, and the rest are dropped: the replica steps on from there."""

    elapsed: list[float]
    starts: list[float]

    @classmethod
    def plan(cls, now: float, elapsed: list[float]) -> DecodeRun:
        starts = []
        for seconds in elapsed:  # summed one by one, as the executor's clock is
            starts.append(now)
            now += seconds
        return cls(elapsed, starts)

    @property
    def end(self) -> float:
        return self.starts[-1] + self.elapsed[-1]


class SimReplica:
    """One engine and what the balancer sees of it (as `server.replica.Replica`)."""

    def __init__(self, engine_id: int, config: ClusterConfig, step_time) -> None:
        self.engine_id = engine_id
        self.executor = SimulatedExecutor(
            step_time,
            config.engine.block_size,
            config.num_kv_blocks,
            config.engine.swap_pool(config.num_kv_blocks)
            if config.num_swap_blocks is None
            else config.num_swap_blocks,
            config.swap_time_per_block,
        )
        self.engine = LLMEngine(config.engine, self.executor, max_model_len=config.max_model_len)
        # the prompts routed here, for a balancer that reads caches (None: it does not)
        self.routed: PrefixIndex | None = PrefixIndex(block_size=config.engine.block_size)
        self.in_flight = 0
        self.busy = False
        self.steps = 0
        self.run: DecodeRun | None = None

    @property
    def active_calls(self) -> int:
        return self.in_flight

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        return 0 if self.routed is None else self.routed.match(tokens)


@dataclass
class ProgramRun:
    """A program in flight: its spec, its record, and the stage it is in."""

    index: int
    spec: ProgramSpec
    record: ProgramRecord
    lengths: list[list[int]]
    stage: int = 0
    pending: int = 0

    def remaining_tokens(self) -> int:
        """Output tokens of its calls from the current stage on (SRPT's clairvoyance)."""
        return sum(sum(lengths) for lengths in self.lengths[self.stage :])


class Simulation:
    def __init__(self, config: ClusterConfig, step_time: Callable[[StepShape], float]) -> None:
        self.config = config
        self.step_time = step_time
        self.now = 0.0
        self.table = ProcessTable(ttl=math.inf, clock=lambda: self.now)
        self.balancer = make_balancer(config.balancer, config.long_prompt_tokens)
        with no_collections():  # each replica's blocks are objects by the ten thousand
            self.replicas = [SimReplica(i, config, step_time) for i in range(config.replicas)]
        if not self.balancer.reads_caches:  # the prompts routed to each are never read
            for replica in self.replicas:
                replica.routed = None
        # SRPT's clairvoyant remaining work, in seconds: decode tokens at one short decode
        self.decode_unit = step_time(StepShape(1, 1, 512, 512.0))
        # (time, when pushed, order pushed, action): events at one time in push order
        self._events: list[tuple[float, float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._pushed_at = 0.0  # when the event being processed was pushed
        self._calls: dict[str, tuple[ProgramRun, CallRecord]] = {}

    def at(self, time: float, action: Callable[[], None], pushed_at: float | None = None) -> None:
        """Do `action` at `time`; `pushed_at`: when a step-by-step run would have pushed it."""
        pushed_at = self.now if pushed_at is None else pushed_at
        heapq.heappush(self._events, (time, pushed_at, next(self._order), action))

    def run(self, specs: list[ProgramSpec]) -> list[ProgramRecord]:
        """Every program to completion; their records, in the bench's format."""
        programs = []
        with no_collections():
            for i, spec in enumerate(specs):
                record = ProgramRecord(spec.program_id, spec.workload, spec.arrival)
                lengths = [[c.max_tokens for c in stage.calls] for stage in spec.stages]
                program = ProgramRun(i, spec, record, lengths)
                programs.append(program)
                self.at(spec.arrival, functools.partial(self._start_stage, program))
            while self._events:
                self.now, self._pushed_at, _, action = heapq.heappop(self._events)
                action()
        for p in programs:
            if p.record.end is None:
                p.record.error = "not finished: no replica could schedule its calls"
        return [p.record for p in programs]

    def _start_stage(self, program: ProgramRun) -> None:
        spec, s = program.spec, program.stage
        if s == len(spec.stages):
            program.record.end = self.now
            ended = self.table.end(spec.program_id)
            for replica in self.replicas:  # as the SDK's exit does through the server
                if replica.engine_id in ended.engines:
                    self._interrupt(replica)
                    replica.engine.end_program(spec.program_id)
            return
        calls = spec.stages[s].calls
        program.pending = len(calls)
        remaining = program.remaining_tokens()
        hint = None
        if self.config.expect_return_hints and s + 1 < len(spec.stages):
            hint = max(c.tool_delay for c in calls)
        for i, call in enumerate(calls):
            ids = prompt_ids(call, program.index, program.lengths)
            kind = spec.workload if self.config.named_kinds else kind_of(call.messages)
            meta, snapshot = self.table.call_arrived(
                spec.program_id, str(i), kind=kind, expect_return=hint
            )
            replica = self.replicas[
                self.balancer.pick(Route(ids, self.table.get(spec.program_id)), self.replicas)
            ]
            meta.engine = replica.engine_id
            self._interrupt(replica)
            record = CallRecord(s, i, self.now, prompt_tokens=len(ids))
            program.record.calls.append(record)
            self._calls[meta.call_id] = (program, record)
            replica.executor.now = self.now
            replica.executor.planned[meta.call_id] = output_ids(
                program.index, s, i, call.max_tokens
            )
            replica.engine.add_call(
                ids,
                SamplingParams(max_tokens=call.max_tokens, ignore_eos=True),
                call_id=meta.call_id,
                program_id=spec.program_id,
                program=snapshot,
                remaining_work=remaining * self.decode_unit,
            )
            if replica.routed is not None:
                replica.routed.insert(ids)
            replica.in_flight += 1
            if not replica.busy:
                replica.busy = True
                self.at(self.now, functools.partial(self._step, replica))

    def _step(self, replica: SimReplica) -> None:
        """Run one engine step now, or plan a run of them; outputs land when they end."""
        replica.executor.now = self.now
        if self.config.fast_forward and (elapsed := replica.engine.repeatable_step_times()):
            run = replica.run = DecodeRun.plan(self.now, elapsed)
            last = functools.partial(self._run_done, replica, run)
            self.at(run.end, last, pushed_at=run.starts[-1])  # as the last step's would be
            return
        computed = replica.engine.scheduler.computed_tokens
        outputs = replica.engine.step(every_token=False)
        end = replica.executor.now
        if end == self.now and replica.engine.scheduler.computed_tokens == computed:
            replica.busy = False  # nothing could be scheduled
            return
        replica.steps += 1
        self.at(end, lambda: self._step_done(replica, outputs))

    def _run_done(self, replica: SimReplica, run: DecodeRun) -> None:
        if replica.run is run:  # else it was cut short and applied already
            self._step_done(replica, self._apply_run(replica, len(run.elapsed)))

    def _interrupt(self, replica: SimReplica) -> None:
        """The replica is touched now: apply the steps of its run begun by now, as the
        step-by-step run would have (one that begins at this very time, if its step's event
        came first); the replica steps on when the last of them ends."""
        run = replica.run
        if run is None:
            return
        begun = bisect.bisect_left(run.starts, self.now)
        starts_now = begun < len(run.starts) and run.starts[begun] == self.now
        if starts_now and (begun == 0 or self._pushed_at > run.starts[begun - 1]):
            begun += 1
        outputs = self._apply_run(replica, begun)
        done = functools.partial(self._step_done, replica, outputs)
        self.at(replica.executor.now, done, pushed_at=run.starts[begun - 1])

    def _apply_run(self, replica: SimReplica, steps: int) -> list[CallOutput]:
        run = replica.run
        assert run is not None
        replica.run = None
        replica.executor.now = run.starts[0]
        replica.steps += steps
        return replica.engine.repeat_steps(run.elapsed[:steps])

    def _step_done(self, replica: SimReplica, outputs: list[CallOutput]) -> None:
        for out in outputs:
            program, record = self._calls[out.call_id]
            if record.first_token is None:
                record.first_token = self.now
            if out.finished:
                self._call_done(replica, out, program, record)
        if replica.engine.has_unfinished():
            self._step(replica)
        else:
            replica.busy = False

    def _call_done(
        self, replica: SimReplica, out: CallOutput, program: ProgramRun, record: CallRecord
    ) -> None:
        del self._calls[out.call_id]
        replica.executor.planned.pop(out.call_id, None)
        replica.in_flight -= 1
        record.end = self.now
        record.output_tokens = out.num_output_tokens
        self.table.call_finished(
            out.program_id, out.call_id, out.waiting, out.service, replica.engine_id
        )
        program.pending -= 1
        if program.pending == 0:
            spec = program.spec
            delay = max(c.tool_delay for c in spec.stages[program.stage].calls)
            program.stage += 1
            if program.stage == len(spec.stages):
                delay = 0.0
            self.at(self.now + delay, lambda: self._start_stage(program))
