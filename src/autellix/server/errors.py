"""Errors as OpenAI-shaped JSON, with the right status for each failure."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from autellix.engine.llm_engine import CallError
from autellix.programs import ProgramEnded
from autellix.server.frontend import Draining, Overloaded, Unavailable
from autellix.server.limits import TooMany
from autellix.server.protocol import error_body
from autellix.server.replica import ReplicaDied


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers, self.param = headers, param


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    body = error_body(message, type_, code, param)
    return JSONResponse(body, status_code=status, headers=headers)


def translate(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, CallError | ValueError | ProgramEnded):
        return APIError(400, str(exc))
    if isinstance(exc, Overloaded):
        return APIError(429, str(exc), "rate_limit_error", headers={"Retry-After": "1"})
    if isinstance(exc, TooMany):
        return APIError(429, str(exc), "rate_limit_error", exc.code, {"Retry-After": "1"})
    if isinstance(exc, Unavailable | ReplicaDied):
        code = "draining" if isinstance(exc, Draining) else None
        return APIError(503, str(exc), "service_unavailable", code, {"Retry-After": "1"})
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")
