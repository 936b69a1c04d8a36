"""`autellix serve --backend URL`: the program-aware frontend over other OpenAI-compatible
servers (here real Autellix servers of the tiny model, as a vLLM would be): the same
answers as the backend gives directly, the process table kept, priorities stamped from
the programs' history and honoured by the backend, and dead backends left and rejoined."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from autellix.server.frontend import Frontend

MODEL = "tiny"
FIXED = {"ignore_eos": True}


def test_answers_are_the_backends(serve, front) -> None:
    backend = serve()
    frontend = front(backend.base_url)
    ask = {"model": MODEL, "max_tokens": 8, "temperature": 0, "extra_body": FIXED}
    with (
        openai.OpenAI(base_url=backend.base_url, api_key="x", max_retries=0) as direct,
        openai.OpenAI(base_url=frontend.base_url, api_key="x", max_retries=0) as through,
    ):
        want = direct.completions.create(prompt="w1 w2 w3", **ask).choices[0].text
        got = through.completions.create(
            prompt="w1 w2 w3", extra_headers={"X-Autellix-Program": "p1"}, **ask
        )
        assert got.choices[0].text == want and got.usage.completion_tokens == 8
        stream = through.completions.create(prompt="w1 w2 w3", stream=True, **ask)
        assert "".join(c.choices[0].text for c in stream if c.choices) == want
        messages = [{"role": "user", "content": "w5 w6"}]
        chat_want = direct.chat.completions.create(messages=messages, **ask)
        chat_got = through.chat.completions.create(messages=messages, **ask)
        assert chat_got.choices[0].message.content == chat_want.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="exceeds the model's context"):
            through.completions.create(prompt="w1", max_tokens=5000, model=MODEL)
    program = frontend.frontend.table.get("p1")
    assert program.completed_calls == 1 and program.service > 0 and program.engines == {0}


async def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def served_order(backend, frontend) -> list[str]:
    """A long call holds the backend's only slot; a call of a program with 100 s of
    service arrives, then one of a fresh program: the order those two finish in."""
    heavy = frontend.frontend.table.start("heavy")
    heavy.service = heavy.critical_path = 100.0
    finished: list[str] = []

    def stats() -> dict:
        return backend.engine_stats()

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=frontend.base_url, api_key="x") as c:

            async def call(program: str, max_tokens: int) -> None:
                await c.completions.create(
                    model=MODEL,
                    prompt="w1 w2",
                    max_tokens=max_tokens,
                    extra_body=FIXED,
                    extra_headers={"X-Autellix-Program": program},
                )
                finished.append(program)

            hog = asyncio.create_task(call("hog", 200))
            await _wait(lambda: stats()["running"] == 1, "the long call to run")
            calls = [asyncio.create_task(call("heavy", 4))]
            await _wait(lambda: stats()["waiting"] >= 1, "the heavy program's call to wait")
            calls.append(asyncio.create_task(call("fresh", 4)))
            await _wait(lambda: stats()["waiting"] >= 2, "the fresh program's call to wait")
            await asyncio.gather(hog, *calls)

    asyncio.run(main())
    return [p for p in finished if p != "hog"]


@pytest.mark.parametrize("stamp", [True, False])
def test_priority_stamps_reorder_the_backend(serve, front, stamp: bool) -> None:
    backend = serve(engine={"max_running": 1, "policy": "fcfs"})
    frontend = front(backend.base_url, backend_priority=stamp, engine={"policy": "plas"})
    order = served_order(backend, frontend)
    assert order == (["fresh", "heavy"] if stamp else ["heavy", "fresh"])


def test_a_dead_backend_is_left_and_rejoined(serve, front) -> None:
    backend = serve()
    frontend = front(backend.base_url)
    ask = {"model": MODEL, "prompt": "w1", "max_tokens": 2, "temperature": 0}
    backend.stop()
    with openai.OpenAI(base_url=frontend.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError, match="no engine replica is alive"):
            c.completions.create(**ask)
        assert httpx.get(f"{frontend.url}/health").status_code == 503
        # a new server on the same port: the frontend finds it again
        again = type(backend)(Frontend(backend.frontend.config), port=backend.port).start()
        try:
            deadline = time.monotonic() + 15
            while httpx.get(f"{frontend.url}/health").status_code != 200:
                assert time.monotonic() < deadline, "the backend was not rejoined"
                time.sleep(0.1)
            assert c.completions.create(**ask).choices[0].finish_reason == "length"
        finally:
            again.stop()


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_agent_fields_go_through_to_the_backend(default_model_server, front) -> None:
    """Tool calls, response formats and logprobs through the frontend are what the backend
    gives directly: grammars travel as vLLM's structured_outputs, logprobs as token ids."""
    backend = default_model_server
    frontend = front(backend.base_url, engine={"model": None})
    name = backend.frontend.model_name
    messages = [{"role": "user", "content": "Add 2 and 3, please."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    with (
        openai.OpenAI(base_url=backend.base_url, api_key="x", max_retries=0) as direct,
        openai.OpenAI(base_url=frontend.base_url, api_key="x", max_retries=0) as through,
    ):

        def both(**fields):
            fields = {"messages": messages, "temperature": 0, "max_tokens": 60, **fields}
            return (
                direct.chat.completions.create(model=name, **fields).choices[0],
                through.chat.completions.create(model=MODEL, **fields).choices[0],
            )

        want, got = both(tools=[ADD], tool_choice="required")
        assert got.finish_reason == "tool_calls"
        calls = [(c.function.name, c.function.arguments) for c in got.message.tool_calls]
        assert calls == [(c.function.name, c.function.arguments) for c in want.message.tool_calls]
        want, got = both(response_format=fmt)
        assert got.message.content == want.message.content
        assert json.loads(got.message.content).keys() == {"name", "age"}
        want, got = both(logprobs=True, top_logprobs=2, max_tokens=6)
        pairs = [(e.token, round(e.logprob, 4)) for e in got.logprobs.content]
        assert pairs == [(e.token, round(e.logprob, 4)) for e in want.logprobs.content]
        assert [len(e.top_logprobs) for e in got.logprobs.content] == [2] * 6
        ask = {"prompt": "The capital of France is", "max_tokens": 1}
        p_want = direct.completions.create(model=name, extra_body={"prompt_logprobs": 1}, **ask)
        p_got = through.completions.create(model=MODEL, extra_body={"prompt_logprobs": 1}, **ask)

        def flat(out) -> list:
            entries = out.choices[0].model_extra["prompt_logprobs"][1:]
            return [
                sorted(
                    (t, round(e["logprob"], 4), e["rank"], e["decoded_token"]) for t, e in d.items()
                )
                for d in entries
            ]

        assert flat(p_got) == flat(p_want) and len(flat(p_got)) == 4


@pytest.mark.parametrize("name_programs", [True, False])
def test_backend_programs_name_the_program_in_vllm_xargs(name_programs: bool) -> None:
    from autellix.engine.sampling_params import SamplingParams
    from autellix.programs import ProgramSnapshot
    from autellix.scheduling import SchedulingConfig
    from autellix.server.remote_replica import RemoteReplica

    replica = RemoteReplica(0, "http://backend", "plas", SchedulingConfig(), False, name_programs)
    body = replica.body([1, 2], SamplingParams(max_tokens=3), ProgramSnapshot(), "chat-7")
    assert body.get("vllm_xargs") == ({"autellix_program": "chat-7"} if name_programs else None)
    assert "priority" not in body


def test_backend_events_longer_than_aiohttps_line_limit_arrive_whole() -> None:
    """An event (a chunk with prompt logprobs, say) may be far longer than the 512 KiB line
    aiohttp's reader allows; it arrives whole, however the backend's writes cut it."""
    from aiohttp import ClientSession, web

    from autellix.server.remote_replica import _events

    events = [{"choices": [{"text": "x" * 1_500_000}]}, {"choices": [{"text": "é"}]}]
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(0, len(raw), 70_001):  # cuts mid-line and mid-character
            await response.write(raw[i : i + 70_001])
        return response

    async def main() -> list:
        app = web.Application()
        app.router.add_get("/", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
                return [event async for event in _events(r)]
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == events


def test_a_backend_that_stops_leaves_the_rotation_without_a_call(serve, front) -> None:
    """The frontend looks at each backend's /health while it serves: a load balancer in
    front of the frontend hears of a dead backend before any client's call fails on it."""
    backend = serve()
    frontend = front(backend.base_url)
    assert httpx.get(f"{frontend.url}/health").status_code == 200
    backend.stop()
    deadline = time.monotonic() + 10
    while httpx.get(f"{frontend.url}/health").status_code != 503:
        assert time.monotonic() < deadline, "the frontend still calls the dead backend alive"
        time.sleep(0.1)
    assert httpx.get(f"{frontend.url}/health").json()["status"] == "unavailable"
