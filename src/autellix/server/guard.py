"""What every HTTP request passes before a route sees it: its API key (401) and the size
of its body (413), both answered in OpenAI's error shape. A pure ASGI middleware, so that
a request is refused before its body is read, and a body is never held past the limit."""

from __future__ import annotations

from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autellix.server.errors import error_response
from autellix.server.tenants import KeyRing


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        max_body_bytes: int | None,
        open_paths: Collection[str] = ("/health",),
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] not in self.open_paths:
            tenant = self.keys.tenant(header(scope, b"authorization"))
            if tenant is None:
                return await unauthorized()(scope, receive, send)
            scope.setdefault("state", {})["tenant"] = tenant
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and self.too_large(int(length)):
            return await too_large(self.max_body_bytes)(scope, receive, send)
        first = await self.read_body(receive)
        if first is None:
            return await too_large(self.max_body_bytes)(scope, receive, send)
        await self.app(scope, replay(first, receive), send)

    def too_large(self, size: int) -> bool:
        return self.max_body_bytes is not None and size > self.max_body_bytes

    async def read_body(self, receive: Receive) -> Message | None:
        """The whole body as one message (None: over the limit, and no more is read): a
        client may stream a body without a Content-Length, so the bytes are counted."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app will see it
                return message
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if self.too_large(size):
                return None
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def replay(first: Message, receive: Receive) -> Receive:
    """`first`, then whatever the client sends next (its disconnect)."""
    pending = [first]

    async def next_message() -> Message:
        return pending.pop() if pending else await receive()

    return next_message


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def unauthorized() -> JSONResponse:
    return error_response(
        401,
        "a valid API key is required: Authorization: Bearer KEY",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def too_large(limit: int | None) -> JSONResponse:
    return error_response(
        413, f"the request body is larger than {limit} bytes", code="request_too_large"
    )
