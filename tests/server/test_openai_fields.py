"""Every request field of the official openai client's two routes is served, a
documented no-op, or refused with a 400 naming it: none is silently ignored. The fields
are read from the installed client, so a field it adds fails here until it is classified."""

from __future__ import annotations

import openai
import openai.types.chat.completion_create_params as chat_params
import openai.types.completion_create_params as text_params
import pytest

from autellix.server.protocol import NO_OPS, UNSERVED

MODEL = "tiny"  # the served name in conftest
# Served, each with its tests: sampling in test_sampling_http.py (penalties and logit_bias
# there and in tests/engine/test_structured_and_logprobs.py), stop in
# test_stop_strings_http.py, tools, response_format and logprobs in test_agent_api.py.
SERVED = {
    "messages", "prompt", "model", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
    "stream", "stream_options", "temperature", "top_p", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "frequency_penalty",
    "presence_penalty", "logit_bias",
}  # fmt: skip
# A value that asks for each refused field's feature.
REFUSED = {
    "audio": {"voice": "alloy", "format": "wav"},
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "modalities": ["text", "audio"],
    "moderation": {"type": "auto"},
    "prediction": {"type": "content", "content": "w1"},
    "reasoning_effort": "high",
    "verbosity": "low",
    "web_search_options": {},
    "best_of": 2,
    "echo": True,
    "suffix": "w2",
}
NO_OP_VALUES = {
    "user": "u1",
    "metadata": {"k": "v"},
    "store": True,
    "service_tier": "auto",
    "safety_identifier": "s1",
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {},
}


def fields(module) -> set[str]:
    return set(module.CompletionCreateParamsBase.__annotations__) | {"stream"}


@pytest.mark.parametrize("route", ["chat", "text"])
def test_every_client_field_is_classified(route: str) -> None:
    client_fields = fields(chat_params if route == "chat" else text_params)
    unclassified = client_fields - SERVED - REFUSED.keys() - NO_OP_VALUES.keys()
    assert not unclassified, f"classify these {route} fields: {sorted(unclassified)}"
    assert REFUSED.keys() <= UNSERVED.keys() and NO_OP_VALUES.keys() == NO_OPS


def send(client: openai.OpenAI, route: str, **fields):
    if route == "chat":
        messages = [{"role": "user", "content": "w1"}]
        return client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=2, **fields
        )
    return client.completions.create(model=MODEL, prompt="w1", max_tokens=2, **fields)


@pytest.mark.parametrize("route", ["chat", "text"])
def test_refused_fields_are_400s_naming_them(client: openai.OpenAI, route: str) -> None:
    for name in sorted(REFUSED.keys() & fields(chat_params if route == "chat" else text_params)):
        with pytest.raises(openai.BadRequestError, match=f"{name} is not supported") as e:
            send(client, route, extra_body={name: REFUSED[name]})
        assert e.value.status_code == 400 and e.value.param == name
    # a field no OpenAI route has (vLLM's guided decoding, say) is refused by name too
    with pytest.raises(openai.BadRequestError, match="guided_regex is not supported"):
        send(client, route, extra_body={"guided_regex": "w[0-9]"})


@pytest.mark.parametrize("route", ["chat", "text"])
def test_no_op_fields_are_answered(client: openai.OpenAI, route: str) -> None:
    names = NO_OP_VALUES.keys() & fields(chat_params if route == "chat" else text_params)
    out = send(client, route, extra_body={n: NO_OP_VALUES[n] for n in names})
    assert out.choices[0].finish_reason in ("stop", "length")
    # the defaults of refused fields ask for nothing and pass
    defaults = {"best_of": 1, "echo": False, "modalities": ["text"]}
    names = defaults.keys() & fields(chat_params if route == "chat" else text_params)
    assert send(client, route, extra_body={n: defaults[n] for n in names}).choices


def test_stream_options_are_served_or_refused(client: openai.OpenAI) -> None:
    """Every stream option of the client is taken (include_obfuscation a no-op); any other
    is a 400 naming it."""
    from openai.types.chat import ChatCompletionStreamOptionsParam

    options = {name: True for name in ChatCompletionStreamOptionsParam.__annotations__}
    assert set(options) == {"include_usage", "include_obfuscation"}
    chunks = list(send(client, "chat", stream=True, stream_options=options))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    with pytest.raises(openai.BadRequestError, match=r"stream_options\.continuous_usage_stats"):
        send(client, "text", stream=True, stream_options={"continuous_usage_stats": True})


def test_message_fields_are_served_or_refused(client: openai.OpenAI) -> None:
    from autellix.server.protocol import ChatMessage
    from autellix.server.tools import chat_messages

    def chat(*messages):
        return client.chat.completions.create(model=MODEL, messages=list(messages), max_tokens=2)

    # a participant's name goes to the chat template; a null field is no request at all
    named = {"role": "user", "content": "w1", "name": "ann"}
    assert chat(named, {"role": "assistant", "content": "w2", "refusal": None}).choices
    assert chat_messages([ChatMessage(**named)], None, False) == [named]
    assert chat_messages([ChatMessage(role="user", content="w1")], None, True) == [
        {"role": "user", "content": "w1"}
    ]
    legacy = {"role": "assistant", "content": None, "function_call": {"name": "f"}}
    with pytest.raises(openai.BadRequestError, match="message field function_call is not"):
        chat({"role": "user", "content": "w1"}, legacy)
