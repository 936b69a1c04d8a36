"""The frontend: one process table and one balancer in front of the engine replicas.

Every call goes through `Frontend.stream`: the process table registers it and gives
the program's snapshot, the balancer picks a replica, the replica streams its
outputs, and on completion (or abort) the table folds in the call's waiting and
service. A replica that dies before a call's first token sends the call elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from autellix.balancing import Route, make_balancer
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, CallOutput
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.engine.structured_output import StructuredOutputs
from autellix.flags import check_fields, flag_name
from autellix.programs import Call, ProcessTable, Program, split_key
from autellix.server.limits import InFlight, Ticket, TooMany
from autellix.server.metrics import Metrics
from autellix.server.replica import LocalReplica, ProcessReplica, Replica, ReplicaDied
from autellix.server.tenants import KeyRing, Tenant, valid_key

log = logging.getLogger("autellix.frontend")
T = TypeVar("T")


class Overloaded(RuntimeError):
    """The waiting queue is at its bound (HTTP 429)."""


class Unavailable(RuntimeError):
    """No live replica can take the call (HTTP 503)."""


class Draining(Unavailable):
    """The server is shutting down: it takes no new calls (HTTP 503)."""


@dataclass
class ServeConfig:
    """The server's settings. Each field's metadata gives its `autellix serve` flag (see
    autellix.flags); a flag's name is fixed in `flag` where it differs from the field's,
    so that renaming a field does not rename the flag users' scripts pass."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port", "min": 0, "max": 65535})
    replicas: int = field(
        default=1,
        metadata={"help": "engine replicas, each a process with its own model copy", "min": 1},
    )
    balancer: str = field(
        default="locality", metadata={"help": "how calls are spread over replicas"}
    )
    long_prompt_tokens: int = field(
        default=2048,
        metadata={
            "help": "locality: prompts longer than this go to the program's pinned replica",
            "min": 0,
        },
    )
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "the model name clients send (default: the folder's name)"},
    )
    tool_call_parser: Literal["hermes"] = field(
        default="hermes",
        metadata={
            "help": "how the model writes tool calls: hermes (<tool_call>{json}</tool_call>; "
            "Qwen2.5, Hermes, and models whose template has no tools)"
        },
    )
    program_ttl: float = field(
        default=600.0,
        metadata={"help": "seconds an idle program is kept in the process table", "above": 0},
    )
    program_sizes: str | None = field(
        default=None,
        metadata={
            "help": "a file of the program sizes the Gittins policy learns per kind: read at"
            " start if it exists, written at shutdown, so a restarted server ranks as it did"
            " (default: none: each start learns afresh)"
        },
    )
    # Calls in flight per replica beyond engine.max_running before the frontend answers
    # 429 (not EngineConfig.max_waiting, the engine's own bound on its waiting calls).
    max_queued_per_replica: int = field(
        default=256,
        metadata={
            "flag": "--max-waiting",
            "help": "calls in flight per replica beyond --max-running before the server "
            "answers 429 to a new program (twice as many for a program under way)",
            "min": 0,
        },
    )
    backend: tuple[str, ...] = field(
        default=(),
        metadata={
            "metavar": "URL",
            "help": "serve through these OpenAI-compatible servers (vLLM, SGLang, Autellix) "
            "instead of engines of our own; --model names the tokenizer (the same model)"
            " (default: none: engines of our own)",
        },
    )
    backend_priority: bool = field(
        default=False,
        metadata={
            "help": "send each call to a backend with vLLM's `priority`: its program's "
            "queue under --policy (vLLM needs --scheduling-policy priority)"
        },
    )
    backend_programs: bool = field(
        default=False,
        metadata={
            "help": "name each call's program to the backends in vLLM's vllm_xargs "
            "(autellix_program), for a vLLM running the Autellix scheduler plug-in"
        },
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "metavar": "KEY",
            "help": "clients must send Authorization: Bearer KEY (tenant 'default'; visible "
            "in the process list, --api-keys is not) (default: none: with no --api-keys either,"
            " the server is open)",
        },
    )
    api_keys: str | None = field(
        default=None,
        metadata={
            "metavar": "FILE",
            "help": "a JSON or TOML file of API keys, each with its tenant and optional "
            "limits (autellix.server.tenants); reloaded on SIGHUP (default: none)",
        },
    )
    metrics_need_key: bool = field(
        default=False, metadata={"help": "/metrics asks for a key too (/health never does)"}
    )
    # Measured at 1.1 KB per idle program (benchmarks/results/table-memory.md): 100,000
    # programs are some 110 MiB, under a tenth of the default model's server (1.4 GiB),
    # and hold every program of 160 new programs/s over the 600 s TTL. Not higher: the
    # reaper scans the whole table every 5 s on the server's loop, 33 ms at 100,000.
    max_programs: int = field(
        default=100_000,
        metadata={"help": "programs in the process table before starting one is a 429", "min": 1},
    )
    max_tenant_calls: int | None = field(
        default=None,
        metadata={
            "help": "calls in flight per tenant before a 429 (a tenant's max_calls in "
            "--api-keys overrides; default: with two tenants or more, half the server's "
            "room, replicas x (--max-running + --max-waiting), so that no one tenant fills "
            "it; else no cap of its own)",
            "min": 1,
        },
    )
    max_program_calls: int = field(
        default=64,
        metadata={
            "help": "calls in flight per program before a 429 (a tenant's max_program_calls "
            "in --api-keys overrides)",
            "min": 1,
        },
    )
    max_body_bytes: int = field(
        default=16 << 20,
        metadata={"help": "the largest request body; a larger one is a 413", "min": 1},
    )
    drain_timeout: float = field(
        default=30.0,
        metadata={
            "help": "on SIGTERM or SIGINT, seconds the calls in flight have to finish (new "
            "calls get 503) before they are stopped and the server exits",
            "min": 0,
        },
    )
    replica_timeout: float = field(
        default=60.0,
        metadata={
            "help": "seconds a replica may hold calls without any of them making progress "
            "before it is treated as dead (0: never)",
            "min": 0,
        },
    )
    # replicas in child processes; None: when replicas > 1 (no flag: --replicas decides)
    processes: bool | None = field(default=None, metadata={"flag": None})
    ray: str | None = field(
        default=None,
        metadata={
            "metavar": "auto|ADDRESS",
            "help": "place the replicas as Ray actors (auto: join or start a local cluster)"
            " (default: off: processes on this machine)",
        },
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if value == "":
                raise ValueError(f"{f.name} ({flag_name(f)}) must not be empty")
            if value is True and f.name.startswith("backend_") and not self.backend:
                raise ValueError(f"{f.name} ({flag_name(f)}) applies only with --backend")
        if self.api_key is not None and not valid_key(self.api_key):
            raise ValueError("api_key (--api-key) must be printable and without spaces")


class Frontend:
    def __init__(self, config: ServeConfig, replicas: list[Replica] | None = None) -> None:
        self.config = config
        self.table = ProcessTable(ttl=config.program_ttl)
        self.epoch = time.time() - self.table.clock()  # Unix time when the table's clock read 0
        if config.program_sizes is not None and os.path.exists(config.program_sizes):
            self.table.sizes.load(config.program_sizes)
        self.balancer = make_balancer(config.balancer, config.long_prompt_tokens)
        self.replicas = replicas or self._replicas()
        if not self.balancer.reads_caches:  # the prompts routed to each are never read
            for replica in self.replicas:
                replica.routed = None
        self.metrics = Metrics()
        self.tokenizer: Any = None
        self.grammars: StructuredOutputs | None = None
        self.model_name = config.served_model_name or "autellix"
        self.keys = KeyRing(config.api_key, config.api_keys)
        self.in_flight = InFlight()
        self.draining = False
        self._calls: dict[str, tuple[asyncio.Task, Call]] = {}  # for stopping them
        self._cut: dict[str, str] = {}  # call id -> why it was stopped
        self._reaper: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        # prompts are tokenized in a thread of their own, one at a time, so that a long
        # one does not hold up every stream the event loop serves
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="autellix-tokenize")

    def _replicas(self) -> list[Replica]:
        config = self.config
        if config.backend:
            from autellix.server.remote_replica import RemoteReplica

            engine = config.engine
            return [
                RemoteReplica(
                    i,
                    url,
                    engine.policy,
                    engine.scheduling,
                    config.backend_priority,
                    config.backend_programs,
                )
                for i, url in enumerate(config.backend)
            ]
        return [self._replica(i) for i in range(config.replicas)]

    def _replica(self, engine_id: int) -> Replica:
        config = self.config
        if config.ray is not None:
            from autellix.server.ray_replica import RayReplica

            return RayReplica(engine_id, config.engine, config.ray)
        in_processes = config.processes if config.processes is not None else config.replicas > 1
        kind = ProcessReplica if in_processes else LocalReplica
        return kind(engine_id, config.engine)

    async def start(self) -> None:
        from autellix.engine.model import default_model_path, load_tokenizer

        folder = self.config.engine.model or str(await asyncio.to_thread(default_model_path))
        self.config.engine.model = folder  # replicas load what the frontend resolved
        self.tokenizer = await asyncio.to_thread(load_tokenizer, folder)
        if self.config.served_model_name is None:
            self.model_name = str(folder).rstrip("/").rsplit("/", 1)[-1]
        await asyncio.gather(*(r.start() for r in self.replicas))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        if self.config.replica_timeout > 0:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_forever())
        if self.config.api_keys is not None:
            # only in the main thread (`autellix serve`); a server in a thread (tests)
            # reloads by calling keys.reload_logged
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, self.keys.reload_logged
                )

    async def stop(self) -> None:
        for task in (self._reaper, self._watchdog):
            if task is not None:
                task.cancel()
        if self.config.api_keys is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)
        if self.config.program_sizes is not None and self.started:
            self.table.report_sizes()
            try:
                self.table.sizes.save(self.config.program_sizes)
            except OSError as exc:
                log.error("program sizes not saved to %s: %s", self.config.program_sizes, exc)

    @property
    def started(self) -> bool:
        return self._reaper is not None

    @property
    def live_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    # --- requests ---------------------------------------------------------------------

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the tokenizing thread, the event loop serving others meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, fn, *args)

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for t in prompt):
            raise CallError(f"token ids must be in [0, {vocab})")
        return prompt

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def check_grammar(self, spec: StructuredOutput | None) -> None:
        """Compile a call's grammar here first, so that a bad schema is a 400 before any
        replica sees it (xgrammar caches it; the replicas compile their own)."""
        if spec is not None:
            if self.grammars is None:
                self.grammars = StructuredOutputs(self.tokenizer, len(self.tokenizer), ())
            self.grammars.compile(spec)

    def validate(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        info = self.replicas[0].info
        assert info is not None
        info.check(num_prompt_tokens, params)
        vocab = len(self.tokenizer)
        if any(t >= vocab for t, _ in params.logit_bias):
            raise CallError(f"logit_bias token ids must be in [0, {vocab})")

    def default_max_tokens(self, num_prompt_tokens: int) -> int:
        info = self.replicas[0].info
        assert info is not None
        return max(1, min(info.max_model_len - num_prompt_tokens, 4096))

    def check_capacity(self, calls: int = 1, under_way: bool = False) -> None:
        """Refuse calls when every replica is full. A program already under way may queue
        twice as many: refusing its next call would waste the service it has had, so under
        an overload new programs are refused first."""
        self.refuse_if_draining()
        live = self.live_replicas
        if not live:
            raise Unavailable("no engine replica is alive")
        queued = self.config.max_queued_per_replica * (2 if under_way else 1)
        bound = self.config.engine.max_running + queued
        if all(r.in_flight + calls > bound for r in live):
            raise Overloaded(f"every replica has {bound} calls in flight; retry later")

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise Draining("the server is shutting down; retry on another server or later")

    @property
    def room(self) -> int:
        """Calls in flight the replicas take before the server answers 429."""
        per_replica = self.config.engine.max_running + self.config.max_queued_per_replica
        return len(self.replicas) * per_replica

    def tenant_call_cap(self, tenant: Tenant) -> int | None:
        if tenant.max_calls is not None:
            return tenant.max_calls
        if self.config.max_tenant_calls is not None:
            return self.config.max_tenant_calls
        return max(1, self.room // 2) if len(self.keys.tenants) > 1 else None

    def tenant_weight(self, name: str) -> float:
        """The tenant's weight in the engines' shares of a batch (1 unless its keys say)."""
        tenant = self.keys.tenants.get(name)
        return tenant.weight if tenant is not None and tenant.weight is not None else 1.0

    def admit_calls(self, tenant: Tenant, program_id: str, calls: int) -> Ticket:
        """Count a request's calls against its tenant's and its program's caps (TooMany)."""
        program_cap = tenant.max_program_calls or self.config.max_program_calls
        return self.in_flight.admit(
            tenant.name, program_id, calls, self.tenant_call_cap(tenant), program_cap
        )

    def start_program(
        self, tenant: Tenant, name: str | None = None, kind: str | None = None
    ) -> Program:
        """Start a tenant's program, if the table and the tenant have room (TooMany)."""
        self.refuse_if_draining()
        if len(self.table) >= self.config.max_programs:
            raise TooMany(
                f"the process table holds {len(self.table)} programs, at most "
                f"{self.config.max_programs}; end programs or retry later",
                "too_many_programs",
            )
        cap = tenant.max_programs
        if cap is not None and self.table.count(tenant.name) >= cap:
            raise TooMany(
                f"tenant {tenant.name!r} has {cap} programs, its cap; end programs or retry later",
                "too_many_programs",
            )
        return self.table.start(name, kind, tenant.name)

    def ensure_program(self, tenant: Tenant, program_id: str) -> None:
        """The program of a call that names it: started here if new (TooMany)."""
        if program_id not in self.table:
            self.start_program(tenant, split_key(program_id)[1])

    async def stream(
        self,
        token_ids: list[int],
        params: SamplingParams,
        program_id: str,
        thread_id: str | None,
        kind: str | None = None,
        expect_return: float | None = None,
        anonymous: bool = False,
    ) -> AsyncIterator[CallOutput]:
        """One call of a program, streamed; the process table is updated however it ends.
        A program of one anonymous call will not come back: nothing of it is retained."""
        call, snapshot = self.table.call_arrived(
            program_id, thread_id, kind=kind, expect_return=expect_return
        )
        program = self.table.get(program_id)
        snapshot = replace(snapshot, tenant_weight=self.tenant_weight(program.tenant))
        if anonymous:
            snapshot = replace(snapshot, return_gaps=(), expect_return=None)
        started = time.monotonic()
        last: CallOutput | None = None
        replica: Replica | None = None
        self._calls[call.call_id] = (asyncio.current_task(), call)  # type: ignore[assignment]
        try:
            for _ in range(len(self.replicas)):
                live = self.live_replicas
                if not live:
                    break
                engine_id = self.balancer.pick(Route(token_ids, program), live)
                replica = next(r for r in live if r.engine_id == engine_id)
                call.engine = engine_id
                program.engines.add(engine_id)
                try:
                    async for out in replica.generate(
                        token_ids, params, call.call_id, program_id, snapshot
                    ):
                        last = out
                        yield out
                    return
                except ReplicaDied:
                    self.metrics.replica_failures.inc()
                    if last is not None:  # tokens were sent: the call cannot move
                        raise
            raise Unavailable("no engine replica is alive")
        except asyncio.CancelledError:
            why = self._cut.pop(call.call_id, None)
            if why is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            raise Unavailable(why) from None
        finally:
            self._call_ended(call, time.monotonic() - started, last, replica)

    def _call_ended(
        self, call: Call, elapsed: float, last: CallOutput | None, replica: Replica | None
    ) -> None:
        """However a call ended: its metrics, and its waiting and service folded into its
        program (which may have been ended meanwhile)."""
        self._calls.pop(call.call_id, None)
        self._cut.pop(call.call_id, None)
        waiting, service = (last.waiting, last.service) if last else (elapsed, 0.0)
        self.metrics.observe_call(elapsed, waiting, last)
        with contextlib.suppress(KeyError):
            program = self.table.call_finished(
                call.program_id,
                call.call_id,
                waiting,
                service,
                replica.engine_id if replica else None,
            )
            if program.ended and not program.calls:
                self.metrics.observe_program(program)

    # --- draining and dead replicas -----------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        """Calls of requests not yet answered (a stream counts until its last event)."""
        return sum(self.in_flight.tenants.values())

    def cut_calls(self, why: str, engine_id: int | None = None) -> None:
        """Stop the calls in flight (on one replica, or all): each ends with a 503 saying
        `why`, and its replica aborts it."""
        for call_id, (task, call) in list(self._calls.items()):
            if engine_id is None or call.engine == engine_id:
                self._cut[call_id] = why
                task.cancel()

    async def _watch_forever(self) -> None:
        timeout = self.config.replica_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for replica in self.live_replicas:
                if replica.stalled(now, timeout):
                    why = f"engine replica {replica.engine_id} made no progress for {timeout:g} s"
                    log.warning("%s: treated as dead", why)
                    if not replica.fail(why):
                        self.cut_calls(why, replica.engine_id)

    # --- programs ---------------------------------------------------------------------

    def end_program(self, program_id: str, release: bool = True) -> None:
        """End a program; with `release`, the replicas it used evict its cached KV first
        (not for a program of one anonymous call: a client that names no program may
        still send the same prefix again)."""
        program = self.table.end(program_id)
        if not program.calls:
            self.metrics.observe_program(program)
        if release:
            self._release(program)

    def _release(self, program: Program) -> None:
        for replica in self.replicas:
            if replica.engine_id in program.engines and replica.alive:
                replica.end_program(program.program_id)

    async def _reap_forever(self) -> None:
        while True:
            period = min(self.config.program_ttl / 4, self.table.idle_after / 2, 30.0)
            await asyncio.sleep(max(0.05, period))
            for program in self.table.reap():
                self.metrics.observe_program(program)
                self._release(program)

    async def replica_stats(self) -> list[tuple[Replica, dict[str, Any] | None]]:
        async def one(r: Replica) -> dict[str, Any] | None:
            try:
                return await r.stats() if r.alive else None
            except (ReplicaDied, TimeoutError):  # a replica too busy to answer: no stats now
                return None

        return list(
            zip(self.replicas, await asyncio.gather(*(one(r) for r in self.replicas)), strict=True)
        )
