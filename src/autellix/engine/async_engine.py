"""The engine on an asyncio loop: each call streams its outputs; the steps run in a
worker thread so the loop keeps serving while the model computes.

All of an engine's torch work (loading it, then every step) should run on that one
thread: each thread that calls into torch gets its own OpenMP team, and a second team's
idle threads take cores from the one computing (a step ran 1.6x slower on this 2-core
machine with the model loaded on another thread).

Requests and aborts never touch the engine while a step runs: they queue up and are
applied between steps, in the loop's thread.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from autellix.engine.llm_engine import CallOutput, LLMEngine, QueueFull
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot


class EngineDead(RuntimeError):
    pass


@dataclass
class _Pending:
    call_id: str
    token_ids: list[int]
    params: SamplingParams
    program_id: str | None
    program: ProgramSnapshot | None
    remaining_work: float


def engine_thread(name: str = "engine") -> ThreadPoolExecutor:
    """The one thread an engine's torch work runs on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class AsyncLLMEngine:
    def __init__(
        self,
        engine: LLMEngine,
        on_abort: Callable[[CallOutput], None] | None = None,
        thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """`on_abort` hears of each call aborted because its consumer left, with its final
        waiting and service (the server reports them to the process table). `thread` runs
        the steps: the one that loaded the engine (see above), else a new one."""
        self.engine = engine
        self.thread = thread or engine_thread()
        self.on_abort = on_abort
        self._streams: dict[str, asyncio.Queue[CallOutput | BaseException]] = {}
        self._adds: list[_Pending] = []
        self._aborts: list[str] = []
        self._ended: list[str] = []  # programs that ended
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ids = itertools.count()
        self.error: BaseException | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        call_id: str | None = None,
        program_id: str | None = None,
        program: ProgramSnapshot | None = None,
        remaining_work: float = math.inf,
    ) -> AsyncIterator[CallOutput]:
        """Stream a call's outputs. Bad requests raise before the first output; leaving
        the iteration early (or being cancelled) aborts the call."""
        if self.error is not None:
            raise EngineDead(f"the engine failed: {self.error}")
        token_ids = self.engine.encode(prompt)
        self.engine.validate(len(token_ids), params)
        bound = self.engine.config.max_waiting
        if bound is not None and self.engine.num_waiting + len(self._adds) >= bound:
            raise QueueFull(f"{bound} calls are waiting (the bound)")
        call_id = call_id or f"acall-{next(self._ids)}"
        if call_id in self._streams:
            raise ValueError(f"call {call_id!r} is already running")
        stream: asyncio.Queue[CallOutput | BaseException] = asyncio.Queue()
        self._streams[call_id] = stream
        self._adds.append(_Pending(call_id, token_ids, params, program_id, program, remaining_work))
        self._wake.set()
        self.start()
        finished = False
        try:
            while not finished:
                out = await stream.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:
            if not finished:
                self._aborts.append(call_id)
                self._wake.set()

    def end_program(self, program_id: str) -> None:
        """Applied between steps, as adds and aborts are."""
        self._ended.append(program_id)
        self._wake.set()
        self.start()

    async def _run(self) -> None:
        try:
            while True:
                self._apply_pending()
                if not self.engine.has_unfinished():
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(self.thread, self.engine.step)
                for out in outputs:
                    self._deliver(out)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the model failed: every caller hears of it
            self.error = exc
            for stream in self._streams.values():
                stream.put_nowait(EngineDead(f"the engine failed: {exc}"))
            self._streams.clear()

    def _apply_pending(self) -> None:
        adds, self._adds = self._adds, []
        for p in adds:
            if p.call_id not in self._streams:  # aborted before it was added
                continue
            try:
                self.engine.add_call(
                    p.token_ids, p.params, p.call_id, p.program_id, p.program, p.remaining_work
                )
            except Exception as exc:
                self._streams.pop(p.call_id).put_nowait(exc)
        ended, self._ended = self._ended, []
        for program_id in ended:
            self.engine.end_program(program_id)
        aborts, self._aborts = self._aborts, []
        for call_id in aborts:
            out = self.engine.abort(call_id)
            self._streams.pop(call_id, None)
            if out is not None and self.on_abort is not None:
                self.on_abort(out)

    def _deliver(self, out: CallOutput) -> None:
        stream = self._streams.get(out.call_id)
        if stream is not None:
            stream.put_nowait(out)
            if out.finished:
                del self._streams[out.call_id]
