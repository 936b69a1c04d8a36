"""The HTTP API: OpenAI's chat and completions routes, program sessions, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.engine.llm_engine import RequestError
from autellix.engine.model.sampler import SamplingParams
from autellix.programs import Program, UnknownProgram, kind_of
from autellix.server.errors import APIError, error_response, translate
from autellix.server.frontend import Frontend
from autellix.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ProgramCreate,
    SamplingFields,
    new_id,
    now,
)
from autellix.server.responses import ChatRender, TextRender, collect, sse

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"
KIND_HEADER = "X-Autellix-Kind"


def program_json(p: Program) -> dict[str, Any]:
    return {
        "id": p.program_id,
        "object": "program",
        "kind": p.kind,
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
            return error_response(400, "the request body is not valid JSON", code="invalid_json")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = first.get("msg", "invalid request").removeprefix("Value error, ")
        message = f"{where}: {message}" if where else message
        return error_response(400, message, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        e = translate(exc)
        return error_response(e.status, e.message, e.type, e.code, e.headers)

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
            return program_json(frontend.table.start(body.program_id, body.kind))
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
                include_stop_str_in_output=req.include_stop_str_in_output,
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
        kind: str | None = None,
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
            raise translate(exc) from None
        program_id, thread_id, anonymous = program_of(request, req)
        streams = [
            frontend.stream(p, sp, program_id, thread_id, request.headers.get(KIND_HEADER) or kind)
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
                raise translate(exc) from None
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
            kind_of(messages),
        )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        try:
            prompts = [frontend.encode(p) for p in req.prompts()]
        except Exception as exc:
            raise APIError(400, f"prompt: {exc}") from None
        return await run(request, req, prompts, req.max_tokens, TextRender(frontend.model_name))

    return app
