"""Completion responses: whole JSON bodies and server-sent event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from autellix.engine.llm_engine import CallOutput
from autellix.server.errors import translate
from autellix.server.protocol import error_body


async def collect(streams: list[AsyncIterator[CallOutput]]) -> list[tuple[str, CallOutput]]:
    async def one(stream: AsyncIterator[CallOutput]) -> tuple[str, CallOutput]:
        text, last = "", None
        async for out in stream:
            text += out.new_text
            last = out
        assert last is not None
        return text, last

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
    render, streams, rid: str, created: int, n: int, include_usage: bool, finish
) -> AsyncIterator[str]:
    last: dict[int, CallOutput] = {}
    try:
        for i in range(len(streams)):
            first = render.first_chunk(rid, created, i)
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
        async for i, out in merge(streams):
            last[i] = out
            yield f"data: {json.dumps(render.chunk(rid, created, i, out))}\n\n"
        if include_usage:
            body = {
                "id": rid,
                "object": render.chunk_object,
                "created": created,
                "model": render.model,
                "choices": [],
                "usage": usage([last[i] for i in sorted(last)], n),
            }
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    except Exception as exc:  # after the headers are out, an error can only be an event
        e = translate(exc)
        yield f"data: {json.dumps(error_body(e.message, e.type, e.code))}\n\n"
    finally:
        finish()


class ChatRender:
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def __init__(self, model: str) -> None:
        self.model = model

    def first_chunk(self, rid: str, created: int, i: int) -> dict:
        return {
            "id": rid,
            "object": self.chunk_object,
            "created": created,
            "model": self.model,
            "choices": [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }

    def chunk(self, rid: str, created: int, i: int, out: CallOutput) -> dict:
        delta = {"content": out.new_text} if out.new_text or not out.finished else {}
        return {
            "id": rid,
            "object": self.chunk_object,
            "created": created,
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "delta": delta,
                    "finish_reason": out.finish_reason if out.finished else None,
                    "stop_reason": out.stop_reason,
                }
            ],
        }

    def whole(self, rid: str, created: int, results, n: int) -> dict:
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": out.finish_reason,
                    "stop_reason": out.stop_reason,
                }
                for i, (text, out) in enumerate(results)
            ],
            "usage": usage([out for _, out in results], n),
        }


class TextRender:
    prefix, chunk_object = "cmpl", "text_completion"

    def __init__(self, model: str) -> None:
        self.model = model

    def first_chunk(self, rid: str, created: int, i: int) -> None:
        return None

    def chunk(self, rid: str, created: int, i: int, out: CallOutput) -> dict:
        return {
            "id": rid,
            "object": self.chunk_object,
            "created": created,
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "text": out.new_text,
                    "logprobs": None,
                    "finish_reason": out.finish_reason if out.finished else None,
                    "stop_reason": out.stop_reason,
                }
            ],
        }

    def whole(self, rid: str, created: int, results, n: int) -> dict:
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": out.finish_reason,
                    "stop_reason": out.stop_reason,
                }
                for i, (text, out) in enumerate(results)
            ],
            "usage": usage([out for _, out in results], n),
        }
