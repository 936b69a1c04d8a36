"""The SDK: an agent program as an Autellix program.

    with autellix.Program("http://127.0.0.1:8000/v1") as program:
        reply = program.client.chat.completions.create(model=..., messages=...)
        branch = program.thread()          # a parallel branch: its calls carry a thread id

A session starts on entry and ends on exit, also when the body raises. `client` is
the official openai client with the program's id in every call's headers. `kind` names
the program's class (programs of one kind are expected to be of similar size; the
Gittins policy learns each kind's sizes).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai

PROGRAM_HEADER = "X-Autellix-Program"
THREAD_HEADER = "X-Autellix-Thread"
EXPECT_RETURN_HEADER = "X-Autellix-Expect-Return"


def expect_return_headers(seconds: float) -> dict[str, str]:
    if not seconds >= 0:
        raise ValueError("expect_return: seconds >= 0")
    return {EXPECT_RETURN_HEADER: repr(float(seconds))}


class _Session:
    def __init__(
        self, base_url: str, api_key: str, program_id: str | None, kind: str | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.requested_id = program_id
        self.kind = kind
        self.id: str = ""

    def _start_body(self) -> dict[str, Any]:
        body = {"program_id": self.requested_id, "kind": self.kind}
        return {k: v for k, v in body.items() if v is not None}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


class Program(_Session):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str = "EMPTY",
        program_id: str | None = None,
        kind: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, program_id, kind)
        self._http = httpx.Client(headers=self._headers(), timeout=30)
        self._client_kwargs = client_kwargs
        self.client: openai.OpenAI

    def __enter__(self) -> Program:
        r = self._http.post(f"{self.base_url}/programs", json=self._start_body())
        r.raise_for_status()
        self.id = r.json()["id"]
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            default_headers={PROGRAM_HEADER: self.id},
            **self._client_kwargs,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._http.delete(f"{self.base_url}/programs/{self.id}")
        finally:
            self.client.close()
            self._http.close()

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
        r = self._http.get(f"{self.base_url}/programs/{self.id}")
        r.raise_for_status()
        return r.json()


class AsyncProgram(_Session):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str = "EMPTY",
        program_id: str | None = None,
        kind: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, program_id, kind)
        self._http = httpx.AsyncClient(headers=self._headers(), timeout=30)
        self._client_kwargs = client_kwargs
        self.client: openai.AsyncOpenAI

    async def __aenter__(self) -> AsyncProgram:
        r = await self._http.post(f"{self.base_url}/programs", json=self._start_body())
        r.raise_for_status()
        self.id = r.json()["id"]
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            default_headers={PROGRAM_HEADER: self.id},
            **self._client_kwargs,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._http.delete(f"{self.base_url}/programs/{self.id}")
        finally:
            await self.client.close()
            await self._http.aclose()

    def thread(self, thread_id: str | None = None) -> openai.AsyncOpenAI:
        return self.client.with_options(
            default_headers={THREAD_HEADER: thread_id or uuid.uuid4().hex[:12]}
        )

    def expecting_return(self, seconds: float) -> openai.AsyncOpenAI:
        """As `Program.expecting_return`."""
        return self.client.with_options(default_headers=expect_return_headers(seconds))

    async def info(self) -> dict[str, Any]:
        r = await self._http.get(f"{self.base_url}/programs/{self.id}")
        r.raise_for_status()
        return r.json()
