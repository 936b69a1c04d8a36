"""Engine replicas as Ray actors: the way to place replicas on more than one machine.

`autellix serve --ray auto` joins (or starts) a Ray cluster and places each replica
as an actor that holds one engine; outputs stream back through Ray's streaming
generators. Ray is an optional extra: `pip install 'autellix[ray]'`.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import EngineInfo
from autellix.server.replica import Replica, ReplicaDied
from autellix.server.replica_io import AddCall


class EngineActor:
    """Runs inside the actor's process."""

    def __init__(self, config: EngineConfig) -> None:
        from autellix.engine.async_engine import AsyncLLMEngine, engine_thread
        from autellix.engine.llm_engine import LLMEngine

        thread = engine_thread()
        self.engine = thread.submit(LLMEngine.from_config, config).result()
        self.aengine = AsyncLLMEngine(self.engine, thread=thread)

    def info(self) -> EngineInfo:
        return self.engine.info

    async def generate(self, add: AddCall):
        outs = self.aengine.generate(
            add.token_ids,
            add.params,
            call_id=add.call_id,
            program_id=add.program_id,
            program=add.program,
        )
        async for out in outs:
            yield out

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def end_program(self, program_id: str) -> None:
        self.aengine.end_program(program_id)


class RayReplica(Replica):
    def __init__(self, engine_id: int, config: EngineConfig, address: str = "auto") -> None:
        super().__init__(engine_id, config.block_size)
        self.config = config
        self.address = address
        self.actor: Any = None  # Any: Ray's handle types do not model an actor method's `.remote`

    async def start(self) -> EngineInfo:
        import ray

        if not ray.is_initialized():
            # "auto" joins a running cluster or, when there is none, starts a local one
            address = None if self.address == "auto" else self.address
            # ray.init's own SIGTERM handler exits at once: keep the server's, which drains
            on_sigterm = signal.getsignal(signal.SIGTERM)
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            if on_sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_sigterm)
        actor_cls = ray.remote(EngineActor)
        self.actor = actor_cls.options(max_concurrency=10_000).remote(self.config)
        self.info = await self.actor.info.remote()
        return self.info

    async def stop(self) -> None:
        import ray

        ray.kill(self.actor)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)

    async def _generate(self, token_ids, params, call_id, program_id, program):
        import ray

        if not self.alive:
            raise ReplicaDied(f"engine replica {self.engine_id} is dead")
        add = AddCall(token_ids, params, call_id, program_id, program)
        stream = self.actor.generate.options(num_returns="streaming").remote(add)
        finished = False
        try:
            async for ref in stream:
                out = await ref
                finished = out.finished
                yield out
        except ray.exceptions.RayActorError as exc:
            self.alive = False
            raise ReplicaDied(f"engine replica {self.engine_id} died: {exc}") from None
        finally:
            if not finished:
                ray.cancel(stream)  # the actor's generator is cancelled and aborts the call

    def end_program(self, program_id: str) -> None:
        if self.alive:
            self.actor.end_program.remote(program_id)  # fire and forget

    async def stats(self) -> dict[str, Any]:
        import ray

        try:
            return await self.actor.stats.remote()
        except ray.exceptions.RayActorError:
            self.alive = False
            raise ReplicaDied(f"engine replica {self.engine_id} died") from None
