"""Drive program specs against one endpoint, in real time, and record every call.

Each program arrives at its spec's time, runs its stages in order (a stage's calls in
parallel), feeds each call's real output into the later prompts that refer to it,
waits out the tool delays, and names itself to the endpoint: by program-session
headers on Autellix, in `vllm_xargs` on a vLLM running the Autellix scheduler plug-in,
or by a priority stamp on a peer that has none (client-side PLAS: the program's decode
tokens so far, the best a plain vLLM's user can do today).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx
import openai

from autellix.workloads.spec import ProgramSpec, resolve


@dataclass
class Endpoint:
    name: str
    base_url: str
    model: str | None  # None: the first model the endpoint serves (see sweep.reachable)
    sessions: bool = True  # send X-Autellix-Program / X-Autellix-Thread
    priority: bool = False  # stamp each call with its program's decode tokens so far
    program_args: bool = False  # name the program in vllm_xargs (the vLLM scheduler plug-in)
    kinds: bool = False  # with sessions: name the program's kind (its spec's workload)
    api_key: str = "EMPTY"


@dataclass
class CallRecord:
    stage: int
    index: int
    start: float  # seconds from the run's start
    first_token: float | None = None
    end: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


@dataclass
class ProgramRecord:
    program_id: str
    workload: str
    arrival: float
    end: float | None = None
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.end is None else self.end - self.arrival

    @property
    def decode_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)

    @property
    def token_latency(self) -> float | None:
        """Program latency per generated token (the paper's program token latency)."""
        if self.latency is None or not self.decode_tokens:
            return None
        return self.latency / self.decode_tokens


async def run_program(
    spec: ProgramSpec, endpoint: Endpoint, client: openai.AsyncOpenAI, t0: float, run_tag: str = ""
) -> ProgramRecord:
    await asyncio.sleep(max(0.0, t0 + spec.arrival - time.monotonic()))
    record = ProgramRecord(spec.program_id, spec.workload, time.monotonic() - t0)
    outputs: list[list[str]] = []
    try:
        for s, stage in enumerate(spec.stages):
            texts = await asyncio.gather(
                *(
                    _call(spec, s, i, call, outputs, endpoint, client, record, t0, run_tag)
                    for i, call in enumerate(stage.calls)
                )
            )
            outputs.append(list(texts))
            delay = max((c.tool_delay for c in stage.calls), default=0.0)
            if delay and s < len(spec.stages) - 1:
                await asyncio.sleep(delay)
        record.end = time.monotonic() - t0
    except Exception as exc:  # the endpoint failed the program: keep what was measured
        record.error = f"{type(exc).__name__}: {exc}"
    return record


async def _call(spec, s, i, call, outputs, endpoint, client, record, t0, run_tag) -> str:
    rec = CallRecord(s, i, time.monotonic() - t0)
    record.calls.append(rec)
    extra_body: dict = {"ignore_eos": True}
    headers: dict[str, str] = {}
    if endpoint.sessions:
        headers = {"X-Autellix-Program": run_tag + spec.program_id, "X-Autellix-Thread": str(i)}
        if endpoint.kinds:
            headers["X-Autellix-Kind"] = spec.workload
    if endpoint.priority:
        extra_body["priority"] = sum(c.output_tokens for c in record.calls)
    if endpoint.program_args:
        extra_body["vllm_xargs"] = {"autellix_program": run_tag + spec.program_id}
    text = []
    try:
        stream = await client.chat.completions.create(
            model=endpoint.model,
            messages=resolve(call.messages, outputs),
            max_tokens=call.max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra_body,
            extra_headers=headers,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if rec.first_token is None:
                    rec.first_token = time.monotonic() - t0
                text.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                rec.prompt_tokens = chunk.usage.prompt_tokens
                rec.output_tokens = chunk.usage.completion_tokens
    except Exception as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        rec.end = time.monotonic() - t0
    return "".join(text)


async def run_specs(
    specs: list[ProgramSpec], endpoint: Endpoint, on_done=None, timeout: float | None = None
) -> list[ProgramRecord]:
    """All programs against one endpoint; `on_done(record)` after each program."""
    # No retries: an overloaded or failing endpoint must show. Idle connections are
    # dropped after 1 s, before a server closes them (uvicorn's and vLLM's keep-alive is
    # 5 s, httpx's default expiry too), or a call sent on a closing connection fails.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=1)
    async with openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=0,
        timeout=3600,
        # openai 2+ types its client with its own httpx fork; httpx's Limits is what it takes
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),  # type: ignore[arg-type]
    ) as client:
        t0 = time.monotonic()
        # the same specs run again (another rate) must be new programs to the server
        run_tag = f"{uuid.uuid4().hex[:8]}-"

        async def one(spec: ProgramSpec) -> ProgramRecord:
            record = await run_program(spec, endpoint, client, t0, run_tag)
            if on_done is not None:
                on_done(record)
            return record

        tasks = [asyncio.ensure_future(one(s)) for s in specs]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        records = [t.result() for t in done if not t.cancelled()]
        return records + _cut_off(specs, records)


def _cut_off(specs: list[ProgramSpec], records: list[ProgramRecord]) -> list[ProgramRecord]:
    """A record for each program the time limit cut off (none of its own)."""
    finished = {r.program_id for r in records}
    return [
        ProgramRecord(s.program_id, s.workload, s.arrival, error="cut off by the run's time limit")
        for s in specs
        if s.program_id not in finished
    ]
