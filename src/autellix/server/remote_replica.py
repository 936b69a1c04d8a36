"""A replica that is another OpenAI-compatible server: vLLM, SGLang, or Autellix itself.

The frontend keeps everything program-level (sessions, the process table, locality
balancing, 429s, aborts) and forwards each call to the backend's /v1/completions as token
ids, streamed. With `--backend-priority` each call carries vLLM's `priority`: the queue
its program's history puts it in under the frontend's policy (PLAS: attained service;
ATLAS: critical path; with anti-starvation applied at arrival), for a backend started
with `--scheduling-policy priority` (vLLM) or any Autellix policy. Grammars (tool calls,
response formats) go as vLLM's `structured_outputs`, logprobs with vLLM's
`return_tokens_as_token_ids`, so that tokens come back as ids. With `--backend-programs`
each call names its program in `vllm_xargs` (`autellix_program`), which a vLLM running the
Autellix scheduler plug-in (`autellix.vllm_scheduler`) ranks by.

A call's service is what the frontend can see of the backend's work: the time from its
first token to its last (decode, during which it held a batch slot, as the built-in
engine charges a step to every call in it). Its wait is the time to its first token:
the frontend cannot tell the backend's queueing from its prefill, so both count as
waiting, which ranks a program by the decode it has had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from autellix.engine.call import TokenLogprobs
from autellix.engine.llm_engine import CallError, CallOutput, EngineInfo
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.programs import ProgramSnapshot
from autellix.scheduling import CallState, MultiLevelPolicy, make_policy
from autellix.scheduling.config import SchedulingConfig
from autellix.server.replica import Replica, ReplicaDied

BLOCK_SIZE = 16  # for the frontend's own map of prefixes sent to each backend
HEALTH_EVERY = 2.0  # seconds between looks at a serving backend's /health


class RemoteReplica(Replica):
    def __init__(
        self,
        engine_id: int,
        url: str,
        policy: str,
        scheduling: SchedulingConfig,
        stamp_priority: bool,
        name_programs: bool = False,
    ) -> None:
        super().__init__(engine_id, BLOCK_SIZE)
        self.url = url.rstrip("/").removesuffix("/v1")
        self.stamp_priority = stamp_priority
        self.name_programs = name_programs
        policy_obj = make_policy(policy, scheduling)
        assert isinstance(policy_obj, MultiLevelPolicy)
        self.policy = policy_obj
        self.model = ""
        self._client: aiohttp.ClientSession | None = None
        self._probe: asyncio.Task | None = None  # while out of rotation: until it is back
        self._watch: asyncio.Task | None = None  # while in rotation: until it is not

    @property
    def client(self) -> aiohttp.ClientSession:
        """One session (a pool of kept-alive connections, unbounded: the frontend's
        admission bounds the calls in flight), made on the serving loop."""
        if self._client is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0)
            self._client = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            )
        return self._client

    async def start(self) -> EngineInfo:
        try:
            async with self.client.get(f"{self.url}/v1/models") as r:
                r.raise_for_status()
                model = (await r.json(content_type=None))["data"][0]
        except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, ValueError) as exc:
            raise RuntimeError(f"backend {self.url} does not serve /v1/models: {exc}") from None
        self.model = model["id"]
        max_len = model.get("max_model_len") or 1 << 20
        self.info = EngineInfo(max_len, num_kv_blocks=1 << 40, block_size=BLOCK_SIZE)
        self._watch = asyncio.get_running_loop().create_task(self._watch_health())
        return self.info

    async def stop(self) -> None:
        for task in (self._probe, self._watch):
            if task is not None:
                task.cancel()
        if self._client is not None:
            await self._client.close()

    async def stats(self) -> dict[str, Any]:
        return {}  # the backend has its own /metrics

    def end_program(self, program_id: str) -> None:
        pass  # an OpenAI-compatible backend knows no programs

    def priority(self, program: ProgramSnapshot, num_prompt_tokens: int) -> int:
        call = CallState("", "", 0.0, program, prompt_tokens=num_prompt_tokens)
        return self.policy.static_priority(call)

    def body(
        self,
        token_ids: list[int],
        params: SamplingParams,
        program: ProgramSnapshot,
        program_id: str | None = None,
    ):
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": token_ids,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        optional: dict[str, Any] = {
            "seed": params.seed,
            "stop": list(params.stop) or None,
            "top_k": params.top_k or None,
            "stop_token_ids": list(params.stop_token_ids) or None,
            "ignore_eos": params.ignore_eos or None,
            "min_tokens": params.min_tokens or None,
            "include_stop_str_in_output": params.include_stop_str_in_output or None,
            "presence_penalty": params.presence_penalty or None,
            "frequency_penalty": params.frequency_penalty or None,
            "repetition_penalty": params.repetition_penalty
            if params.repetition_penalty != 1
            else None,
            "logit_bias": {str(t): b for t, b in params.logit_bias} or None,
        }
        if self.stamp_priority:
            optional["priority"] = self.priority(program, len(token_ids))
        if self.name_programs and program_id is not None:
            optional["vllm_xargs"] = {"autellix_program": program_id}
        if params.structured is not None:
            optional["structured_outputs"] = structured_outputs(params.structured)
        if params.logprobs is not None:
            optional["logprobs"] = params.logprobs
            optional["return_tokens_as_token_ids"] = True
        optional["prompt_logprobs"] = params.prompt_logprobs
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    async def _generate(self, token_ids, params, call_id, program_id, program):
        body = self.body(token_ids, params, program, program_id)
        sent = time.monotonic()
        first = last = None
        count, done = 0, False
        try:
            async with self.client.post(f"{self.url}/v1/completions", json=body) as r:
                if r.status >= 500:
                    raise ReplicaDied(f"backend {self.url} answered {r.status}")
                if r.status >= 400:
                    raise CallError(_message(await r.read()))
                async for chunk in _events(r):
                    now = time.monotonic()
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        yield self._final(call_id, program_id, usage, last, first, sent, now)
                        done = True
                        continue
                    choice = chunk["choices"][0]
                    first = first or now
                    count += 1
                    last = CallOutput(
                        call_id,
                        program_id,
                        [],
                        choice.get("text") or "",
                        finished=choice.get("finish_reason") is not None,
                        finish_reason=choice.get("finish_reason"),
                        stop_reason=choice.get("stop_reason"),
                        num_prompt_tokens=len(token_ids),
                        num_output_tokens=count,
                        waiting=first - sent,
                        service=now - first,
                        logprobs=output_logprobs(choice.get("logprobs"), params),
                        prompt_logprobs=prompt_logprobs(choice.get("prompt_logprobs"), token_ids),
                    )
                    if not last.finished:
                        yield last
            if not done and last is not None:  # a backend that sends no usage
                yield last
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            self._died()
            raise ReplicaDied(f"backend {self.url}: {exc}") from None

    def _final(self, call_id, program_id, usage, last, first, sent, now) -> CallOutput:
        """The last output: the finish chunk's reason, the usage chunk's counts."""
        details = usage.get("prompt_tokens_details") or {}
        out = CallOutput(
            call_id,
            program_id,
            [],
            last.new_text if last is not None else "",
            finished=True,
            finish_reason=last.finish_reason if last is not None else "stop",
            stop_reason=last.stop_reason if last is not None else None,
            num_prompt_tokens=usage.get("prompt_tokens", 0),
            num_output_tokens=usage.get("completion_tokens", 0),
            num_cached_tokens=details.get("cached_tokens") or 0,
            waiting=(first or now) - sent,
            service=now - (first or now),
        )
        if last is not None:
            out.logprobs, out.prompt_logprobs = last.logprobs, last.prompt_logprobs
        return out

    def fail(self, why: str) -> bool:
        self._died()
        return False

    def _died(self) -> None:
        """Out of rotation until its /health answers again."""
        self.alive = False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._come_back())

    async def _come_back(self) -> None:
        while not self.alive:
            await asyncio.sleep(1.0)
            self.alive = await self._healthy()

    async def _watch_health(self) -> None:
        """A backend that stops, dies or drains leaves the rotation (and the frontend's
        /health says so) without waiting for a call to fail on it."""
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            if self.alive and not await self._healthy():
                self._died()

    async def _healthy(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            timeout = aiohttp.ClientTimeout(total=5.0)
            async with self.client.get(f"{self.url}/health", timeout=timeout) as r:
                return r.status == 200
        return False


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The server-sent events' data. Lines are split here: aiohttp's own line reader
    refuses a line past twice its read buffer (512 KiB), and an event with prompt logprobs
    can be longer."""
    rest = b""
    async for chunk in response.content.iter_any():
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if line.startswith(b"data: ") and line.rstrip() != b"data: [DONE]":
                event = json.loads(line[6:])
                if "error" in event:
                    message = event["error"].get("message", "the backend failed the call")
                    raise CallError(message)
                yield event


def _message(raw: bytes) -> str:
    try:
        return json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")[:500]


def structured_outputs(spec: StructuredOutput) -> dict[str, Any]:
    """A call's grammar as vLLM's `structured_outputs` (xgrammar there too)."""
    if spec.kind == "structural_tag":
        return {"structural_tag": spec.spec}
    if spec.kind == "json_object":
        return {"json_object": True, "disable_any_whitespace": True}
    return {"json": json.loads(spec.spec), "disable_any_whitespace": True}


def _token_id(token: str) -> int:
    return int(token.removeprefix("token_id:"))


def output_logprobs(body: dict | None, params: SamplingParams) -> list[TokenLogprobs] | None:
    """A completions chunk's logprobs (tokens as "token_id:N") as the engine's."""
    if params.logprobs is None:
        return None
    if not body:
        return []
    tops = body.get("top_logprobs") or [None] * len(body["tokens"])
    out = []
    for token, logprob, top in zip(body["tokens"], body["token_logprobs"], tops, strict=True):
        ranked = sorted(((_token_id(t), lp) for t, lp in (top or {}).items()), key=lambda x: -x[1])
        token_id = _token_id(token)
        rank = next((i for i, (t, _) in enumerate(ranked, 1) if t == token_id), 0)
        out.append(TokenLogprobs(token_id, logprob, tuple(ranked[: params.logprobs]), rank))
    return out


def prompt_logprobs(entries: list | None, token_ids: list[int]) -> list[TokenLogprobs] | None:
    """vLLM's prompt_logprobs (per prompt token: {id: {logprob, rank, ...}}) as the engine's."""
    if not entries:
        return None
    out = []
    for token, entry in zip(token_ids[1:], entries[1:], strict=True):
        mine = entry[str(token)]
        others = sorted(
            ((int(t), e["logprob"], e["rank"]) for t, e in entry.items() if int(t) != token),
            key=lambda x: x[2],
        )
        top = tuple((t, lp) for t, lp, _ in others)
        out.append(TokenLogprobs(token, mine["logprob"], top, mine["rank"]))
    return out
