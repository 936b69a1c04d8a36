"""The SDK: an agent program as an Autellix program.

    with autellix.Program("http://127.0.0.1:8000/v1") as program:
        reply = program.client.chat.completions.create(model=..., messages=...)
        branch = program.thread()          # a parallel branch: its calls carry a thread id

A session starts on entry and ends on exit. `client` is the official openai client with
the program's id in every call's headers; the program's own requests (start, info, end)
go through it too, so their errors are openai's (`openai.NotFoundError`, ...) with the
server's message. The block's end waits for the program's calls still in flight (a
stream until it is read or closed), as a task group waits for its tasks, then ends the
program; when the block raises, it ends the program at once, and a failure to end it
does not hide the block's own exception. `kind` names the program's class (programs of
one kind are expected to be of similar size; the Gittins policy learns each kind's
sizes). The API key is `api_key`, else $OPENAI_API_KEY, else "EMPTY" (an open server).
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import threading
import time
import uuid
import warnings
from typing import Any

import openai
from openai import DEFAULT_CONNECTION_LIMITS

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"
EXPECT_RETURN_HEADER = "X-Autellix-Expect-Return"
WAIT_WARNING = 10.0  # seconds the block's end waits for calls in flight before it says so

# the HTTP library the openai client is built on: httpx, or httpx2 in its newer releases
http: Any = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])


def expect_return_headers(seconds: float) -> dict[str, str]:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"expecting_return: a finite number of seconds >= 0, not {seconds!r}")
    return {EXPECT_RETURN_HEADER: repr(float(seconds))}


def check_program_id(program_id: str | None) -> None:
    """As the server holds them (they travel in a header): 1-256 printable ASCII."""
    if program_id is not None and not (
        1 <= len(program_id) <= 256 and program_id.isascii() and program_id.isprintable()
    ):
        raise ValueError(f"program_id: 1 to 256 printable ASCII characters, not {program_id!r}")


class _InFlight:
    """The requests of a program's HTTP client not yet over: a response counts until its
    body is read or closed."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


class _Counted(http.BaseTransport):
    def __init__(self, calls: _InFlight) -> None:
        self.inner = http.HTTPTransport(limits=DEFAULT_CONNECTION_LIMITS)
        self.calls = calls

    def handle_request(self, request: http.Request) -> http.Response:
        self.calls.add(1)
        try:
            response = self.inner.handle_request(request)
        except BaseException:
            self.calls.add(-1)
            raise
        response.stream = _Body(response.stream, self.calls)
        return response

    def close(self) -> None:
        self.inner.close()


class _AsyncCounted(http.AsyncBaseTransport):
    def __init__(self, calls: _InFlight) -> None:
        self.inner = http.AsyncHTTPTransport(limits=DEFAULT_CONNECTION_LIMITS)
        self.calls = calls

    async def handle_async_request(self, request: http.Request) -> http.Response:
        self.calls.add(1)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException:
            self.calls.add(-1)
            raise
        response.stream = _Body(response.stream, self.calls)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Body(http.SyncByteStream, http.AsyncByteStream):
    """A response's body, whose close ends its request's count (once)."""

    def __init__(self, stream: Any, calls: _InFlight) -> None:
        self.stream, self.calls, self.open = stream, calls, True

    def __iter__(self):
        yield from self.stream

    async def __aiter__(self):
        async for chunk in self.stream:
            yield chunk

    def _ended(self) -> None:
        if self.open:
            self.open = False
            self.calls.add(-1)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self._ended()

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self._ended()


class _Session:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        program_id: str | None,
        kind: str | None,
        client_kwargs: dict[str, Any],
    ) -> None:
        check_program_id(program_id)
        if "http_client" in client_kwargs:
            raise ValueError("Program makes its own http_client (it counts the calls in flight)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.requested_id = program_id
        self.kind = kind
        self.id: str = ""
        self.in_flight = _InFlight()
        self._client_kwargs = client_kwargs
        self._ended = self._warned = False

    def _start_body(self) -> dict[str, Any]:
        body = {"program_id": self.requested_id, "kind": self.kind}
        return {k: v for k, v in body.items() if v is not None}

    def _path(self) -> str:
        return f"/programs/{self.id}"

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError(f"program {self.id!r} has ended (its block is over)")

    def _check_new(self) -> None:
        if self.id:
            raise RuntimeError(f"program {self.id!r} was entered once already: make a new one")

    def _still_waiting(self, since: float) -> bool:
        """Whether calls are in flight at the block's end; after WAIT_WARNING seconds of
        waiting, a warning (once) that says what the block waits for."""
        if self.in_flight.count and not self._warned and time.monotonic() - since > WAIT_WARNING:
            self._warned = True
            warnings.warn(
                f"program {self.id!r}: the block's end waits for {self.in_flight.count} call(s)"
                " in flight; a stream waits until it is read or closed",
                stacklevel=3,
            )
        return self.in_flight.count > 0


class Program(_Session):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        program_id: str | None = None,
        kind: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, program_id, kind, client_kwargs)
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            http_client=openai.DefaultHttpxClient(transport=_Counted(self.in_flight)),
            **client_kwargs,
        )

    @property
    def client(self) -> openai.OpenAI:
        """The openai client whose calls are this program's."""
        self._check_open()
        return self._client

    def __enter__(self) -> Program:
        self._check_new()
        started = self._client.post("/programs", body=self._start_body(), cast_to=http.Response)
        self.id = started.json()["id"]
        self._client = self._client.with_options(default_headers={PROGRAM_HEADER: self.id})
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            since = time.monotonic()
            while exc_type is None and self._still_waiting(since):
                time.sleep(0.01)
            self._client.delete(self._path(), cast_to=http.Response)
        except openai.NotFoundError:
            pass  # the server has ended it already (reaped when idle past --program-ttl)
        except openai.APIError as exc:
            if exc_type is None:
                raise
            warnings.warn(f"program {self.id!r} not ended: {exc}", stacklevel=2)
        finally:
            self._ended = True
            self._client.close()

    def thread(self, thread_id: str | None = None) -> openai.OpenAI:
        """A client for a parallel branch of this program."""
        return self.client.with_options(
            default_headers={THREAD_HEADER: thread_id or uuid.uuid4().hex[:12]}
        )

    def expecting_return(self, seconds: float) -> openai.OpenAI:
        """A client whose calls tell the server that this program calls again about
        `seconds` after each (a tool's expected run time): the server may keep the
        program's KV cache on the device that long (--kv-retention)."""
        return self.client.with_options(default_headers=expect_return_headers(seconds))

    def info(self) -> dict[str, Any]:
        """The program's row in the server's process table."""
        return self.client.get(self._path(), cast_to=http.Response).json()


class AsyncProgram(_Session):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        program_id: str | None = None,
        kind: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, program_id, kind, client_kwargs)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            http_client=openai.DefaultAsyncHttpxClient(transport=_AsyncCounted(self.in_flight)),
            **client_kwargs,
        )

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The openai client whose calls are this program's."""
        self._check_open()
        return self._client

    async def __aenter__(self) -> AsyncProgram:
        self._check_new()
        body = self._start_body()
        started = await self._client.post("/programs", body=body, cast_to=http.Response)
        self.id = started.json()["id"]
        self._client = self._client.with_options(default_headers={PROGRAM_HEADER: self.id})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            since = time.monotonic()
            while exc_type is None and self._still_waiting(since):
                await asyncio.sleep(0.01)
            await self._client.delete(self._path(), cast_to=http.Response)
        except openai.NotFoundError:
            pass  # as in Program.__exit__
        except openai.APIError as exc:
            if exc_type is None:
                raise
            warnings.warn(f"program {self.id!r} not ended: {exc}", stacklevel=2)
        finally:
            self._ended = True
            await self._client.close()

    def thread(self, thread_id: str | None = None) -> openai.AsyncOpenAI:
        return self.client.with_options(
            default_headers={THREAD_HEADER: thread_id or uuid.uuid4().hex[:12]}
        )

    def expecting_return(self, seconds: float) -> openai.AsyncOpenAI:
        """As `Program.expecting_return`."""
        return self.client.with_options(default_headers=expect_return_headers(seconds))

    async def info(self) -> dict[str, Any]:
        r = await self.client.get(self._path(), cast_to=http.Response)
        return r.json()
