"""The HTTP API: OpenAI's chat and completions routes, program sessions, health, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.engine.llm_engine import RequestError, RequestOutput
from autellix.engine.model.sampler import SamplingParams
from autellix.programs import Program, ProgramEnded, UnknownProgram
from autellix.server.frontend import Frontend, Overloaded, Unavailable
from autellix.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ProgramCreate,
    SamplingFields,
    error_body,
    new_id,
    now,
)
from autellix.server.replica import ReplicaDied

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


def _translate(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestError | ValueError | ProgramEnded):
        return APIError(400, str(exc))
    if isinstance(exc, Overloaded):
        return APIError(429, str(exc), "rate_limit_error", headers={"Retry-After": "1"})
    if isinstance(exc, Unavailable | ReplicaDied):
        return APIError(503, str(exc), "service_unavailable")
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")


def program_json(p: Program) -> dict[str, Any]:
    return {
        "id": p.program_id,
        "object": "program",
        "started": p.started,
        "ended": p.ended,
        "service": p.service,
        "critical_path": p.critical_path,
        "waiting": p.waiting,
        "completed_calls": p.completed_calls,
        "engines": sorted(p.engines),
        "pinned_engine": p.pinned_engine,
        "first_arrival": p.first_arrival,
        "last_arrival": p.last_arrival,
        "last_completion": p.last_completion,
        "calls": [
            {
                "id": c.call_id,
                "thread_id": c.thread_id,
                "arrival": c.arrival,
                "engine": c.engine,
                "waiting": c.waiting,
                "service": c.service,
            }
            for c in p.calls.values()
        ],
    }


def create_app(frontend: Frontend) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await frontend.start()
        try:
            yield
        finally:
            await frontend.stop()

    app = FastAPI(title="Autellix", lifespan=lifespan)
    app.state.frontend = frontend

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = first.get("msg", "invalid request")
        return _error(400, f"{where}: {message}" if where else message, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.code, exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        e = _translate(exc)
        return _error(e.status, e.message, e.type, e.code, e.headers)

    # --- health, models, metrics -------------------------------------------------------

    @app.get("/health")
    async def health() -> JSONResponse:
        replicas = [
            {"id": r.engine_id, "alive": r.alive, "in_flight": r.in_flight}
            for r in frontend.replicas
        ]
        ok = bool(frontend.live_replicas)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "replicas": replicas},
            status_code=200 if ok else 503,
        )

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": frontend.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "autellix",
                    "max_model_len": frontend.replicas[0].info.max_model_len
                    if frontend.replicas[0].info
                    else None,
                }
            ],
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        stats = await frontend.replica_stats()
        body = frontend.metrics.render(len(frontend.table), frontend.table.reaped, stats)
        return Response(body, media_type="text/plain; version=0.0.4")

    # --- programs -------------------------------------------------------------------------

    @app.post("/v1/programs", status_code=201)
    async def start_program(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = ProgramCreate.model_validate_json(raw) if raw.strip() else ProgramCreate()
        try:
            return program_json(frontend.table.start(body.program_id))
        except ValueError as exc:
            raise APIError(409, str(exc), code="program_exists") from None

    @app.get("/v1/programs")
    async def list_programs() -> dict[str, Any]:
        return {
            "object": "list",
            "reaped": frontend.table.reaped,
            "data": [program_json(p) for p in frontend.table.programs.values()],
        }

    @app.get("/v1/programs/{program_id}")
    async def get_program(program_id: str) -> dict[str, Any]:
        try:
            return program_json(frontend.table.get(program_id))
        except UnknownProgram as exc:
            raise APIError(404, str(exc), code="program_not_found") from None

    @app.delete("/v1/programs/{program_id}")
    async def end_program(program_id: str) -> dict[str, Any]:
        try:
            frontend.end_program(program_id)
        except UnknownProgram as exc:
            raise APIError(404, str(exc), code="program_not_found") from None
        return {"id": program_id, "object": "program", "deleted": True}

    # --- completions ----------------------------------------------------------------------

    def sampling(
        req: SamplingFields, max_tokens: int | None, num_prompt: int, index: int
    ) -> SamplingParams:
        if req.model != frontend.model_name:
            raise APIError(
                400,
                f"model {req.model!r} is not served here; this server has {frontend.model_name!r}",
                code="model_not_found",
            )
        try:
            return SamplingParams(
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=req.top_k,
                seed=None if req.seed is None else req.seed + index,
                max_tokens=max_tokens or frontend.default_max_tokens(num_prompt),
                stop=tuple(req.stop or ()),
                stop_token_ids=tuple(req.stop_token_ids or ()),
                ignore_eos=req.ignore_eos,
                min_tokens=req.min_tokens,
            )
        except ValueError as exc:
            raise APIError(400, str(exc)) from None

    def program_of(request: Request, req: SamplingFields) -> tuple[str, str | None, bool]:
        """(program id, thread id, anonymous): a call without a program is a program of one."""
        program_id = request.headers.get(PROGRAM_HEADER) or req.program_id
        thread_id = request.headers.get(THREAD_HEADER) or req.thread_id
        if program_id is None:
            return frontend.table.start().program_id, thread_id, True
        program = frontend.table.programs.get(program_id)
        if program is not None and program.ended:
            raise APIError(400, f"program {program_id!r} has ended", code="program_ended")
        return program_id, thread_id, False

    async def run(
        request: Request,
        req: SamplingFields,
        prompts: list[list[int]],
        max_tokens: int | None,
        render,
    ) -> Response:
        """Start n calls per prompt and answer, streamed or whole."""
        params = [sampling(req, max_tokens, len(p), i) for p in prompts for i in range(req.n)]
        inputs = [p for p in prompts for _ in range(req.n)]
        for p, sp in zip(inputs, params, strict=True):
            try:
                frontend.validate(len(p), sp)
            except RequestError as exc:
                raise APIError(400, str(exc), code="context_length_exceeded") from None
        try:
            frontend.check_capacity(len(inputs))
        except Exception as exc:
            raise _translate(exc) from None
        program_id, thread_id, anonymous = program_of(request, req)
        streams = [
            frontend.stream(p, sp, program_id, thread_id)
            for p, sp in zip(inputs, params, strict=True)
        ]
        rid, created = new_id(render.prefix), now()

        def finish() -> None:
            if anonymous and program_id in frontend.table:
                frontend.end_program(program_id)

        if req.stream:
            return StreamingResponse(
                sse(render, streams, rid, created, req.n, req.include_usage, finish),
                media_type="text/event-stream",
            )
        try:
            task = asyncio.ensure_future(collect(streams))
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    return Response(status_code=499)
            try:
                results = task.result()
            except Exception as exc:
                raise _translate(exc) from None
        finally:
            finish()
        return JSONResponse(render.whole(rid, created, results, req.n))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request) -> Response:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            prompt = frontend.encode_chat(messages)
        except Exception as exc:
            raise APIError(400, f"messages: {exc}") from None
        return await run(
            request,
            req,
            [prompt],
            req.max_completion_tokens or req.max_tokens,
            ChatRender(frontend.model_name),
        )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        try:
            prompts = [frontend.encode(p) for p in req.prompts()]
        except Exception as exc:
            raise APIError(400, f"prompt: {exc}") from None
        return await run(request, req, prompts, req.max_tokens, TextRender(frontend.model_name))

    return app


async def collect(streams: list[AsyncIterator[RequestOutput]]) -> list[tuple[str, RequestOutput]]:
    async def one(stream: AsyncIterator[RequestOutput]) -> tuple[str, RequestOutput]:
        text, last = "", None
        async for out in stream:
            text += out.new_text
            last = out
        assert last is not None
        return text, last

    return list(await asyncio.gather(*(one(s) for s in streams)))


async def merge(
    streams: list[AsyncIterator[RequestOutput]],
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several calls' outputs as they come; closing this closes them all."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[RequestOutput]) -> None:
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


def usage(results: list[RequestOutput], n: int) -> dict:
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
    last: dict[int, RequestOutput] = {}
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
        e = _translate(exc)
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

    def chunk(self, rid: str, created: int, i: int, out: RequestOutput) -> dict:
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

    def chunk(self, rid: str, created: int, i: int, out: RequestOutput) -> dict:
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
                {"index": i, "text": text, "logprobs": None, "finish_reason": out.finish_reason}
                for i, (text, out) in enumerate(results)
            ],
            "usage": usage([out for _, out in results], n),
        }
