"""The HTTP API: OpenAI's chat and completions routes, program sessions, health, metrics.

The routes live on `router` and take the frontend as a dependency (`FrontendDep`, read
from `app.state.frontend`); `create_app` wires the router, the frontend's lifespan and
the OpenAI-shaped error handlers into an app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.engine.llm_engine import CallError
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.engine.structured_output import GrammarError
from autellix.programs import UnknownProgram, kind_of
from autellix.server.errors import APIError, error_response, translate
from autellix.server.frontend import Frontend
from autellix.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ProgramCreate,
    ProgramDeleted,
    ProgramList,
    ProgramView,
    SamplingFields,
    new_id,
    now,
)
from autellix.server.responses import ChatRender, TextRender, collect, sse
from autellix.server.tools import ToolUse, chat_messages, template_renders_tools

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"
KIND_HEADER = "X-Autellix-Kind"


def get_frontend(request: Request) -> Frontend:
    return request.app.state.frontend


FrontendDep = Annotated[Frontend, Depends(get_frontend)]
router = APIRouter()


# --- health, models, metrics -------------------------------------------------------------


@router.get("/health")
async def health(frontend: FrontendDep) -> JSONResponse:
    replicas = [
        {"id": r.engine_id, "alive": r.alive, "in_flight": r.in_flight} for r in frontend.replicas
    ]
    ok = bool(frontend.live_replicas)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "replicas": replicas},
        status_code=200 if ok else 503,
    )


@router.get("/v1/models")
async def models(frontend: FrontendDep) -> dict[str, Any]:
    info = frontend.replicas[0].info
    model = {
        "id": frontend.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "autellix",
        "max_model_len": info.max_model_len if info else None,
    }
    return {"object": "list", "data": [model]}


@router.get("/metrics")
async def metrics(frontend: FrontendDep) -> Response:
    stats = await frontend.replica_stats()
    body = frontend.metrics.render(len(frontend.table), frontend.table.reaped, stats)
    return Response(body, media_type="text/plain; version=0.0.4")


# --- programs ----------------------------------------------------------------------------


@router.post("/v1/programs", status_code=201)
async def start_program(request: Request, frontend: FrontendDep) -> ProgramView:
    raw = await request.body()  # optional (empty: all defaults), so parsed here
    try:
        body = ProgramCreate.model_validate_json(raw) if raw.strip() else ProgramCreate()
    except ValidationError as exc:  # answered as FastAPI's own body errors are
        raise RequestValidationError(exc.errors(include_url=False)) from None
    try:
        return ProgramView.of(frontend.table.start(body.program_id, body.kind))
    except ValueError as exc:
        raise APIError(409, str(exc), code="program_exists") from None


@router.get("/v1/programs")
async def list_programs(frontend: FrontendDep) -> ProgramList:
    table = frontend.table
    return ProgramList(
        reaped=table.reaped, data=[ProgramView.of(p) for p in table.programs.values()]
    )


@router.get("/v1/programs/{program_id}")
async def get_program(program_id: str, frontend: FrontendDep) -> ProgramView:
    try:
        return ProgramView.of(frontend.table.get(program_id))
    except UnknownProgram as exc:
        raise APIError(404, str(exc), code="program_not_found") from None


@router.delete("/v1/programs/{program_id}")
async def end_program(program_id: str, frontend: FrontendDep) -> ProgramDeleted:
    try:
        frontend.end_program(program_id)
    except UnknownProgram as exc:
        raise APIError(404, str(exc), code="program_not_found") from None
    return ProgramDeleted(id=program_id)


# --- completions -------------------------------------------------------------------------


def sampling_params(
    frontend: Frontend,
    req: ChatCompletionRequest | CompletionRequest,
    max_tokens: int | None,
    num_prompt: int,
    index: int,
    structured: StructuredOutput | None = None,
) -> SamplingParams:
    """The engine's sampling settings for the `index`th of a request's n calls."""
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
            structured=structured,
            logprobs=req.num_logprobs,
            prompt_logprobs=req.prompt_logprobs,
            priority=req.priority,
        )
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def admit(frontend: Frontend, inputs: list[list[int]], params: list[SamplingParams]) -> None:
    """Refuse calls that can never be served (400) or that find no room now (429/503)."""
    for p, sp in zip(inputs, params, strict=True):
        try:
            frontend.validate(len(p), sp)
        except CallError as exc:
            raise APIError(400, str(exc), code="context_length_exceeded") from None
    try:
        frontend.check_grammar(params[0].structured)  # the same for every call of a request
    except GrammarError as exc:
        raise APIError(400, str(exc), code="invalid_schema") from None
    try:
        frontend.check_capacity(len(inputs))
    except Exception as exc:
        raise translate(exc) from None


def program_of(
    frontend: Frontend, request: Request, req: SamplingFields
) -> tuple[str, str | None, bool]:
    """(program id, thread id, anonymous): a call without a program is a program of one."""
    program_id = request.headers.get(PROGRAM_HEADER) or req.program_id
    thread_id = request.headers.get(THREAD_HEADER) or req.thread_id
    if program_id is None:
        return frontend.table.start().program_id, thread_id, True
    program = frontend.table.programs.get(program_id)
    if program is not None and program.ended:
        raise APIError(400, f"program {program_id!r} has ended", code="program_ended")
    return program_id, thread_id, False


async def collect_or_leave(request: Request, streams: list) -> list | None:
    """Every stream's outputs; None when the client left first (its calls are aborted)."""
    task = asyncio.ensure_future(collect(streams))
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
    try:
        return task.result()
    except Exception as exc:
        raise translate(exc) from None


async def run(
    frontend: Frontend,
    request: Request,
    req: ChatCompletionRequest | CompletionRequest,
    prompts: list[list[int]],
    max_tokens: int | None,
    render: ChatRender | TextRender,
    kind: str | None = None,
    structured: StructuredOutput | None = None,
) -> Response:
    """Start n calls per prompt and answer, streamed or whole."""
    params = [
        sampling_params(frontend, req, max_tokens, len(p), i, structured)
        for p in prompts
        for i in range(req.n)
    ]
    inputs = [p for p in prompts for _ in range(req.n)]
    admit(frontend, inputs, params)
    program_id, thread_id, anonymous = program_of(frontend, request, req)
    kind = request.headers.get(KIND_HEADER) or kind
    streams = [
        frontend.stream(p, sp, program_id, thread_id, kind)
        for p, sp in zip(inputs, params, strict=True)
    ]
    rid, created = new_id(render.prefix), now()

    def finish() -> None:
        if anonymous and program_id in frontend.table:
            frontend.end_program(program_id)

    if req.stream:
        events = sse(render, streams, rid, created, req.n, req.include_usage, finish)
        return StreamingResponse(events, media_type="text/event-stream")
    try:
        results = await collect_or_leave(request, streams)
    finally:
        finish()
    if results is None:
        return Response(status_code=499)
    return JSONResponse(render.whole(rid, created, results, req.n))


@router.post("/v1/chat/completions")
async def chat(req: ChatCompletionRequest, request: Request, frontend: FrontendDep) -> Response:
    try:
        tools = ToolUse.of(req)
        native = template_renders_tools(frontend.tokenizer)
        messages = chat_messages(req.messages, tools, native)
        template_tools = tools.tools if tools is not None and native else None
        prompt = frontend.encode_chat(messages, template_tools)
    except Exception as exc:
        raise APIError(400, f"messages: {exc}") from None
    max_tokens = req.max_completion_tokens or req.max_tokens
    render = ChatRender(frontend.model_name, frontend.tokenizer, tools)
    structured = tools.structured() if tools is not None else None
    if req.response_format is not None and structured is None:
        structured = req.response_format.structured()
    kind = kind_of(messages)
    return await run(frontend, request, req, [prompt], max_tokens, render, kind, structured)


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, frontend: FrontendDep) -> Response:
    try:
        prompts = [frontend.encode(p) for p in req.prompts()]
    except Exception as exc:
        raise APIError(400, f"prompt: {exc}") from None
    render = TextRender(frontend.model_name, frontend.tokenizer)
    return await run(frontend, request, req, prompts, req.max_tokens, render)


# --- errors, in OpenAI's shape -----------------------------------------------------------


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that does not parse or validate: 400 naming the first error's field (param)."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return error_response(400, "the request body is not valid JSON", code="invalid_json")
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    message = f"{where}: {message}" if where else message
    return error_response(400, message, code="invalid_value", param=where or None)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error")


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    e = translate(exc)
    return error_response(e.status, e.message, e.type, e.code, e.headers)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
ERROR_HANDLERS: dict[int | type[Exception], Handler] = {
    RequestValidationError: invalid_request,
    StarletteHTTPException: http_error,
    APIError: api_error,
    Exception: internal_error,
}


# --- the app -----------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The frontend starts (tokenizer, replicas, reaper) before the first request."""
    frontend: Frontend = app.state.frontend
    await frontend.start()
    try:
        yield
    finally:
        await frontend.stop()


def create_app(frontend: Frontend) -> FastAPI:
    app = FastAPI(title="Autellix", lifespan=lifespan, exception_handlers=ERROR_HANDLERS)
    app.state.frontend = frontend
    app.include_router(router)
    return app
