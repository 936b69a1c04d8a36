"""The OpenAI wire format (the parts we serve), plus Autellix's extensions."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from autellix.engine.sampling_params import StructuredOutput
from autellix.programs import Call, Program


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def program_name(program_id: str) -> str:
    """A client's program id, from a body or a header: 1-256 printable ASCII characters
    (the table's ids use a control character; a header carries ASCII alone, and an id
    started in a body must be one a header can name)."""
    if not 1 <= len(program_id) <= 256:
        raise ValueError("a program id has 1 to 256 characters")
    if not (program_id.isascii() and program_id.isprintable()):
        raise ValueError("a program id is printable ASCII (it travels in a header)")
    return program_id


ProgramId = Annotated[str, AfterValidator(program_name)]


# Fields of OpenAI's API that this server does not serve, each with the test of whether a
# request asks for it: such a request is refused (400), never answered as if it had not.
NOT_SERVED = " is not supported by this server"  # after the field's name
UNSERVED: dict[str, Any] = {
    "functions": bool,
    "function_call": lambda v: v not in (None, "none"),
    "echo": bool,
    "suffix": bool,
    "best_of": lambda v: v not in (None, 1),
    "audio": bool,
    "prediction": bool,
    "modalities": lambda v: v not in (None, ["text"]),
    "reasoning_effort": lambda v: v is not None,
    "verbosity": lambda v: v is not None,
    "web_search_options": lambda v: v is not None,
    "moderation": lambda v: v is not None,
}
# Fields that are documented no-ops here: they describe the caller or OpenAI's own
# storage and billing, none of which changes what the model says.
NO_OPS = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",  # prompts share cached prefixes here by content, whatever the key
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)


class StructuredOutputsParams(BaseModel):
    """vLLM's `structured_outputs` field, the kinds served here (one per call)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    json_schema: dict[str, Any] | str | None = Field(default=None, alias="json")
    json_object: bool | None = None
    structural_tag: str | None = None
    # JSON is always compiled without free whitespace here (see structured_output.py)
    disable_any_whitespace: bool = False

    def structured(self) -> StructuredOutput:
        kinds = {
            "json_schema": self.json_schema is not None,
            "json_object": bool(self.json_object),
            "structural_tag": self.structural_tag is not None,
        }
        if sum(kinds.values()) != 1:
            raise ValueError("structured_outputs takes one of json, json_object, structural_tag")
        if self.json_object:
            return StructuredOutput("json_object")
        if self.structural_tag is not None:
            return StructuredOutput("structural_tag", self.structural_tag)
        schema = self.json_schema
        return StructuredOutput(
            "json_schema", schema if isinstance(schema, str) else json.dumps(schema)
        )


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _served(cls, body: Any) -> Any:
        """Refuse what is not served, by name; unknown fields too, never ignore them."""
        if isinstance(body, dict):
            for name, asks in UNSERVED.items():
                if body.get(name) is not None and asks(body[name]):
                    raise ValueError(f"{name}{NOT_SERVED}")
            for name in body.keys() - cls.model_fields.keys() - UNSERVED.keys() - NO_OPS:
                raise ValueError(f"{name}{NOT_SERVED}")
        return body

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)  # any int64, as vLLM
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # extensions (the openai client sends them through extra_body)
    top_k: int = Field(default=0, ge=-1)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    include_stop_str_in_output: bool = False
    stop_token_ids: list[int] | None = None
    logprobs: Any = None  # a bool on chat, a number of alternatives on completions
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)  # vLLM's extension
    # vLLM's: the queue the call enters (lower first), for a frontend that ranks programs
    priority: int | None = None  # any int, as vLLM; below 0 is the first queue, as 0
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)  # vLLM's
    logit_bias: dict[int, float] | None = None  # token id -> bias in [-100, 100]
    structured_outputs: StructuredOutputsParams | None = None  # vLLM's
    return_tokens_as_token_ids: bool = False  # vLLM's: logprobs' tokens as "token_id:N"
    program_id: ProgramId | None = None
    thread_id: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or not all(stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # include_obfuscation pads OpenAI's events against side channels: a no-op here
        for name in (v or {}).keys() - {"include_usage", "include_obfuscation"}:
            raise ValueError(f"stream_options.{name} is not supported by this server")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # the participant's name: given to the chat template
    tool_calls: list[dict[str, Any]] | None = None  # assistant: the calls it made
    tool_call_id: str | None = None  # tool: the call this message answers

    @model_validator(mode="after")
    def _tool_calls(self) -> ChatMessage:
        unknown = sorted(k for k, v in (self.model_extra or {}).items() if v is not None)
        if unknown:  # e.g. a message's audio or function_call: refused, never ignored
            raise ValueError(f"message field {unknown[0]} is not supported by this server")
        for call in self.tool_calls or []:
            f = call.get("function")
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ValueError("a tool call needs function.name")
        return self

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class Function(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # calls always follow the schema here (constrained decoding)


class Tool(BaseModel):
    type: Literal["function"]
    function: Function


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class JsonSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # the output always follows the schema here


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is json_schema")
        return self

    def structured(self) -> StructuredOutput | None:
        if self.type == "json_object":
            return StructuredOutput("json_object")
        if self.json_schema is not None:
            return StructuredOutput("json_schema", json.dumps(self.json_schema.schema_))
        return None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _chat_fields(self) -> ChatCompletionRequest:
        if self.logprobs not in (None, True, False):
            raise ValueError("logprobs is a boolean on chat completions")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        asks_format = self.response_format is not None and self.response_format.type != "text"
        if asks_format and self.tools and self.tool_choice != "none":
            raise ValueError("response_format cannot be combined with tools")
        return self

    @property
    def num_logprobs(self) -> int | None:
        """Alternatives per token, or None when the call returns no log-probabilities."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _completion_fields(self) -> CompletionRequest:
        if self.logprobs is not None and (
            isinstance(self.logprobs, bool)
            or not isinstance(self.logprobs, int)
            or not 0 <= self.logprobs <= 5
        ):
            raise ValueError("logprobs on completions is a number of alternatives in [0, 5]")
        if self.top_logprobs is not None:
            raise ValueError("top_logprobs is a chat field; completions take logprobs: N")
        return self

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

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

    program_id: ProgramId | None = None
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
    def of(cls, c: Call, epoch: float = 0.0) -> CallView:
        return cls(
            id=c.call_id,
            thread_id=c.thread_id,
            arrival=epoch + c.arrival,
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
    def of(cls, p: Program, epoch: float = 0.0) -> ProgramView:
        """`epoch`: the Unix time at which the table's clock read 0 (the routes show Unix
        times; the table keeps a monotonic clock's)."""

        def at(t: float | None) -> float | None:
            return None if t is None else epoch + t

        return cls(
            id=p.name,
            kind=p.kind,
            started=epoch + p.started,
            ended=p.ended,
            service=p.service,
            critical_path=p.critical_path,
            waiting=p.waiting,
            completed_calls=p.completed_calls,
            engines=sorted(p.engines),
            pinned_engine=p.pinned_engine,
            first_arrival=at(p.first_arrival),
            last_arrival=at(p.last_arrival),
            last_completion=at(p.last_completion),
            calls=[CallView.of(c, epoch) for c in p.calls.values()],
        )


class ProgramList(BaseModel):
    """A page of the caller's programs, in order of id (`after`: the last id of the page
    before), as OpenAI's list routes page."""

    object: Literal["list"] = "list"
    reaped: int  # the caller's programs reaped for idleness since the server started
    data: list[ProgramView]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(
        cls, programs: list[Program], has_more: bool, reaped: int, epoch: float = 0.0
    ) -> ProgramList:
        data = [ProgramView.of(p, epoch) for p in programs]
        first, last = (data[0].id, data[-1].id) if data else (None, None)
        return cls(reaped=reaped, data=data, first_id=first, last_id=last, has_more=has_more)


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
