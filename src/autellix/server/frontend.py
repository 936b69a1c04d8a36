"""The frontend: one process table and one balancer in front of the engine replicas.

Every call goes through `Frontend.stream`: the process table registers it and gives
the program's snapshot, the balancer picks a replica, the replica streams its
outputs, and on completion (or abort) the table folds in the call's waiting and
service. A replica that dies before a call's first token sends the call elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from autellix.balancing import Route, make_balancer
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, CallOutput
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.engine.structured_output import StructuredOutputs
from autellix.programs import ProcessTable
from autellix.server.metrics import Metrics
from autellix.server.replica import LocalReplica, ProcessReplica, Replica, ReplicaDied


class Overloaded(RuntimeError):
    """The waiting queue is at its bound (HTTP 429)."""


class Unavailable(RuntimeError):
    """No live replica can take the call (HTTP 503)."""


@dataclass
class ServeConfig:
    """The server's settings. Each field's metadata gives its `autellix serve` flag (see
    autellix.flags); a flag's name is fixed in `flag` where it differs from the field's,
    so that renaming a field does not rename the flag users' scripts pass."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port"})
    replicas: int = field(
        default=1, metadata={"help": "engine replicas, each a process with its own model copy"}
    )
    balancer: str = field(
        default="locality", metadata={"help": "how calls are spread over replicas"}
    )
    long_prompt_tokens: int = field(
        default=2048,
        metadata={"help": "locality: prompts longer than this go to the program's pinned replica"},
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
        default=600.0, metadata={"help": "seconds an idle program is kept in the process table"}
    )
    # Calls in flight per replica beyond engine.max_running before the frontend answers
    # 429 (not EngineConfig.max_waiting, the engine's own bound on its waiting calls).
    max_queued_per_replica: int = field(
        default=256,
        metadata={
            "flag": "--max-waiting",
            "help": "calls in flight per replica beyond --max-running before the server "
            "answers 429",
        },
    )
    backend: tuple[str, ...] = field(
        default=(),
        metadata={
            "metavar": "URL",
            "help": "serve through these OpenAI-compatible servers (vLLM, SGLang, Autellix) "
            "instead of engines of our own; --model names the tokenizer (the same model)",
        },
    )
    backend_priority: bool = field(
        default=False,
        metadata={
            "help": "send each call to a backend with vLLM's `priority`: its program's "
            "queue under --policy (vLLM needs --scheduling-policy priority)"
        },
    )
    # replicas in child processes; None: when replicas > 1 (no flag: --replicas decides)
    processes: bool | None = field(default=None, metadata={"flag": None})
    ray: str | None = field(
        default=None,
        metadata={
            "metavar": "auto|ADDRESS",
            "help": "place the replicas as Ray actors (auto: join or start a local cluster)",
        },
    )


class Frontend:
    def __init__(self, config: ServeConfig, replicas: list[Replica] | None = None) -> None:
        self.config = config
        self.table = ProcessTable(ttl=config.program_ttl)
        self.balancer = make_balancer(config.balancer, config.long_prompt_tokens)
        self.replicas = replicas or self._replicas()
        self.metrics = Metrics()
        self.tokenizer: Any = None
        self.grammars: StructuredOutputs | None = None
        self.model_name = config.served_model_name or "autellix"
        self._reaper: asyncio.Task | None = None

    def _replicas(self) -> list[Replica]:
        config = self.config
        if config.backend:
            from autellix.server.remote_replica import RemoteReplica

            engine = config.engine
            return [
                RemoteReplica(i, url, engine.policy, engine.scheduling, config.backend_priority)
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

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)

    @property
    def live_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    # --- requests ---------------------------------------------------------------------

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

    def default_max_tokens(self, num_prompt_tokens: int) -> int:
        info = self.replicas[0].info
        assert info is not None
        return max(1, min(info.max_model_len - num_prompt_tokens, 4096))

    def check_capacity(self, calls: int = 1) -> None:
        live = self.live_replicas
        if not live:
            raise Unavailable("no engine replica is alive")
        bound = self.config.engine.max_running + self.config.max_queued_per_replica
        if all(r.in_flight + calls > bound for r in live):
            raise Overloaded(f"every replica has {bound} calls in flight; retry later")

    async def stream(
        self,
        token_ids: list[int],
        params: SamplingParams,
        program_id: str,
        thread_id: str | None,
        kind: str | None = None,
    ) -> AsyncIterator[CallOutput]:
        """One call of a program, streamed; the process table is updated however it ends."""
        call, snapshot = self.table.call_arrived(program_id, thread_id, kind=kind)
        program = self.table.get(program_id)
        started = time.monotonic()
        last: CallOutput | None = None
        replica: Replica | None = None
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
        finally:
            elapsed = time.monotonic() - started
            waiting, service = (last.waiting, last.service) if last else (elapsed, 0.0)
            self.metrics.observe_call(elapsed, waiting, last)
            with contextlib.suppress(KeyError):  # the program may have been ended meanwhile
                program = self.table.call_finished(
                    program_id,
                    call.call_id,
                    waiting,
                    service,
                    replica.engine_id if replica else None,
                )
                if program.ended and not program.calls:
                    self.metrics.observe_program(program)

    # --- programs ---------------------------------------------------------------------

    def end_program(self, program_id: str) -> None:
        program = self.table.end(program_id)
        if not program.calls:
            self.metrics.observe_program(program)

    async def _reap_forever(self) -> None:
        while True:
            period = min(self.config.program_ttl / 4, self.table.idle_after / 2, 30.0)
            await asyncio.sleep(max(0.05, period))
            for program in self.table.reap():
                self.metrics.observe_program(program)

    async def replica_stats(self) -> list[tuple[Replica, dict[str, Any] | None]]:
        async def one(r: Replica) -> dict[str, Any] | None:
            try:
                return await r.stats() if r.alive else None
            except ReplicaDied:
                return None

        return list(
            zip(self.replicas, await asyncio.gather(*(one(r) for r in self.replicas)), strict=True)
        )
