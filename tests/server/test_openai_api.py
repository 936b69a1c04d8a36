"""The official openai client against a real server: every mode, the extensions, and
the tokens of a direct engine run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import httpx
import openai
import pytest

from autellix.engine.sampling_params import SamplingParams

MODEL = "tiny"  # the served name in conftest
PROMPT = "w5 w17 w3 w99 w42"
MESSAGES = [{"role": "user", "content": "w7 w8 w9"}]
FIXED = {"ignore_eos": True}


def direct_text(server, prompt: str, max_tokens: int) -> str:
    """The same call straight through the engine (itself tested against transformers)."""
    engine = server.frontend.replicas[0].engine
    ids = server.frontend.encode(prompt)
    seq = engine.add_call(
        ids, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    )
    while not seq.finish_reason:
        engine.step()
    return seq.text


def test_models_and_health(client, server) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["replicas"][0]["alive"]


def test_completion_matches_the_engine(client, server) -> None:
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=FIXED
    )
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 8 and out.usage.prompt_tokens == 5
    server.wait_idle()
    assert out.choices[0].text == direct_text(server, PROMPT, 8)


def test_streamed_completion_equals_whole(client) -> None:
    whole = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=FIXED
    )
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_body=FIXED,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_whole_and_streamed(client) -> None:
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, extra_body=FIXED
    )
    message = whole.choices[0].message
    assert message.role == "assistant" and message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, stream=True, extra_body=FIXED
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content


def test_n_seed_stop_and_min_tokens(client) -> None:
    out = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, n=3, seed=5, temperature=1.0, extra_body=FIXED
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    again = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, n=3, seed=5, temperature=1.0, extra_body=FIXED
    )
    assert [c.text for c in out.choices] == [c.text for c in again.choices]
    assert out.usage.prompt_tokens == 5 and out.usage.completion_tokens == 18
    greedy = (
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=FIXED
        )
        .choices[0]
        .text
    )
    word = greedy.split()[2]
    cut = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=[word], extra_body=FIXED
    ).choices[0]
    assert cut.finish_reason == "stop" and word not in cut.text
    assert greedy.startswith(cut.text.strip())
    long = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, extra_body={"min_tokens": 8}
    )
    assert long.usage.completion_tokens == 8


def test_token_id_prompts_and_batches(client) -> None:
    out = client.completions.create(
        model=MODEL, prompt=[[5, 6, 7], [8, 9]], max_tokens=3, temperature=0, extra_body=FIXED
    )
    assert len(out.choices) == 2 and out.usage.prompt_tokens == 5


def test_async_client_all_modes(server) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="none") as c:
            whole = await c.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=5, temperature=0, extra_body=FIXED
            )
            stream = await c.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=5,
                temperature=0,
                stream=True,
                extra_body=FIXED,
            )
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
            assert text == whole.choices[0].message.content
            comp = await c.completions.create(
                model=MODEL,
                prompt=PROMPT,
                max_tokens=5,
                temperature=0,
                stream=True,
                extra_body=FIXED,
            )
            assert len([ch async for ch in comp]) == 5

    asyncio.run(main())


def test_64_concurrent_streams_from_16_programs(server) -> None:
    async def one(c: openai.AsyncOpenAI, program: int, i: int) -> int:
        stream = await c.completions.create(
            model=MODEL,
            prompt=f"w{program} w{i} w3",
            max_tokens=6,
            temperature=0,
            stream=True,
            extra_body=FIXED,
            extra_headers={"X-Autellix-Program": f"p{program}"},
        )
        return len([ch async for ch in stream])

    async def main() -> list[int]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="none") as c:
            return await asyncio.gather(*(one(c, p, i) for p in range(16) for i in range(4)))

    assert asyncio.run(main()) == [6] * 64
    server.wait_idle()
    table = server.frontend.table
    assert sorted(table.programs) == sorted(f"p{p}" for p in range(16))
    assert all(table.get(f"p{p}").completed_calls == 4 for p in range(16))


@pytest.mark.parametrize("route", ["chat", "text"])
def test_a_prompt_being_tokenized_holds_no_other_request_up(
    client, server, monkeypatch, route: str
) -> None:
    """Prompts are tokenized off the event loop (a long one takes seconds): while one is,
    the server answers others."""
    name = "encode_chat" if route == "chat" else "encode"
    encode = getattr(server.frontend, name)
    entered, released = threading.Event(), threading.Event()

    def slow(*args):
        entered.set()
        released.wait(timeout=10)
        return encode(*args)

    monkeypatch.setattr(server.frontend, name, slow)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        if route == "chat":
            job = pool.submit(
                client.chat.completions.create, model=MODEL, messages=MESSAGES, max_tokens=2
            )
        else:
            job = pool.submit(client.completions.create, model=MODEL, prompt=PROMPT, max_tokens=2)
        assert entered.wait(timeout=10)
        try:
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        finally:
            released.set()
        assert job.result(timeout=30).choices
