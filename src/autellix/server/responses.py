"""Completion responses: whole JSON bodies and server-sent event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from autellix.engine.call import TokenLogprobs
from autellix.engine.llm_engine import CallOutput
from autellix.server.errors import translate
from autellix.server.protocol import error_body
from autellix.server.tools import ToolCallStream, ToolUse, parse


@dataclass
class Answer:
    """A whole call: its text, its last output and its tokens' log-probabilities."""

    text: str
    last: CallOutput
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs] | None = None


async def collect(streams: list[AsyncIterator[CallOutput]]) -> list[Answer]:
    async def one(stream: AsyncIterator[CallOutput]) -> Answer:
        text, last, logprobs, prompt_logprobs = "", None, [], None
        async for out in stream:
            text += out.new_text
            logprobs += out.logprobs or []
            prompt_logprobs = prompt_logprobs or out.prompt_logprobs
            last = out
        assert last is not None
        return Answer(text, last, logprobs, prompt_logprobs)

    return list(await asyncio.gather(*(one(s) for s in streams)))


async def merge(
    streams: list[AsyncIterator[CallOutput]],
) -> AsyncIterator[tuple[int, CallOutput]]:
    """Interleave several calls' outputs as they come; closing this closes them all."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[CallOutput]) -> None:
        try:
            async for out in stream:
                await queue.put((i, out))
        except BaseException as exc:
            await queue.put((i, exc))
            raise
        finally:
            await queue.put((i, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    done = 0
    try:
        while done < len(tasks):
            i, item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def usage(results: list[CallOutput], n: int) -> dict:
    """Results are prompt-major, n choices each; a prompt counts once, as OpenAI counts."""
    prompt = sum(r.num_prompt_tokens for r in results[::n])
    completion = sum(r.num_output_tokens for r in results)
    cached = sum(r.num_cached_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


async def sse(
    render: ChatRender | TextRender,
    streams,
    rid: str,
    created: int,
    n: int,
    include_usage: bool,
    finish,
) -> AsyncIterator[str]:
    last: dict[int, CallOutput] = {}
    try:
        for i in range(len(streams)):
            first = render.first_chunk(rid, created, i)
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
        async for i, out in merge(streams):
            last[i] = out
            chunk = render.chunk(rid, created, i, out)
            if chunk is not None:
                yield f"data: {json.dumps(chunk)}\n\n"
        if include_usage:
            body = render.body(rid, created, render.chunk_object, [])
            body["usage"] = usage([last[i] for i in sorted(last)], n)
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as exc:  # after the headers are out, an error can only be an event
        e = translate(exc)
        yield f"data: {json.dumps(error_body(e.message, e.type, e.code))}\n\n"
        yield "data: [DONE]\n\n"  # the stream's end all the same, as vLLM sends it
    finally:
        finish()


class Render:
    """What the two routes share: the model's name and the token texts of log-probabilities."""

    prefix = chunk_object = ""

    def __init__(self, model: str, tokenizer: Any = None, token_ids: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.token_ids = token_ids  # vLLM's return_tokens_as_token_ids

    def token(self, token_id: int) -> str:
        if self.token_ids:
            return f"token_id:{token_id}"
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else ""

    def prompt_logprobs(self, tokens: list[TokenLogprobs]) -> list[dict | None]:
        """vLLM's shape: per prompt token (none for the first), that token and the likeliest
        others, each with its logprob, rank and text."""

        def entry(token_id: int, logprob: float, rank: int) -> tuple[str, dict]:
            text = self.token(token_id)
            return str(token_id), {"logprob": logprob, "rank": rank, "decoded_token": text}

        return [None] + [
            dict(
                [entry(t.token_id, t.logprob, t.rank)]
                + [entry(i, lp, r) for r, (i, lp) in enumerate(t.top, 1) if i != t.token_id]
            )
            for t in tokens
        ]

    def body(self, rid: str, created: int, obj: str, choices: list[dict]) -> dict:
        return {
            "id": rid,
            "object": obj,
            "created": created,
            "model": self.model,
            "choices": choices,
        }


class ChatRender(Render):
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def __init__(
        self,
        model: str,
        tokenizer: Any = None,
        tools: ToolUse | None = None,
        token_ids: bool = False,
    ) -> None:
        super().__init__(model, tokenizer, token_ids)
        self.tools = tools
        self.streams: dict[int, ToolCallStream] = {}

    def first_chunk(self, rid: str, created: int, i: int) -> dict:
        delta = {"role": "assistant", "content": ""}
        return self.body(rid, created, self.chunk_object, [self.choice(i, "delta", delta, None)])

    def chunk(self, rid: str, created: int, i: int, out: CallOutput) -> dict | None:
        """The event of `out`; None while a tool call's markup is held back (as vLLM
        sends no delta for it)."""
        delta: dict[str, Any] = {"content": out.new_text} if out.new_text else {}
        reason = out.finish_reason if out.finished else None
        if self.tools is not None:
            stream = self.streams.setdefault(i, ToolCallStream())
            content, calls = stream.feed(out.new_text, out.finished)
            delta = {"content": content} if content else {}
            if calls:
                delta["tool_calls"] = calls
            if stream.calls and reason == "stop":
                reason = "tool_calls"
            if not (delta or out.finished or out.logprobs or out.prompt_logprobs):
                return None
        if not delta and not out.finished:
            delta = {"content": ""}
        choice = self.choice(i, "delta", delta, reason, out.stop_reason)
        if out.logprobs is not None:
            choice["logprobs"] = self.logprobs(out.logprobs)
        if out.prompt_logprobs is not None:
            choice["prompt_logprobs"] = self.prompt_logprobs(out.prompt_logprobs)
        return self.body(rid, created, self.chunk_object, [choice])

    def whole(self, rid: str, created: int, answers: list[Answer], n: int) -> dict:
        choices = []
        for i, a in enumerate(answers):
            message: dict[str, Any] = {"role": "assistant", "content": a.text}
            reason = a.last.finish_reason
            if self.tools is not None:
                content, calls = parse(a.text)
                message["content"] = content
                if calls:
                    message["tool_calls"] = calls
                    reason = "tool_calls" if reason == "stop" else reason
            choice = self.choice(i, "message", message, reason, a.last.stop_reason)
            if a.last.logprobs is not None:
                choice["logprobs"] = self.logprobs(a.logprobs)
            choices.append(choice)
        body = self.body(rid, created, "chat.completion", choices)
        if answers[0].prompt_logprobs is not None:  # one prompt: vLLM puts it at the top
            body["prompt_logprobs"] = self.prompt_logprobs(answers[0].prompt_logprobs)
        return {**body, "usage": usage([a.last for a in answers], n)}

    @staticmethod
    def choice(
        i: int, key: str, message: dict, reason: str | None, stop_reason: int | str | None = None
    ) -> dict:
        return {
            "index": i,
            key: message,
            "logprobs": None,
            "finish_reason": reason,
            "stop_reason": stop_reason,
        }

    def logprobs(self, tokens: list[TokenLogprobs]) -> dict:
        def entry(token_id: int, logprob: float) -> dict:
            text = self.token(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        content = [
            {**entry(t.token_id, t.logprob), "top_logprobs": [entry(*alt) for alt in t.top]}
            for t in tokens
        ]
        return {"content": content, "refusal": None}


class TextRender(Render):
    prefix, chunk_object = "cmpl", "text_completion"

    def __init__(self, model: str, tokenizer: Any = None, token_ids: bool = False) -> None:
        super().__init__(model, tokenizer, token_ids)
        self.offsets: dict[int, int] = {}  # per choice: characters of token text so far

    def first_chunk(self, rid: str, created: int, i: int) -> None:
        return None

    def chunk(self, rid: str, created: int, i: int, out: CallOutput) -> dict:
        reason = out.finish_reason if out.finished else None
        choice = self.choice(i, out.new_text, reason, out.stop_reason)
        if out.logprobs is not None:
            choice["logprobs"] = self.logprobs(i, out.logprobs)
        if out.prompt_logprobs is not None:
            choice["prompt_logprobs"] = self.prompt_logprobs(out.prompt_logprobs)
        return self.body(rid, created, self.chunk_object, [choice])

    def whole(self, rid: str, created: int, answers: list[Answer], n: int) -> dict:
        choices = []
        for i, a in enumerate(answers):
            choice = self.choice(i, a.text, a.last.finish_reason, a.last.stop_reason)
            if a.last.logprobs is not None:
                choice["logprobs"] = self.logprobs(i, a.logprobs)
            if a.prompt_logprobs is not None:
                choice["prompt_logprobs"] = self.prompt_logprobs(a.prompt_logprobs)
            choices.append(choice)
        body = self.body(rid, created, "text_completion", choices)
        return {**body, "usage": usage([a.last for a in answers], n)}

    @staticmethod
    def choice(i: int, text: str, reason: str | None, stop_reason: int | str | None) -> dict:
        return {
            "index": i,
            "text": text,
            "logprobs": None,
            "finish_reason": reason,
            "stop_reason": stop_reason,
        }

    def logprobs(self, i: int, tokens: list[TokenLogprobs]) -> dict:
        texts = [self.token(t.token_id) for t in tokens]
        offsets = []
        for text in texts:
            offsets.append(self.offsets.get(i, 0))
            self.offsets[i] = offsets[-1] + len(text)
        return {
            "tokens": texts,
            "token_logprobs": [t.logprob for t in tokens],
            # the sampled token is always among them, as OpenAI and vLLM give it
            "top_logprobs": [
                {self.token(t.token_id): t.logprob} | {self.token(a): lp for a, lp in t.top}
                for t in tokens
            ],
            "text_offset": offsets,
        }
