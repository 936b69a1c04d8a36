"""Tool calls without a model: the prompt the tools make, the grammar that constrains the
model's calls, and the parsing of its answer, whole and streamed."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine.model import default_model_path, load_tokenizer
from autellix.engine.structured_output import StructuredOutputs
from autellix.server.protocol import ChatCompletionRequest, ChatMessage
from autellix.server.tools import (
    CLOSE,
    OPEN,
    ToolCallStream,
    ToolUse,
    chat_messages,
    parse,
    template_knows_developer,
    template_renders_tools,
)

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
ECHO = {"type": "function", "function": {"name": "echo"}}  # no parameters: any object


def request(**fields) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def call_text(name: str, args: dict) -> str:
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': args})}\n{CLOSE}"


# --- parsing ---------------------------------------------------------------------------


def test_parse_splits_content_and_calls() -> None:
    text = "Let me add.\n" + call_text("add", {"a": 1, "b": 2}) + "\n" + call_text("echo", {})
    content, calls = parse(text)
    assert content == "Let me add."
    assert [c["function"]["name"] for c in calls] == ["add", "echo"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_leaves_text_that_is_not_a_call() -> None:
    assert parse("no calls here") == ("no calls here", [])
    broken = f"{OPEN}\n{{not json}}\n{CLOSE}"
    assert parse(broken) == (broken, [])
    nameless = f'{OPEN}\n{{"arguments": {{}}}}\n{CLOSE}'
    assert parse(nameless) == (nameless, [])


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_short_is_a_call_never_markup(stream: bool) -> None:
    """An answer that max_tokens (or a stop) ends inside a call: the call, whole if only
    its closing tag was cut, else its name with the arguments as far as written (as OpenAI
    returns a call cut by length); nothing before its name is whole; never tag text."""

    def answer(text: str) -> tuple[str | None, list[tuple[str, str]]]:
        if stream:
            tool_stream = ToolCallStream()
            parts = [tool_stream.feed(text[i : i + 3], False) for i in range(0, len(text), 3)]
            parts.append(tool_stream.feed("", True))
            content = "".join(c for c, _ in parts) or None
            calls = [call for _, new in parts for call in new]
        else:
            content, calls = parse(text)
        return content, [(c["function"]["name"], c["function"]["arguments"]) for c in calls]

    whole = call_text("add", {"a": 1, "b": 2})
    for cut in (len(whole) - len(CLOSE) - 1, len(whole) - 3):  # the tag, or part of it, cut
        assert answer(whole[:cut]) == (None, [("add", '{"a": 1, "b": 2}')])
    assert answer(OPEN + '\n{"name": "add", "arguments": {"a": 1, "b"') == (
        None,
        [("add", '{"a": 1, "b"')],
    )
    assert answer(OPEN + '\n{"name": "ad') == (None, [])
    assert answer(OPEN) == (None, [])
    content, calls = answer("Sure.\n" + whole + "\n" + OPEN + '\n{"name": "echo", "argu')
    assert content is not None and content.strip() == "Sure." and calls[0][0] == "add"
    assert len(calls) == 1


texts = st.lists(
    st.one_of(
        st.text(alphabet="ab <>/_tolc", max_size=12),
        st.builds(call_text, st.sampled_from(["add", "echo"]), st.just({"a": 1, "b": 2})),
    ),
    max_size=5,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_streamed_answer_equals_the_whole_one(text: str, cuts: list[int]) -> None:
    """However the text is cut into deltas, the stream sends the same calls as the whole
    answer parses to, and never a character of a tag as content."""
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    stream, content, calls = ToolCallStream(), "", []
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        piece, new = stream.feed(text[a:b], final=i == len(points) - 2)
        content += piece
        calls += new
    if len(points) == 1:
        content, calls = stream.feed("", final=True)
    whole_content, whole_calls = parse(text)
    if OPEN not in text:  # no call: the text goes out as it is
        assert (content, calls) == (text, [])
    else:  # the same calls, and the same text before them and of calls that do not parse
        sent = [(c["function"]["name"], c["function"]["arguments"]) for c in calls]
        assert sent == [(c["function"]["name"], c["function"]["arguments"]) for c in whole_calls]
        assert [c["index"] for c in calls] == list(range(len(calls)))
        assert content.strip() == (whole_content or "")


def test_stream_holds_back_a_tag_that_may_be_starting() -> None:
    stream = ToolCallStream()
    assert stream.feed("Sure <tool", final=False) == ("Sure ", [])
    content, calls = stream.feed('_call>\n{"name": "echo", "arguments": {}}\n</tool_call>', False)
    assert content == "" and calls[0]["function"]["name"] == "echo"
    assert stream.feed(" more", final=True) == ("", [])  # nothing after a call is content


# --- the request -------------------------------------------------------------------------


def test_tool_choice_modes() -> None:
    assert ToolUse.of(request()) is None
    assert ToolUse.of(request(tools=[ADD], tool_choice="none")) is None
    auto = ToolUse.of(request(tools=[ADD, ECHO]))
    assert auto is not None and auto.choice == "auto" and auto.parallel
    named = ToolUse.of(
        request(tools=[ADD, ECHO], tool_choice={"type": "function", "function": {"name": "echo"}})
    )
    assert named is not None and [f["name"] for f in named.functions] == ["echo"]
    # a function may be called "auto": naming it is not the auto mode
    auto_fn = {"type": "function", "function": {"name": "auto"}}
    forced = ToolUse.of(
        request(
            tools=[ADD, auto_fn], tool_choice={"type": "function", "function": {"name": "auto"}}
        )
    )
    assert forced is not None and forced.choice == "named"
    assert [f["name"] for f in forced.functions] == ["auto"]
    one = ToolUse.of(request(tools=[ADD], tool_choice="required", parallel_tool_calls=False))
    assert one is not None and not one.parallel
    with pytest.raises(ValueError, match="needs tools"):
        ToolUse.of(request(tool_choice="required"))
    with pytest.raises(ValueError, match="not in tools"):
        ToolUse.of(
            request(tools=[ADD], tool_choice={"type": "function", "function": {"name": "x"}})
        )


# --- the prompt --------------------------------------------------------------------------

HISTORY = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="1 + 2?"),
    ChatMessage(
        role="assistant",
        content=None,
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
            }
        ],
    ),
    ChatMessage(role="tool", tool_call_id="call_1", content="3"),
]


def test_history_as_hermes_text_for_a_template_without_tools() -> None:
    tools = ToolUse.of(request(tools=[ADD]))
    messages = chat_messages(HISTORY, tools, native=False)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert json.dumps(ADD["function"]) in messages[0]["content"]
    assert messages[2]["content"] == call_text("add", {"a": 1, "b": 2})
    assert messages[3]["content"] == "<tool_response>\n3\n</tool_response>"
    # without tools offered, the history still renders, and no tool list is added
    plain = chat_messages(HISTORY, None, native=False)
    assert plain[0]["content"] == "Be brief."


def test_history_as_messages_for_a_template_with_tools() -> None:
    messages = chat_messages(HISTORY, ToolUse.of(request(tools=[ADD])), native=True)
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"a": 1, "b": 2}
    assert messages[3] == {"role": "tool", "content": "3", "tool_call_id": "call_1"}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]


def test_default_model_template_renders_no_tools() -> None:
    assert not template_renders_tools(load_tokenizer(str(default_model_path())))


@pytest.mark.parametrize("native", [False, True])
def test_a_developer_message_is_the_system_message(native: bool) -> None:
    """OpenAI's `developer` is its newer `system`: a template that knows no developer role
    (the default model's adds its own system prompt before a turn it does not know) gets
    it as the system message, with tools or without; one that knows it gets it as is."""
    tokenizer = load_tokenizer(str(default_model_path()))
    assert not template_knows_developer(tokenizer)
    history = [ChatMessage(role="developer", content="Be brief."), HISTORY[1]]
    for tools in (None, ToolUse.of(request(tools=[ADD]))):
        messages = chat_messages(history, tools, native)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"].startswith("Be brief.")
    kept = chat_messages(history, None, native, developer=True)
    assert [m["role"] for m in kept] == ["developer", "user"]
    as_system = [ChatMessage(role="system", content="Be brief."), HISTORY[1]]
    rendered = [
        tokenizer.apply_chat_template(chat_messages(h, None, native), tokenize=False)
        for h in (history, as_system)
    ]
    assert rendered[0] == rendered[1]


# --- the grammar -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grammars() -> StructuredOutputs:
    tokenizer = load_tokenizer(str(default_model_path()))
    return StructuredOutputs(tokenizer, len(tokenizer), [tokenizer.eos_token_id])


def accepts(grammars: StructuredOutputs, tools: ToolUse, text: str) -> bool:
    """Whether the tool grammar lets the model say `text` and then end."""
    matcher = grammars.matcher(tools.structured())
    ids = grammars.tokenizer.encode(text, add_special_tokens=False)
    ok = all(matcher.accept_token(t) for t in ids)
    return ok and matcher.accept_token(grammars.tokenizer.eos_token_id)


def test_required_allows_only_valid_calls(grammars: StructuredOutputs) -> None:
    tools = ToolUse.of(request(tools=[ADD, ECHO], tool_choice="required"))
    assert tools is not None
    good = call_text("add", {"a": 1, "b": 2})
    assert accepts(grammars, tools, good)
    assert accepts(grammars, tools, good + "\n" + call_text("echo", {}))  # parallel
    assert not accepts(grammars, tools, "")  # at least one call
    assert not accepts(grammars, tools, "Hello")
    assert not accepts(grammars, tools, call_text("add", {"a": "one", "b": 2}))
    assert not accepts(grammars, tools, call_text("sub", {"a": 1, "b": 2}))
    single = ToolUse.of(
        request(tools=[ADD, ECHO], tool_choice="required", parallel_tool_calls=False)
    )
    assert single is not None
    assert not accepts(grammars, single, good + "\n" + good)


def test_named_allows_only_that_function(grammars: StructuredOutputs) -> None:
    choice = {"type": "function", "function": {"name": "echo"}}
    tools = ToolUse.of(request(tools=[ADD, ECHO], tool_choice=choice))
    assert tools is not None
    assert accepts(grammars, tools, call_text("echo", {}))
    assert not accepts(grammars, tools, call_text("add", {"a": 1, "b": 2}))


def test_auto_allows_text_and_constrains_calls(grammars: StructuredOutputs) -> None:
    tools = ToolUse.of(request(tools=[ADD]))
    assert tools is not None
    assert accepts(grammars, tools, "Just text.")
    assert accepts(grammars, tools, "First: " + call_text("add", {"a": 1, "b": 2}))
    assert not accepts(grammars, tools, call_text("add", {"a": 1}))  # b is required


def test_a_streamed_call_sends_no_empty_deltas() -> None:
    """The tokens of a call's markup are held back whole: no event goes out for them (as
    vLLM sends none), and the call goes out once, closed, in the last event."""
    from autellix.engine.llm_engine import CallOutput
    from autellix.server.responses import ChatRender

    render = ChatRender("m", tools=ToolUse.of(request(tools=[ADD], tool_choice="required")))
    text = call_text("add", {"a": 1, "b": 2})
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    outputs = [CallOutput("c", "p", [1], piece) for piece in pieces]
    outputs[-1].finished, outputs[-1].finish_reason = True, "stop"
    events = [render.chunk("id", 0, 0, out) for out in outputs]
    assert all(e is None for e in events[:-1])
    last = events[-1]
    assert last is not None and last["choices"][0]["finish_reason"] == "tool_calls"
    assert last["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "add"
