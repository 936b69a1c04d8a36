"""The OpenAI wire format (the parts we serve), plus Autellix's extensions."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autellix.programs import Call, Program


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# Fields of OpenAI's API that this server does not serve, each with the test of whether a
# request asks for it: such a request is refused (400), never answered as if it had not.
UNSERVED: dict[str, Any] = {
    "tools": bool,
    "functions": bool,
    "tool_choice": lambda v: v not in (None, "none"),
    "function_call": lambda v: v not in (None, "none"),
    "response_format": lambda v: not (isinstance(v, dict) and v.get("type") == "text"),
    "logprobs": lambda v: v not in (None, False),
    "top_logprobs": lambda v: v not in (None, 0),
    "logit_bias": bool,
    "frequency_penalty": bool,
    "presence_penalty": bool,
    "echo": bool,
    "suffix": bool,
    "best_of": lambda v: v not in (None, 1),
    "audio": bool,
    "prediction": bool,
}


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _served(cls, body: Any) -> Any:
        if isinstance(body, dict):
            for name, asks in UNSERVED.items():
                if body.get(name) is not None and asks(body[name]):
                    raise ValueError(f"{name} is not supported by this server")
        return body

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # extensions (the openai client sends them through extra_body)
    top_k: int = Field(default=0, ge=-1)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    include_stop_str_in_output: bool = False
    stop_token_ids: list[int] | None = None
    program_id: str | None = Field(default=None, min_length=1, max_length=256)
    thread_id: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or not all(stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise ValueError("the prompt is empty")
        # pydantic parsed one of the list forms: all ids, or all texts / id lists
        if all(isinstance(x, int) for x in p):
            return [list(cast(list[int], p))]
        return list(cast(list[str | list[int]], p))


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None


class ProgramCreate(BaseModel):
    """The body of POST /v1/programs (an empty body is all defaults)."""

    model_config = ConfigDict(extra="forbid")

    program_id: str | None = Field(default=None, min_length=1, max_length=256)
    kind: str | None = Field(default=None, min_length=1, max_length=256)


class CallView(BaseModel):
    """An active call of a program, as the program routes show it."""

    id: str
    thread_id: str | None
    arrival: float
    engine: int | None
    waiting: float
    service: float

    @classmethod
    def of(cls, c: Call) -> CallView:
        return cls(
            id=c.call_id,
            thread_id=c.thread_id,
            arrival=c.arrival,
            engine=c.engine,
            waiting=c.waiting,
            service=c.service,
        )


class ProgramView(BaseModel):
    """A program in the process table, as the program routes show it."""

    id: str
    object: Literal["program"] = "program"
    kind: str | None
    started: float
    ended: bool
    service: float
    critical_path: float
    waiting: float
    completed_calls: int
    engines: list[int]
    pinned_engine: int | None
    first_arrival: float | None
    last_arrival: float | None
    last_completion: float | None
    calls: list[CallView]

    @classmethod
    def of(cls, p: Program) -> ProgramView:
        return cls(
            id=p.program_id,
            kind=p.kind,
            started=p.started,
            ended=p.ended,
            service=p.service,
            critical_path=p.critical_path,
            waiting=p.waiting,
            completed_calls=p.completed_calls,
            engines=sorted(p.engines),
            pinned_engine=p.pinned_engine,
            first_arrival=p.first_arrival,
            last_arrival=p.last_arrival,
            last_completion=p.last_completion,
            calls=[CallView.of(c) for c in p.calls.values()],
        )


class ProgramList(BaseModel):
    object: Literal["list"] = "list"
    reaped: int  # programs reaped for idleness since the server started
    data: list[ProgramView]


class ProgramDeleted(BaseModel):
    id: str
    object: Literal["program"] = "program"
    deleted: bool = True


def now() -> int:
    return int(time.time())


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
