"""The HTTP API: OpenAI's chat and completions routes, program sessions, health, metrics.

The routes live on `router` and take the frontend as a dependency (`FrontendDep`, read
from `app.state.frontend`) and the caller's tenant (`TenantDep`, from its key);
`create_app` wires the router, the guard (keys, body size), the frontend's lifespan and
the OpenAI-shaped error handlers into an app.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.engine.llm_engine import CallError
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.engine.structured_output import GrammarError
from autellix.programs import kind_of, new_program_name, program_key
from autellix.server.errors import APIError, error_response, translate
from autellix.server.frontend import Frontend, Unavailable
from autellix.server.guard import Guard
from autellix.server.limits import NeverFits, Ticket, TooMany
from autellix.server.protocol import (
    NOT_SERVED,
    ChatCompletionRequest,
    CompletionRequest,
    ProgramCreate,
    ProgramDeleted,
    ProgramList,
    ProgramView,
    SamplingFields,
    new_id,
    now,
    program_name,
)
from autellix.server.responses import ChatRender, TextRender, collect, sse
from autellix.server.tenants import Tenant
from autellix.server.tools import (
    ToolUse,
    chat_messages,
    template_knows_developer,
    template_renders_tools,
)

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"
KIND_HEADER = "X-Autellix-Kind"
EXPECT_RETURN_HEADER = "X-Autellix-Expect-Return"  # seconds until the program calls again


# async: FastAPI runs a plain function dependency in its thread pool, a hop per request
async def get_frontend(request: Request) -> Frontend:
    return request.app.state.frontend


async def get_tenant(request: Request) -> Tenant:
    return request.state.tenant  # set by the Guard, from the request's key


FrontendDep = Annotated[Frontend, Depends(get_frontend)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
router = APIRouter()


# --- health, models, metrics -------------------------------------------------------------


@router.get("/health")
async def health(frontend: FrontendDep) -> JSONResponse:
    replicas = [
        {"id": r.engine_id, "alive": r.alive, "in_flight": r.in_flight} for r in frontend.replicas
    ]
    ok = bool(frontend.live_replicas) and not frontend.draining
    status = "draining" if frontend.draining else "ok" if ok else "unavailable"
    return JSONResponse({"status": status, "replicas": replicas}, status_code=200 if ok else 503)


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
async def start_program(request: Request, frontend: FrontendDep, tenant: TenantDep) -> ProgramView:
    raw = await request.body()  # optional (empty: all defaults), so parsed here
    try:
        body = ProgramCreate.model_validate_json(raw) if raw.strip() else ProgramCreate()
    except ValidationError as exc:  # answered as FastAPI's own body errors are
        raise RequestValidationError(exc.errors(include_url=False)) from None
    try:
        program = frontend.start_program(tenant, body.program_id, body.kind)
        return ProgramView.of(program, frontend.epoch)
    except ValueError as exc:
        raise APIError(409, str(exc), code="program_exists") from None
    except (TooMany, Unavailable) as exc:
        raise translate(exc) from None


@router.get("/v1/programs")
async def list_programs(
    frontend: FrontendDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> ProgramList:
    """The caller's programs only, a page at a time."""
    page, has_more = frontend.table.page(tenant.name, limit, after)
    reaped = frontend.table.reaped_by[tenant.name]
    return ProgramList.of(page, has_more, reaped, frontend.epoch)


def own_program(frontend: Frontend, tenant: Tenant, program_id: str) -> str:
    """The table's id of the caller's program `program_id`; another tenant's is a 404 too."""
    key = program_key(tenant.name, program_id)
    if key not in frontend.table:
        raise APIError(404, f"unknown program: {program_id!r}", code="program_not_found")
    return key


# ids may hold "/": a path parameter that ends at the next "/" would never find them
@router.get("/v1/programs/{program_id:path}")
async def get_program(program_id: str, frontend: FrontendDep, tenant: TenantDep) -> ProgramView:
    program = frontend.table.get(own_program(frontend, tenant, program_id))
    return ProgramView.of(program, frontend.epoch)


@router.delete("/v1/programs/{program_id:path}")
async def end_program(program_id: str, frontend: FrontendDep, tenant: TenantDep) -> ProgramDeleted:
    frontend.end_program(own_program(frontend, tenant, program_id))
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
    try:
        return SamplingParams(
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            # each choice its own stream; past the largest seed, from the smallest again
            seed=None if req.seed is None else (req.seed + index) % 2**63,
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
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            repetition_penalty=req.repetition_penalty,
            logit_bias=tuple((req.logit_bias or {}).items()),
        )
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def check_model(frontend: Frontend, req: SamplingFields) -> None:
    """A model this server does not serve is a 404, as OpenAI and vLLM answer it."""
    if req.model != frontend.model_name:
        raise APIError(
            404,
            f"model {req.model!r} does not exist here; this server has {frontend.model_name!r}",
            code="model_not_found",
            param="model",
        )


def admit(
    frontend: Frontend,
    inputs: list[list[int]],
    params: list[SamplingParams],
    under_way: bool = False,
) -> None:
    """Refuse calls that can never be served (400) or that find no room now (429/503);
    `under_way`: their program has called before (Frontend.check_capacity)."""
    for p, sp in zip(inputs, params, strict=True):
        try:
            frontend.validate(len(p), sp)
        except CallError as exc:
            raise APIError(400, str(exc), code=exc.code) from None
    try:
        frontend.check_grammar(params[0].structured)  # the same for every call of a request
    except GrammarError as exc:
        raise APIError(400, str(exc), code="invalid_schema") from None
    try:
        frontend.check_capacity(len(inputs), under_way)
    except Exception as exc:
        raise translate(exc) from None


def program_of(
    frontend: Frontend, request: Request, req: SamplingFields, tenant: Tenant
) -> tuple[str, str | None, bool]:
    """(the table's program id, thread id, anonymous): a call without a program is a
    program of one. The program need not exist yet (`start_calls` starts it)."""
    name = request.headers.get(PROGRAM_HEADER) or req.program_id
    thread_id = request.headers.get(THREAD_HEADER) or req.thread_id
    if thread_id is not None and not 1 <= len(thread_id) <= 256:
        raise APIError(400, "thread_id: 1 to 256 characters", code="invalid_value")
    if name is None:
        return program_key(tenant.name, new_program_name()), thread_id, True
    try:
        program_id = program_key(tenant.name, program_name(name))
    except ValueError as exc:
        raise APIError(400, f"program_id: {exc}", code="invalid_value") from None
    program = frontend.table.programs.get(program_id)
    if program is not None and program.ended:
        raise APIError(400, f"program {name!r} has ended", code="program_ended")
    return program_id, thread_id, False


def expected_return(request: Request) -> float | None:
    """The client's hint of how soon after this call its program calls again (seconds)."""
    value = request.headers.get(EXPECT_RETURN_HEADER)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise APIError(
            400,
            f"{EXPECT_RETURN_HEADER}: a number of seconds >= 0, not {value!r}",
            code="invalid_value",
        )
    return seconds


def start_calls(frontend: Frontend, tenant: Tenant, program_id: str, calls: int) -> Ticket:
    """Count the calls against the caps, and start their program if it is new (429s)."""
    try:
        ticket = frontend.admit_calls(tenant, program_id, calls)
    except (TooMany, NeverFits) as exc:
        raise translate(exc) from None
    try:
        frontend.ensure_program(tenant, program_id)
    except (TooMany, Unavailable) as exc:
        ticket.release()
        raise translate(exc) from None
    return ticket


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
    tenant = request.state.tenant
    program_id, thread_id, anonymous = program_of(frontend, request, req, tenant)
    program = frontend.table.programs.get(program_id)
    admit(frontend, inputs, params, program is not None and program.first_arrival is not None)
    hint = expected_return(request)  # checked even where no program can use it
    expect_return = None if anonymous else hint
    ticket = start_calls(frontend, tenant, program_id, len(inputs))
    kind = request.headers.get(KIND_HEADER) or kind
    streams = [
        frontend.stream(p, sp, program_id, thread_id, kind, expect_return, anonymous)
        for p, sp in zip(inputs, params, strict=True)
    ]
    rid, created = new_id(render.prefix), now()

    def finish() -> None:
        if ticket.released:
            return
        ticket.release()
        if anonymous and program_id in frontend.table:
            frontend.end_program(program_id, release=False)

    if req.stream:
        events = sse(render, streams, rid, created, req.n, req.include_usage, finish)
        # a stream that never starts (the client left first) never runs its finally
        weakref.finalize(events, finish).atexit = False
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
    check_model(frontend, req)
    try:
        tools = ToolUse.of(req)
    except ValueError as exc:
        raise APIError(400, str(exc), code="invalid_value", param="tool_choice") from None
    try:
        native = template_renders_tools(frontend.tokenizer)
        developer = template_knows_developer(frontend.tokenizer)
        messages = chat_messages(req.messages, tools, native, developer)
        template_tools = tools.tools if tools is not None and native else None
        prompt = await frontend.off_loop(frontend.encode_chat, messages, template_tools)
    except Exception as exc:
        raise APIError(400, f"messages: {exc}") from None
    max_tokens = req.max_completion_tokens or req.max_tokens
    render = ChatRender(
        frontend.model_name, frontend.tokenizer, tools, req.return_tokens_as_token_ids
    )
    asked = [
        tools.structured() if tools is not None else None,
        req.response_format.structured() if req.response_format is not None else None,
        vllm_structured(req),
    ]
    if sum(a is not None for a in asked) > 1:
        raise APIError(400, "tools, response_format and structured_outputs exclude each other")
    structured = next((a for a in asked if a is not None), None)
    kind = kind_of(messages)
    return await run(frontend, request, req, [prompt], max_tokens, render, kind, structured)


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, frontend: FrontendDep) -> Response:
    check_model(frontend, req)
    try:
        prompts = [await frontend.off_loop(frontend.encode, p) for p in req.prompts()]
    except Exception as exc:
        raise APIError(400, f"prompt: {exc}") from None
    render = TextRender(frontend.model_name, frontend.tokenizer, req.return_tokens_as_token_ids)
    structured = vllm_structured(req)
    return await run(frontend, request, req, prompts, req.max_tokens, render, None, structured)


def vllm_structured(req: SamplingFields) -> StructuredOutput | None:
    if req.structured_outputs is None:
        return None
    try:
        return req.structured_outputs.structured()
    except ValueError as exc:
        raise APIError(400, f"structured_outputs: {exc}") from None


# --- errors, in OpenAI's shape -----------------------------------------------------------


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that does not parse or validate: 400 naming the first error's field (param)."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return error_response(400, "the request body is not valid JSON", code="invalid_json")
    where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query"))
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    if not where and message.endswith(NOT_SERVED):  # refused by the body's own validator
        return error_response(400, message, code="invalid_value", param=message.split()[0])
    message = f"{where}: {message}" if where else message
    return error_response(400, message, code="invalid_value", param=where or None)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error")


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers, exc.param)


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
    """The frontend starts (tokenizer, replicas, reaper) before the first request, unless
    the server has started it (`drain.DrainingServer`)."""
    frontend: Frontend = app.state.frontend
    if not frontend.started:
        await frontend.start()
    try:
        yield
    finally:
        await frontend.stop()


def create_app(frontend: Frontend) -> FastAPI:
    app = FastAPI(title="Autellix", lifespan=lifespan, exception_handlers=ERROR_HANDLERS)
    app.state.frontend = frontend
    app.include_router(router)
    config = frontend.config
    open_paths = ["/health"] if config.metrics_need_key else ["/health", "/metrics"]
    app.add_middleware(
        Guard, keys=frontend.keys, max_body_bytes=config.max_body_bytes, open_paths=open_paths
    )
    return app
