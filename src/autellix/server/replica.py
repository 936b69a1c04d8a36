"""Engine replicas as the frontend sees them: in this process, or in a child process.

Either way a replica streams each call's `CallOutput`s and reports its stats; the
frontend keeps what the balancer needs (calls in flight, the prompts it routed here)
on its side, so routing never waits on a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from autellix.balancing import PrefixIndex
from autellix.engine.async_engine import AsyncLLMEngine, engine_thread
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallOutput, EngineInfo, LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot
from autellix.server.replica_io import (
    AbortCall,
    AddCall,
    CallFailed,
    CallOutputs,
    EndProgram,
    FromReplica,
    GetStats,
    Ready,
    StartFailed,
    Stats,
    Stop,
    ToReplica,
)

HEARTBEAT = 0.2  # seconds between a busy child's messages, outputs or not


class ReplicaDied(RuntimeError):
    pass


class Replica(ABC):
    def __init__(self, engine_id: int, block_size: int) -> None:
        self.engine_id = engine_id
        self.in_flight = 0
        self.alive = True
        # the prompts routed here, for a balancer that reads caches (None: it does not)
        self.routed: PrefixIndex | None = PrefixIndex(block_size=block_size)
        self.info: EngineInfo | None = None
        self.progress = 0.0  # when one of its calls last had an output (monotonic)

    def stalled(self, now: float, timeout: float) -> bool:
        """Holding calls, none of which had an output for `timeout` seconds: hung."""
        return self.in_flight > 0 and now - self.progress > timeout

    def fail(self, why: str) -> bool:
        """Out of rotation for good (a hung replica). True if its calls end by
        themselves; else the frontend stops them."""
        self.alive = False
        return False

    @property
    def active_calls(self) -> int:
        return self.in_flight

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        return 0 if self.routed is None else self.routed.match(tokens)

    async def generate(
        self,
        token_ids: list[int],
        params: SamplingParams,
        call_id: str,
        program_id: str,
        program: ProgramSnapshot,
    ) -> AsyncIterator[CallOutput]:
        if self.in_flight == 0:  # the clock of `stalled` starts with the first call
            self.progress = time.monotonic()
        self.in_flight += 1
        if self.routed is not None:
            self.routed.insert(token_ids)
        try:
            async for out in self._generate(token_ids, params, call_id, program_id, program):
                self.progress = time.monotonic()
                yield out
        finally:
            self.in_flight -= 1

    @abstractmethod
    def _generate(
        self,
        token_ids: list[int],
        params: SamplingParams,
        call_id: str,
        program_id: str,
        program: ProgramSnapshot,
    ) -> AsyncIterator[CallOutput]: ...

    @abstractmethod
    async def start(self) -> EngineInfo: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def stats(self) -> dict[str, Any]: ...

    @abstractmethod
    def end_program(self, program_id: str) -> None:
        """The program ended: the replica may drop what it kept for it (its cached KV)."""


class LocalReplica(Replica):
    """The engine in this process, stepping in a worker thread."""

    def __init__(self, engine_id: int, config: EngineConfig, engine: LLMEngine | None = None):
        super().__init__(engine_id, config.block_size)
        self.config = config
        self.engine = engine
        self.aengine: AsyncLLMEngine | None = None

    async def start(self) -> EngineInfo:
        thread = engine_thread(f"engine-{self.engine_id}")
        if self.engine is None:
            loop = asyncio.get_running_loop()
            self.engine = await loop.run_in_executor(thread, LLMEngine.from_config, self.config)
        self.aengine = AsyncLLMEngine(self.engine, thread=thread)
        self.info = self.engine.info
        return self.info

    async def stop(self) -> None:
        if self.aengine is not None:
            await self.aengine.stop()

    async def _generate(self, token_ids, params, call_id, program_id, program):
        assert self.aengine is not None
        async for out in self.aengine.generate(token_ids, params, call_id, program_id, program):
            yield out

    def end_program(self, program_id: str) -> None:
        if self.aengine is not None:
            self.aengine.end_program(program_id)

    async def stats(self) -> dict[str, Any]:
        assert self.engine is not None
        return self.engine.stats()

    def stalled(self, now: float, timeout: float) -> bool:
        return False  # a thread cannot be stopped: a slow step is waited for


def replica_main(config: EngineConfig, conn: Any) -> None:
    """A child process: one engine, messages in, outputs out, over a pipe."""
    try:
        engine = LLMEngine.from_config(config)
    except Exception as exc:
        conn.send(StartFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(engine.info))
    sent = time.monotonic()
    while True:
        if not engine.has_unfinished():
            conn.poll(None)
        while conn.poll(0):
            if not handle(engine, conn.recv(), conn.send):
                return
        if engine.has_unfinished():
            outs = engine.step()
            # steps without outputs (a long prefill) still say the engine is alive
            if outs or time.monotonic() - sent > HEARTBEAT:
                conn.send(CallOutputs(outs))
                sent = time.monotonic()


def handle(engine: LLMEngine, msg: ToReplica, send: Callable[[FromReplica], None]) -> bool:
    """Apply one message from the frontend to the engine; False when it says to stop."""
    match msg:
        case AddCall():
            try:
                engine.add_call(
                    msg.token_ids,
                    msg.params,
                    call_id=msg.call_id,
                    program_id=msg.program_id,
                    program=msg.program,
                )
            except Exception as exc:
                send(CallFailed(msg.call_id, exc))
        case AbortCall():
            out = engine.abort(msg.call_id)
            if out is not None:
                send(CallOutputs([out]))
        case EndProgram():
            engine.end_program(msg.program_id)
        case GetStats():
            send(Stats(engine.stats()))
        case Stop():
            return False
        case _:
            raise TypeError(f"not a message to a replica: {msg!r}")
    return True


class ProcessReplica(Replica):
    """The engine in a child process with its own model copy. A reader thread turns the
    pipe into per-call asyncio queues; a dead child fails its calls with ReplicaDied."""

    def __init__(self, engine_id: int, config: EngineConfig) -> None:
        super().__init__(engine_id, config.block_size)
        self.config = config
        self._streams: dict[str, asyncio.Queue] = {}
        self._stats: list[asyncio.Future] = []
        self._send_lock = threading.Lock()
        self.why = f"engine replica {engine_id} died"  # what its calls' errors say

    async def start(self) -> EngineInfo:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=replica_main, args=(self.config, child), daemon=True)
        self.process.start()
        child.close()
        msg = await asyncio.to_thread(self._conn.recv)
        if not isinstance(msg, Ready):
            error = msg.error if isinstance(msg, StartFailed) else msg
            raise RuntimeError(f"replica {self.engine_id} failed to start: {error}")
        self.info = msg.info
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, daemon=True, name=f"replica-{self.engine_id}").start()
        return msg.info

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(ReplicaDied):
                self._send(Stop())
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()

    def kill(self) -> None:
        """For tests and operators: end the child at once."""
        self.process.kill()

    def end_program(self, program_id: str) -> None:
        with contextlib.suppress(ReplicaDied):
            self._send(EndProgram(program_id))

    def fail(self, why: str) -> bool:
        """Kill the hung child (even a stopped one): its memory goes with it, and its
        calls fail as a dead replica's do (those without a token yet move)."""
        self.alive = False
        self.why = why
        self.kill()
        return True

    def _send(self, msg: ToReplica) -> None:
        try:
            with self._send_lock:
                self._conn.send(msg)
        except OSError as exc:  # the child is gone and the reader has not said so yet
            self.alive = False
            raise ReplicaDied(f"engine replica {self.engine_id} died") from exc

    def _read(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                self._loop.call_soon_threadsafe(self._dispatch, msg)
        except (EOFError, OSError):
            self._loop.call_soon_threadsafe(self._died)

    def _dispatch(self, msg: FromReplica) -> None:
        """A message from the child, on the event loop: to its call's stream, or to the
        oldest stats request."""
        self.progress = time.monotonic()
        match msg:
            case CallOutputs():
                for out in msg.outputs:
                    stream = self._streams.get(out.call_id)
                    if stream is not None:
                        stream.put_nowait(out)
            case CallFailed():
                stream = self._streams.get(msg.call_id)
                if stream is not None:
                    stream.put_nowait(msg.error)
            case Stats():
                if self._stats:
                    future = self._stats.pop(0)
                    if not future.done():  # its asker may have stopped waiting
                        future.set_result(msg.stats)
            case _:
                raise TypeError(f"not a message from a running replica: {msg!r}")

    def _died(self) -> None:
        self.alive = False
        error = ReplicaDied(self.why)
        for stream in self._streams.values():
            stream.put_nowait(error)
        for future in self._stats:
            future.set_exception(error)
        self._stats.clear()

    async def _generate(self, token_ids, params, call_id, program_id, program):
        if not self.alive:
            raise ReplicaDied(f"engine replica {self.engine_id} is dead")
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[call_id] = stream
        finished = False
        try:
            self._send(AddCall(token_ids, params, call_id, program_id, program))
            while not finished:
                out = await stream.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:
            del self._streams[call_id]
            if not finished and self.alive:
                self._send(AbortCall(call_id))

    async def stats(self) -> dict[str, Any]:
        if not self.alive:
            raise ReplicaDied(f"engine replica {self.engine_id} is dead")
        future = self._loop.create_future()
        self._send(GetStats())
        self._stats.append(future)  # after the send: a failed one leaves no future behind
        return await asyncio.wait_for(future, 10)
