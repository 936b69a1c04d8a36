"""The agent API over HTTP on the default model, with the official openai client: tool
calls, structured outputs and logprobs, whole and streamed, and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(default_model_server):
    return default_model_server


@pytest.fixture(scope="module")
def client(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0) as c:
        c.model = server.frontend.model_name  # type: ignore[attr-defined]
        yield c


def create(client: openai.OpenAI, **fields):
    fields = {"model": client.model, "messages": ASK, "temperature": 0, **fields}  # type: ignore[attr-defined]
    return client.chat.completions.create(**fields)


def streamed(client: openai.OpenAI, **fields) -> tuple[str, list[dict], str | None]:
    """(content, tool calls, finish reason) put together from the chunks of a stream."""
    content, calls, reason = "", {}, None
    for chunk in create(client, stream=True, **fields):
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"name": "", "arguments": ""})
            call["name"] += d.function.name or ""
            call["arguments"] += d.function.arguments or ""
            assert d.id and d.type == "function"
        reason = choice.finish_reason or reason
    return content, [calls[i] for i in sorted(calls)], reason


def valid_call(call) -> tuple[str, dict]:
    name, args = call.function.name, json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return name, args


# --- tool calls --------------------------------------------------------------------------


def test_required_gives_valid_calls_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = create(client, tools=TOOLS, tool_choice="required", max_tokens=120)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = [valid_call(c) for c in choice.message.tool_calls]
    assert calls and calls[0][0] == "get_weather"
    assert all(c.id.startswith("call_") for c in choice.message.tool_calls)
    content, stream_calls, reason = streamed(
        client, tools=TOOLS, tool_choice="required", max_tokens=120
    )
    assert (content, reason) == ("", "tool_calls")
    assert [(c["name"], json.loads(c["arguments"])) for c in stream_calls] == calls


def test_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    whole = create(client, tools=TOOLS, tool_choice=choice, max_tokens=60).choices[0]
    assert [valid_call(c)[0] for c in whole.message.tool_calls] == ["add"]


def test_required_without_parallel_calls_makes_one(client: openai.OpenAI) -> None:
    prompt = [{"role": "user", "content": "Weather in Paris, Rome and Oslo, please."}]
    for seed in range(3):
        out = create(
            client,
            messages=prompt,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=150,
        ).choices[0]
        assert len(out.message.tool_calls) == 1 and out.finish_reason == "tool_calls"
        valid_call(out.message.tool_calls[0])


def test_sampled_calls_are_always_valid(client: openai.OpenAI) -> None:
    """Constrained decoding: at temperature 1 every call parses and fits its schema."""
    prompts = ["Add 2 and 40.", "How warm is it in Lima?", "Sum 7 and 8", "Tokyo weather?"]
    for i, text in enumerate(prompts):
        out = create(
            client,
            messages=[{"role": "user", "content": text}],
            tools=TOOLS,
            tool_choice="required",
            temperature=1.0,
            seed=i,
            max_tokens=200,
        ).choices[0]
        assert out.finish_reason == "tool_calls", out
        for call in out.message.tool_calls:
            valid_call(call)


def test_history_with_tool_results_is_served(client: openai.OpenAI, server) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    out = create(client, messages=history, tools=TOOLS, max_tokens=30).choices[0]
    assert out.finish_reason in ("stop", "length", "tool_calls")
    # the prompt the model saw: the tools, the call it made and the result, as Hermes text
    tokenizer = server.frontend.tokenizer
    seen = tokenizer.decode(server.frontend.encode_chat(_rendered(history)))
    assert '"name": "get_weather", "arguments": {"city": "Paris"}' in seen
    assert "<tool_response>\n18 degrees and sunny\n</tool_response>" in seen


def _rendered(history: list[dict]) -> list[dict]:
    from autellix.server.protocol import ChatMessage
    from autellix.server.tools import chat_messages

    return chat_messages([ChatMessage.model_validate(m) for m in history], None, native=False)


def test_tool_choice_none_is_plain_text(client: openai.OpenAI) -> None:
    out = create(client, tools=TOOLS, tool_choice="none", max_tokens=12).choices[0]
    plain = create(client, max_tokens=12).choices[0]
    assert out.message.tool_calls is None and out.message.content == plain.message.content


# --- structured outputs ------------------------------------------------------------------


def test_json_schema_output_fits_the_schema(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    ask = [{"role": "user", "content": "Describe a famous scientist."}]
    for seed in range(3):
        out = create(
            client, messages=ask, response_format=fmt, temperature=1.0, seed=seed, max_tokens=150
        ).choices[0]
        assert out.finish_reason == "stop", out
        jsonschema.validate(json.loads(out.message.content), PERSON)
    whole = create(client, messages=ask, response_format=fmt, max_tokens=150).choices[0]
    content, _, reason = streamed(client, messages=ask, response_format=fmt, max_tokens=150)
    assert (content, reason) == (whole.message.content, "stop")


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Give me a JSON object with a key 'ok' set to true."}]
    out = create(client, messages=ask, response_format={"type": "json_object"}, max_tokens=200)
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_constrained_calls_leave_their_batch_mates_unchanged(client: openai.OpenAI) -> None:
    """A grammar masks only its own row: an unconstrained call says the same alone and in
    a batch with constrained ones."""
    alone = create(client, max_tokens=24).choices[0].message.content
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    with ThreadPoolExecutor(4) as pool:
        jobs = [
            pool.submit(create, client, response_format=fmt, max_tokens=60),
            pool.submit(create, client, tools=TOOLS, tool_choice="required", max_tokens=60),
            pool.submit(create, client, max_tokens=24),
            pool.submit(create, client, response_format=fmt, max_tokens=60),
        ]
        outs = [j.result() for j in jobs]
    assert outs[2].choices[0].message.content == alone
    assert outs[1].choices[0].message.tool_calls


# --- logprobs ----------------------------------------------------------------------------


def test_chat_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    out = create(client, max_tokens=8, logprobs=True, top_logprobs=3).choices[0]
    entries = out.logprobs.content
    assert len(entries) == 8 and "".join(e.token for e in entries) == out.message.content
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert e.logprob == pytest.approx(tops[0])  # greedy: the likeliest token
        assert bytes(e.bytes) == e.token.encode()
    chunks = create(client, max_tokens=8, logprobs=True, top_logprobs=3, stream=True)
    streamed_entries = [
        e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed_entries] == [
        (e.token, round(e.logprob, 4)) for e in entries
    ]
    assert create(client, max_tokens=2).choices[0].logprobs is None


def test_completion_logprobs(client: openai.OpenAI) -> None:
    def complete(**fields):
        return client.completions.create(
            model=client.model,  # type: ignore[attr-defined]
            prompt="The capital of France is",
            **fields,
        ).choices[0]

    out = complete(max_tokens=4, temperature=0, logprobs=2)
    lp = out.logprobs
    assert "".join(lp.tokens) == out.text and len(lp.token_logprobs) == 4
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and top[token] == pytest.approx(logprob)
    # sampled, the token may be none of the likeliest: it is given all the same (OpenAI
    # and vLLM give "up to logprobs + 1"), alone when no alternatives are asked for
    for asked in (0, 1):
        lp = complete(max_tokens=12, temperature=2.0, seed=3, logprobs=asked).logprobs
        for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
            assert top[token] == pytest.approx(logprob) and len(top) <= asked + 1
        assert any(len(top) == asked + 1 for top in lp.top_logprobs)


def test_prompt_logprobs(client: openai.OpenAI, server) -> None:
    prompt = "The capital of France is"
    out = client.completions.create(
        model=client.model,  # type: ignore[attr-defined]
        prompt=prompt,
        max_tokens=1,
        extra_body={"prompt_logprobs": 1},
    )
    ids = server.frontend.encode(prompt)
    entries = out.choices[0].model_extra["prompt_logprobs"]
    assert entries[0] is None and len(entries) == len(ids)
    for entry, token in zip(entries[1:], ids[1:], strict=True):
        mine = entry[str(token)]
        assert mine["decoded_token"] == server.frontend.tokenizer.decode([token])
        assert mine["rank"] >= 1 and 1 <= len(entry) <= 2
        assert all(e["logprob"] <= 0 for e in entry.values())
    chat = create(client, max_tokens=1, extra_body={"prompt_logprobs": 0})
    assert len(chat.model_extra["prompt_logprobs"]) == chat.usage.prompt_tokens


def test_vllm_structured_outputs_field(client: openai.OpenAI) -> None:
    """vLLM's own field for grammars, served on both routes (what a frontend sends)."""
    out = client.completions.create(
        model=client.model,  # type: ignore[attr-defined]
        prompt="A person as JSON:",
        max_tokens=80,
        temperature=0,
        extra_body={"structured_outputs": {"json": PERSON, "disable_any_whitespace": True}},
    ).choices[0]
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), PERSON)
    chat = create(client, max_tokens=200, extra_body={"structured_outputs": {"json_object": True}})
    assert isinstance(json.loads(chat.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError, match="regex"):
        create(client, max_tokens=2, extra_body={"structured_outputs": {"regex": "a+"}})
    with pytest.raises(openai.BadRequestError, match="exclude each other"):
        create(
            client,
            max_tokens=2,
            response_format={"type": "json_object"},
            extra_body={"structured_outputs": {"json_object": True}},
        )


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "not in tools",
        ),
        (
            {"tools": TOOLS, "response_format": {"type": "json_object"}},
            "response_format cannot be combined with tools",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "frob"}},
                }
            },
            "json schema does not compile",
        ),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        (
            {"response_format": {"type": "json_object"}, "extra_body": {"min_tokens": 2}},
            "min_tokens",
        ),
        ({"top_logprobs": 2}, "top_logprobs needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "name"),
    ],
)
def test_agent_field_errors_are_400s(client: openai.OpenAI, fields: dict, fragment: str) -> None:
    with pytest.raises(openai.BadRequestError, match=fragment):
        create(client, max_tokens=4, **fields)
