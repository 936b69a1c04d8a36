"""Tool calling on /v1/chat/completions: the tools into the prompt, a grammar that keeps the
model's calls well-formed, and the model's text back into OpenAI `tool_calls`.

The format is Hermes-style (`--tool-call-parser hermes`): each call is
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. A chat template that renders
tools itself (it mentions `tools`) gets them through transformers' `apply_chat_template`;
one that does not (the default model's) gets them in the system message, and the history's
tool calls and tool results as Hermes text. Every mode but `none` decodes under an xgrammar
structural tag: `auto` leaves text free and constrains only what follows `<tool_call>`;
`required` and a named function allow nothing but calls (one, unless parallel calls are on).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from autellix.engine.output_text import partial_stop
from autellix.engine.sampling_params import StructuredOutput
from autellix.server.protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice

OPEN, CLOSE = "<tool_call>", "</tool_call>"

SYSTEM = (
    "You may call one or more functions to answer. The functions, as JSON Schema:\n"
    "<tools>\n{tools}\n</tools>\n"
    "To call a function, reply with its name and arguments as a JSON object between "
    f"{OPEN} and {CLOSE} tags, one call per pair of tags:\n"
    f'{OPEN}\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n{CLOSE}'
)


@dataclass
class ToolUse:
    """A request's tools and how it lets the model use them."""

    tools: list[dict[str, Any]]
    choice: Literal["auto", "required", "named"]
    parallel: bool = True
    name: str | None = None  # the one function to call, when named

    @classmethod
    def of(cls, req: ChatCompletionRequest) -> ToolUse | None:
        """None when the model may not call tools (no tools, or tool_choice none)."""
        choice = req.tool_choice if req.tool_choice is not None else "auto"
        if not req.tools:
            if choice not in ("none", "auto"):
                raise ValueError("tool_choice needs tools")
            return None
        if choice == "none":
            return None
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
        if isinstance(choice, NamedToolChoice):
            name = choice.function.name
            if name not in [t.function.name for t in req.tools]:
                raise ValueError(f"tool_choice names {name!r}, which is not in tools")
            return cls(tools, "named", parallel=False, name=name)
        return cls(tools, choice, req.parallel_tool_calls is not False)

    @property
    def functions(self) -> list[dict[str, Any]]:
        return [t["function"] for t in self.tools if self.name in (None, t["function"]["name"])]

    def structured(self) -> StructuredOutput:
        """The grammar the model's output follows (an xgrammar structural tag)."""
        tags = [
            {
                "type": "tag",
                "begin": f'{OPEN}\n{{"name": {json.dumps(f["name"])}, "arguments": ',
                "content": {"type": "json_schema", "json_schema": parameters(f)},
                "end": f"}}\n{CLOSE}",
            }
            for f in self.functions
        ]
        single = self.choice == "named" or not self.parallel
        if self.choice == "auto":
            fmt: dict[str, Any] = {
                "type": "triggered_tags",
                "triggers": [OPEN],
                "tags": tags,
                "stop_after_first": single,
            }
        else:
            fmt = {
                "type": "tags_with_separator",
                "tags": tags,
                "separator": "\n",
                "at_least_one": True,
                "stop_after_first": single,
            }
        return StructuredOutput(
            "structural_tag", json.dumps({"type": "structural_tag", "format": fmt})
        )


def parameters(function: dict[str, Any]) -> dict[str, Any]:
    return function.get("parameters") or {"type": "object", "properties": {}}


# --- the prompt --------------------------------------------------------------------------


def template_renders_tools(tokenizer: Any) -> bool:
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def template_knows_developer(tokenizer: Any) -> bool:
    return "developer" in (getattr(tokenizer, "chat_template", None) or "")


def chat_messages(
    messages: list[ChatMessage], tools: ToolUse | None, native: bool, developer: bool = False
) -> list[dict[str, Any]]:
    """The messages as the chat template takes them (see the module's docstring). OpenAI's
    `developer` role is its newer name for `system`: a template that does not name it
    (`developer` False) gets a system message, not a turn of an unknown role."""
    if not developer:
        messages = [
            m.model_copy(update={"role": "system"}) if m.role == "developer" else m
            for m in messages
        ]
    if native:
        return [native_message(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = "\n".join(hermes_call(c) for c in m.tool_calls)
            out.append({"role": "assistant", "content": "\n".join(filter(None, [m.text(), calls]))})
        elif m.role == "tool":
            out.append(
                {"role": "user", "content": f"<tool_response>\n{m.text()}\n</tool_response>"}
            )
        else:
            out.append(named({"role": m.role, "content": m.text()}, m))
    if tools is not None:
        listed = "\n".join(json.dumps({"type": "function", "function": f}) for f in tools.functions)
        system = SYSTEM.replace("{tools}", listed)
        if out[0]["role"] in ("system", "developer"):
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{system}"}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def native_message(m: ChatMessage) -> dict[str, Any]:
    message: dict[str, Any] = {"role": m.role, "content": m.text()}
    if m.tool_calls:
        message["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": arguments(c)}} for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        message["tool_call_id"] = m.tool_call_id
    return named(message, m)


def named(message: dict[str, Any], m: ChatMessage) -> dict[str, Any]:
    """A message's `name` goes to the template, as vLLM passes it (most templates ignore it)."""
    return message if m.name is None else {**message, "name": m.name}


def arguments(call: dict[str, Any]) -> Any:
    args = call["function"].get("arguments") or "{}"
    try:
        return json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError:
        return args


def hermes_call(call: dict[str, Any]) -> str:
    body = {"name": call["function"]["name"], "arguments": arguments(call)}
    return f"{OPEN}\n{json.dumps(body)}\n{CLOSE}"


# --- the model's output ------------------------------------------------------------------


def tool_call(block: str) -> dict[str, Any]:
    """One `<tool_call>` body as an OpenAI tool call (ValueError when it is not one)."""
    body = json.loads(block)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ValueError("a tool call is a JSON object with a name")
    args = body.get("arguments", body.get("parameters", {}))
    return openai_call(body["name"], json.dumps(args))


def openai_call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


# a call's beginning, as the grammar writes it: its name, then its arguments so far
CALL_HEAD = re.compile(
    r'\s*\{\s*"name":\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments":\s*(.*)', re.DOTALL
)


def unclosed_call(block: str) -> dict[str, Any] | None:
    """The tool call of a block the answer ended in before its closing tag (max_tokens or
    a stop cut it): whole if only the tag was cut, else its name with the arguments as far
    as written (as OpenAI returns a call cut by length), None before its name is whole.
    Never its markup as text: the client asked for calls."""
    try:
        return tool_call(block[: len(block) - partial_stop(block, [CLOSE])])
    except ValueError:
        pass
    head = CALL_HEAD.match(block)
    return None if head is None else openai_call(json.loads(head[1]), head[2].rstrip())


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool calls) of a whole answer. The content is what comes before the first
    call, plus any closed call that does not parse, as text; text between and after calls
    is dropped. A call the answer ends in before it closes is `unclosed_call`'s."""
    head, opened, rest = text.partition(OPEN)
    if not opened:
        return text, []
    content, calls = head, []
    for chunk in rest.split(OPEN):
        block, closed, _ = chunk.partition(CLOSE)
        if not closed:
            if (call := unclosed_call(block)) is not None:
                calls.append(call)
            continue
        try:
            calls.append(tool_call(block))
        except ValueError:
            content += OPEN + block + closed
    return content.strip() or None, calls


@dataclass
class ToolCallStream:
    """A streamed answer as `parse` reads it: content deltas until the first call, then
    each call whole as soon as it closes (an index per call; name and id sent once), a
    call that does not parse as content."""

    text: str = ""
    sent: int = 0  # characters of `text` handled
    in_call: bool = False
    calls: int = 0
    opened: bool = False  # a call has begun: no more content

    def feed(self, new_text: str, final: bool) -> tuple[str, list[dict[str, Any]]]:
        """The content to send now and the tool calls completed by `new_text`."""
        self.text += new_text
        content, calls = "", []
        while True:
            rest = self.text[self.sent :]
            if self.in_call:  # a call ends at its closing tag or where the next begins
                ends = [i for i in (rest.find(CLOSE), rest.find(OPEN)) if i >= 0]
                if not ends and not final:
                    break
                block = rest[: min(ends)] if ends else rest
                closed = CLOSE if rest.startswith(CLOSE, len(block)) else ""
                try:
                    call = tool_call(block) if closed else unclosed_call(block)
                    if call is not None:
                        calls.append({"index": self.calls, **call})
                        self.calls += 1
                except ValueError:  # a broken call is given back as text
                    content += OPEN + block + closed
                self.sent += len(block) + len(closed)
                self.in_call = False
                if not ends:
                    break
            else:
                head, opened, _ = rest.partition(OPEN)
                if not opened:
                    keep = 0 if final else partial_stop(rest, [OPEN])
                    if not self.opened:
                        content += rest[: len(rest) - keep]
                    self.sent += len(rest) - keep
                    break
                if not self.opened:
                    content += head
                self.sent += len(head) + len(OPEN)
                self.in_call = self.opened = True
        return content, calls
