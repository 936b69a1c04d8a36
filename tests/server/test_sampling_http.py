"""Sampling fields over HTTP, each checked so that the check fails if the field is ignored:
min_tokens, top_k, stop_token_ids, n with per-choice seeds, and streams of several
prompts x n choices. References come straight from the engine behind the server."""

from __future__ import annotations

from collections import defaultdict

import openai
import pytest

from autellix.engine.sampling_params import SamplingParams

MODEL = "tiny"  # the served name in conftest
PROMPT = "w5 w17 w3 w99 w42"
OTHER = "w7 w8 w9"
FIXED = {"ignore_eos": True}


def direct_ids(server, prompt: str | list[int], **params) -> list[int]:
    """A call straight through the served engine (itself tested against transformers),
    its output token ids. Waits for the server to be idle: the engine then steps only here."""
    server.wait_idle()
    engine = server.frontend.replicas[0].engine
    seq = engine.add_call(server.frontend.encode(prompt), SamplingParams(**params))
    while not seq.finish_reason:
        engine.step()
    return list(seq.output_ids)


def text_of(server, ids: list[int]) -> str:
    return server.frontend.tokenizer.decode(ids, skip_special_tokens=True)


def first_fresh(ids: list[int], start: int, avoid: tuple[int, ...] = ()) -> int:
    """The first position >= start whose token did not occur before it (nor in avoid)."""
    for i in range(start, len(ids)):
        if ids[i] not in ids[:i] and ids[i] not in avoid:
            return i
    raise AssertionError(f"no fresh token in {ids}")


def eos_of(server) -> tuple[int, ...]:
    return server.frontend.replicas[0].engine.scheduler.eos_token_ids


# --- min_tokens ---------------------------------------------------------------------------


def test_min_tokens_holds_back_a_stop_token_id(server, client) -> None:
    greedy = direct_ids(server, PROMPT, temperature=0, max_tokens=12, ignore_eos=True)
    at = first_fresh(greedy, 2, eos_of(server))
    stop_id = greedy[at]
    body = {"stop_token_ids": [stop_id], **FIXED}
    short = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, extra_body=body
    )
    assert short.choices[0].finish_reason == "stop"
    assert short.usage.completion_tokens == at + 1  # without min_tokens: stops early
    held = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        extra_body={**body, "min_tokens": at + 4},
    )
    assert held.usage.completion_tokens >= at + 4
    # the stop id was banned at its greedy position, so the output departs from greedy there
    assert held.choices[0].text.split()[:at] == short.choices[0].text.split()


def test_min_tokens_holds_back_end_of_sequence(server, client) -> None:
    """The tiny model's greedy continuation of PROMPT reaches </s> on its own."""
    eos = eos_of(server)
    greedy = direct_ids(server, PROMPT, temperature=0, max_tokens=16, ignore_eos=True)
    ends = [i for i, t in enumerate(greedy) if t in eos]
    assert ends, f"the tiny model's greedy output {greedy} no longer ends; pick another prompt"
    end = ends[0]
    natural = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
    assert natural.choices[0].finish_reason == "stop"
    assert natural.usage.completion_tokens == end + 1
    held = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=16,
        temperature=0,
        extra_body={"min_tokens": end + 3},
    )
    assert held.usage.completion_tokens >= end + 3


# --- top_k --------------------------------------------------------------------------------


def test_top_k_1_is_greedy_at_any_temperature(server, client) -> None:
    greedy = text_of(server, direct_ids(server, PROMPT, temperature=0, max_tokens=10, **FIXED))
    sampled, narrowed = [], []
    for seed in range(4):
        common = {"model": MODEL, "prompt": PROMPT, "max_tokens": 10, "seed": seed}
        narrowed.append(
            client.completions.create(temperature=1.0, extra_body={"top_k": 1, **FIXED}, **common)
            .choices[0]
            .text
        )
        sampled.append(
            client.completions.create(temperature=1.5, extra_body=FIXED, **common).choices[0].text
        )
    assert narrowed == [greedy] * 4
    assert any(s != greedy for s in sampled)  # without top_k the same seeds do sample


def test_top_k_limits_each_draw_to_the_k_likeliest(server, client) -> None:
    """top_k=2 at a high temperature: every token is one of the two likeliest after the
    tokens before it (the engine's greedy choice, and its greedy choice with that one
    banned), and not always the likeliest."""
    out = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=6,
        temperature=2.0,
        seed=3,
        extra_body={"top_k": 2, **FIXED},
    )
    ids = server.frontend.encode(out.choices[0].text)
    assert len(ids) == 6
    firsts = []
    for i, token in enumerate(ids):
        prefix = server.frontend.encode(PROMPT) + ids[:i]
        first = direct_ids(server, prefix, temperature=0, max_tokens=1, **FIXED)
        # min_tokens bans the stop ids: the greedy choice among the rest
        second = direct_ids(
            server, prefix, temperature=0, max_tokens=1, min_tokens=1, stop_token_ids=first
        )
        assert first != second and token in first + second, (i, token, first, second)
        firsts += first
    assert ids != firsts  # it did sample


# --- stop_token_ids -------------------------------------------------------------------------


def test_stop_token_ids_stop_at_the_first_occurrence(server, client) -> None:
    greedy = direct_ids(server, OTHER, temperature=0, max_tokens=12, **FIXED)
    a = first_fresh(greedy, 3, eos_of(server))
    b = first_fresh(greedy, a + 1, eos_of(server))
    out = client.completions.create(
        model=MODEL,
        prompt=OTHER,
        max_tokens=12,
        temperature=0,
        extra_body={"stop_token_ids": [greedy[b], greedy[a]], **FIXED},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop"
    assert out.usage.completion_tokens == a + 1
    assert choice.text == text_of(server, greedy[:a])  # the stop token itself is not shown
    messages = [{"role": "user", "content": OTHER}]
    chat_greedy = direct_ids(
        server,
        server.frontend.encode_chat(messages),
        temperature=0,
        max_tokens=12,
        **FIXED,
    )
    c = first_fresh(chat_greedy, 2, eos_of(server))
    chat = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        temperature=0,
        extra_body={"stop_token_ids": [chat_greedy[c]], **FIXED},
    )
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage.completion_tokens == c + 1
    assert chat.choices[0].message.content == text_of(server, chat_greedy[:c])


# --- n and seeds ------------------------------------------------------------------------


def test_n_choices_are_single_calls_with_seed_plus_index(client) -> None:
    common = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "extra_body": FIXED}
    many = client.completions.create(n=3, seed=11, temperature=1.0, **common)
    assert [c.index for c in many.choices] == [0, 1, 2]
    texts = [c.text for c in many.choices]
    singles = [
        client.completions.create(seed=11 + i, temperature=1.0, **common).choices[0].text
        for i in range(3)
    ]
    assert texts == singles
    assert len(set(texts)) > 1  # the choices are not one draw repeated
    assert many.usage.completion_tokens == 24 and many.usage.prompt_tokens == 5
    greedy = client.completions.create(n=3, temperature=0, **common)
    assert len({c.text for c in greedy.choices}) == 1
    assert (
        greedy.choices[0].text == client.completions.create(temperature=0, **common).choices[0].text
    )


def test_chat_n_choices_follow_the_seeds(client) -> None:
    common = {
        "model": MODEL,
        "messages": [{"role": "user", "content": OTHER}],
        "max_tokens": 6,
        "temperature": 1.0,
        "extra_body": FIXED,
    }
    many = client.chat.completions.create(n=2, seed=40, **common)
    singles = [
        client.chat.completions.create(seed=40 + i, **common).choices[0].message.content
        for i in range(2)
    ]
    assert [c.message.content for c in many.choices] == singles


# --- streams of several prompts x n -------------------------------------------------------


def test_streamed_prompts_times_n_equal_the_whole_response(client) -> None:
    common = {
        "model": MODEL,
        "prompt": [PROMPT, OTHER],
        "n": 2,
        "max_tokens": 7,
        "temperature": 1.0,
        "seed": 21,
        "extra_body": FIXED,
    }
    whole = client.completions.create(**common)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    usage = None
    for chunk in client.completions.create(
        stream=True, stream_options={"include_usage": True}, **common
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason is not None:
                finishes[c.index].append(c.finish_reason)
    assert dict(texts) == {c.index: c.text for c in whole.choices}
    assert dict(finishes) == {i: ["length"] for i in range(4)}
    assert usage is not None and usage.completion_tokens == 28
    assert usage.prompt_tokens == whole.usage.prompt_tokens == 8  # each prompt counted once
    # choice k is prompt k // n with seed + k % n
    for k in range(4):
        single = client.completions.create(
            model=MODEL,
            prompt=common["prompt"][k // 2],
            max_tokens=7,
            temperature=1.0,
            seed=21 + k % 2,
            extra_body=FIXED,
        )
        assert single.choices[0].text == texts[k], k


def test_streamed_chat_n_equals_the_whole_response(client) -> None:
    common = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "n": 3,
        "max_tokens": 5,
        "temperature": 1.0,
        "seed": 8,
        "extra_body": FIXED,
    }
    whole = client.chat.completions.create(**common)
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    roles: dict[int, list[str]] = defaultdict(list)
    for chunk in client.chat.completions.create(stream=True, **common):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.delta.role:
                roles[c.index].append(c.delta.role)
            if c.finish_reason is not None:
                finishes[c.index].append(c.finish_reason)
    assert dict(texts) == {c.index: c.message.content for c in whole.choices}
    assert dict(finishes) == {i: ["length"] for i in range(3)}
    assert dict(roles) == {i: ["assistant"] for i in range(3)}


def test_logit_bias_and_penalties_over_http(client) -> None:
    """A bias of 100 makes a token all the model says; an unknown token id is a 400."""
    out = client.completions.create(
        model=MODEL,
        prompt="w1 w2",
        max_tokens=5,
        temperature=0,
        logit_bias={"7": 100},
        extra_body={"ignore_eos": True},
    )
    assert out.choices[0].text.split() == ["w4"] * 5
    penalized = client.completions.create(
        model=MODEL,
        prompt="w1 w2",
        max_tokens=5,
        temperature=0,
        logit_bias={"7": 100},
        frequency_penalty=2,
        extra_body={"ignore_eos": True, "repetition_penalty": 1.2},
    )
    assert penalized.choices[0].text.split()[0] == "w4"
    with pytest.raises(openai.BadRequestError, match="logit_bias token ids") as e:
        client.completions.create(model=MODEL, prompt="w1", max_tokens=2, logit_bias={"99999": 1})
    assert e.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError, match="context") as e:
        client.completions.create(model=MODEL, prompt="w1", max_tokens=99_999)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.completions.create(model=MODEL, prompt="w1", max_tokens=2, frequency_penalty=3)
