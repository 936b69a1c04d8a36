"""Program sessions, the SDK, bad input, the waiting bound and disconnects, over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time

import httpx
import openai
import pytest

import autellix

MODEL = "tiny"
FIXED = {"ignore_eos": True}
ENDLESS = 30_000  # max_tokens of a call that cannot finish within a test (long_context)


def test_program_routes(serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.base_url) as http:
        before = time.time()
        created = http.post("/programs", json={"program_id": "agent-1"})
        assert created.status_code == 201 and created.json()["id"] == "agent-1"
        # times are Unix times, as everywhere in OpenAI's shapes
        assert before - 1 <= created.json()["started"] <= time.time() + 1
        assert http.get("/programs/agent-1").json()["started"] == created.json()["started"]
        assert http.post("/programs", json={"program_id": "agent-1"}).status_code == 409
        anonymous = http.post("/programs").json()["id"]
        listed = {p["id"] for p in http.get("/programs").json()["data"]}
        assert {"agent-1", anonymous} <= listed
        assert http.get("/programs/nope").status_code == 404
        assert http.get("/programs/nope").json()["error"]["code"] == "program_not_found"
        assert http.delete("/programs/nope").status_code == 404
        assert http.delete("/programs/agent-1").json()["deleted"] is True
        assert http.get("/programs/agent-1").status_code == 404
        # an id may hold a slash, as the table takes it: its routes find it
        assert http.post("/programs", json={"program_id": "team/agent"}).status_code == 201
        assert http.get("/programs/team/agent").json()["id"] == "team/agent"
        assert http.delete("/programs/team/agent").json()["id"] == "team/agent"
        assert http.get("/programs/team/agent").status_code == 404


def test_process_table_after_a_known_sequence(serve) -> None:
    server = serve()
    with autellix.Program(server.base_url, program_id="chat") as program:
        for _ in range(3):
            program.client.completions.create(
                model=MODEL, prompt="w1 w2", max_tokens=4, temperature=0, extra_body=FIXED
            )
        branch = program.thread("t1")
        branch.completions.create(model=MODEL, prompt="w3", max_tokens=2, extra_body=FIXED)
        info = program.info()
        assert info["completed_calls"] == 4 and info["calls"] == []
        assert info["service"] > 0 and info["critical_path"] == pytest.approx(info["service"])
        assert info["engines"] == [0]
        assert info["last_completion"] >= info["first_arrival"]
    assert "chat" not in server.frontend.table  # ended on exit


def test_program_ends_on_exception_and_ids_from_body_or_header(serve) -> None:
    server = serve()
    with pytest.raises(RuntimeError), autellix.Program(server.base_url) as program:
        pid = program.id
        raise RuntimeError("agent crashed")
    assert pid not in server.frontend.table
    with openai.OpenAI(base_url=server.base_url, api_key="x") as c:
        c.completions.create(
            model=MODEL,
            prompt="w1",
            max_tokens=2,
            extra_body={"program_id": "by-body", "thread_id": "b", **FIXED},
        )
        c.completions.create(
            model=MODEL,
            prompt="w1",
            max_tokens=2,
            extra_body=FIXED,
            extra_headers={"X-Autellix-Program": "by-header"},
        )
    table = server.frontend.table
    assert table.get("by-body").completed_calls == 1  # started on first use
    assert table.get("by-header").completed_calls == 1
    # a call with no program is a program of one call, gone when it finishes
    assert set(table.programs) == {"by-body", "by-header"}


def test_async_program_fan_out(serve) -> None:
    server = serve()

    async def main() -> dict:
        async with autellix.AsyncProgram(server.base_url, program_id="tree") as program:

            async def branch(i: int) -> str:
                r = await program.thread(f"t{i}").completions.create(
                    model=MODEL, prompt=f"w{i} w9", max_tokens=5, extra_body=FIXED
                )
                return r.choices[0].text

            await asyncio.gather(*(branch(i) for i in range(4)))
            return await program.info()

    info = asyncio.run(main())
    assert info["completed_calls"] == 4
    # parallel threads: the critical path is below the sum of the services
    assert 0 < info["critical_path"] < info["service"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('{"model": "tiny", "prompt": ', "not valid JSON"),
        ('{"model": "tiny", "prompt": "w1", "max_tokens": "many"}', "max_tokens"),
        ('{"model": "tiny", "prompt": "w1", "temperature": 9}', "temperature"),
        ('{"model": "tiny", "prompt": "w1", "n": 0}', "n:"),
        ('{"model": "tiny", "prompt": "w1", "n": 99}', "n:"),
        ('{"model": "tiny", "prompt": "w1", "max_tokens": 5000}', "exceeds the model's context"),
        ('{"model": "tiny", "prompt": [999999]}', "token ids must be in"),
        ('{"model": "tiny", "prompt": []}', "empty"),
        ('{"prompt": "w1"}', "model"),
        ('{"model": "tiny", "prompt": "w1", "logprobs": 9}', "logprobs on completions"),
        ('{"model": "tiny", "prompt": "w1", "guided_json": {}}', "guided_json is not supported"),
        ('{"model": "tiny", "prompt": "w1", "echo": true}', "echo is not supported"),
        ('{"model": "tiny", "prompt": "w1", "presence_penalty": 2.5}', "presence_penalty"),
        ('{"model": "tiny", "prompt": "w1", "stream_options": {}}', "only allowed when stream"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(serve, body: str, fragment: str) -> None:
    server = serve()
    r = httpx.post(
        f"{server.base_url}/completions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_openai_client_sees_the_errors(serve) -> None:
    server = serve()
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        chat = functools.partial(
            c.chat.completions.create, messages=[{"role": "user", "content": "w1"}]
        )
        for route in (chat, functools.partial(c.completions.create, prompt="w1")):
            with pytest.raises(openai.NotFoundError, match="does not exist") as unknown:
                route(model="other")  # as OpenAI and vLLM answer it
            assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
        with pytest.raises(openai.BadRequestError, match="exceeds the model's context"):
            c.completions.create(model=MODEL, prompt="w1 " * 250, max_tokens=10)


@contextlib.contextmanager
def server_log(caplog: pytest.LogCaptureFixture):
    """caplog, seeing uvicorn's records too: its loggers do not propagate to the root, and
    it sets them up when the server is made, so enter this after the server started."""
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


def client_addr(r: httpx.Response) -> tuple:
    """The client's end of the connection a response came over (ask before the next
    request: a connection the server closed is dropped from the pool then)."""
    return r.extensions["network_stream"].get_extra_info("client_addr")


BAD_PROGRAM_BODIES = {  # kind: (body, param, code, message fragment)
    "invalid JSON": ('{"program_id": ', None, "invalid_json", "not valid JSON"),
    "an extra field": (
        '{"program_id": "a", "colour": "red"}',
        "colour",
        "invalid_value",
        "colour: Extra inputs are not permitted",
    ),
    "an empty id": (
        '{"program_id": ""}',
        "program_id",
        "invalid_value",
        "program_id: a program id has 1 to 256 characters",
    ),
    "an id a header cannot carry": (
        '{"program_id": "agent-\u00e9"}',
        "program_id",
        "invalid_value",
        "program_id: a program id is printable ASCII (it travels in a header)",
    ),
    "an id of the wrong type": (
        '{"program_id": 5}',
        "program_id",
        "invalid_value",
        "program_id: Input should be a valid string",
    ),
    "a kind of the wrong type": (
        '{"kind": ["x"]}',
        "kind",
        "invalid_value",
        "kind: Input should be a valid string",
    ),
    "a body that is not an object": ('["agent-1"]', None, "invalid_value", "object"),
}


@pytest.mark.parametrize("kind", list(BAD_PROGRAM_BODIES))
def test_a_bad_program_body_is_a_400_in_openai_shape_and_keeps_the_connection(
    serve, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    body, param, code, fragment = BAD_PROGRAM_BODIES[kind]
    server = serve()
    with server_log(caplog), httpx.Client(base_url=server.base_url) as http:
        r = http.post("/programs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert (error["param"], error["code"]) == (param, code), error
        assert fragment in error["message"], error
        assert "pydantic" not in error["message"] and "\n" not in error["message"], error
        assert r.headers.get("connection") != "close"
        where = client_addr(r)
        time.sleep(0.05)  # a close from the server would have arrived by now
        after = http.get("/programs")
        assert after.status_code == 200 and after.json()["data"] == []  # nothing started
        assert client_addr(after) == where, "the server dropped the connection"
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


def test_a_bad_chat_body_names_its_field(client, server) -> None:
    """The chat route's validation errors, in the shape the program routes share."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "w1"}]}
    r = httpx.post(f"{server.base_url}/chat/completions", json={**chat, "max_tokens": "many"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == ("max_tokens", "invalid_value")
    assert error["message"].startswith("max_tokens: ")


def slow_down(server, seconds: float = 0.02) -> None:
    """Make each engine step take a while, so that calls overlap for sure."""
    executor = server.frontend.replicas[0].engine.executor
    execute = executor.execute

    def slow(batch):
        time.sleep(seconds)
        return execute(batch)

    executor.execute = slow


def test_full_queue_answers_429_with_retry_after(serve) -> None:
    server = serve(engine={"max_running": 1}, max_queued_per_replica=1)
    slow_down(server)

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            body = {"model": MODEL, "prompt": "w1 w2", "max_tokens": 30, **FIXED}
            first = [asyncio.create_task(http.post("/completions", json=body)) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are in: one running, one waiting
            third = await http.post("/completions", json=body)
            assert third.headers["retry-after"] == "1"
            assert third.json()["error"]["type"] == "rate_limit_error"
            return [third.status_code] + [(await t).status_code for t in first]

    assert asyncio.run(main()) == [429, 200, 200]


def test_a_full_queue_refuses_new_programs_before_programs_under_way(serve) -> None:
    """One running and one waiting fill the queue for new programs (max_running 1, one
    queued); a program that has called before may queue one more, and no further."""
    server = serve(engine={"max_running": 1}, max_queued_per_replica=1)
    slow_down(server)

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:

            def post(program: str):
                body = {"model": MODEL, "prompt": "w1 w2", "max_tokens": 30, **FIXED}
                headers = {"X-Autellix-Program": program}
                return http.post("/completions", json=body, headers=headers)

            first = [asyncio.create_task(post("old")) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are in: one running, one waiting
            new = await post("new")
            assert new.json()["error"]["type"] == "rate_limit_error"
            third = asyncio.create_task(post("old"))
            await asyncio.sleep(0.3)
            fourth = await post("old")
            return [new.status_code, fourth.status_code] + [
                (await t).status_code for t in (*first, third)
            ]

    assert asyncio.run(main()) == [429, 429, 200, 200, 200]


def eventually(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("processes", [False, True], ids=["local", "child-process"])
def test_disconnect_mid_stream_aborts_the_call(serve, long_context, processes: bool) -> None:
    """The engine stops the call once the client leaves: a call it could not finish in
    the test's time is gone from it within seconds, and no more tokens are computed."""
    server = serve(engine=long_context, processes=processes)
    body = {"model": MODEL, "prompt": "w1 w2", "max_tokens": ENDLESS, "stream": True, **FIXED}
    with (
        httpx.Client(base_url=server.base_url, timeout=60) as http,
        http.stream(
            "POST", "/completions", json=body, headers={"X-Autellix-Program": "leaver"}
        ) as r,
    ):
        events = (json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:"))
        for _ in range(3):  # the call decodes
            assert next(events)["choices"][0]["text"] is not None
    server.wait_engines_stopped(below=ENDLESS)
    program = server.frontend.table.get("leaver")
    eventually(lambda: program.calls == {}, "the process table closed the call")
    assert program.completed_calls == 1 and program.service > 0
    assert server.frontend.replicas[0].in_flight == 0


def test_disconnect_while_waiting_aborts_the_call(serve, long_context) -> None:
    """A call that leaves while it waits behind a running one is dropped from the
    engine's queue at once; then the running one leaves too and the engine stops."""
    server = serve(engine={**long_context, "max_running": 1})
    engine = server.frontend.replicas[0].engine
    body = {"model": MODEL, "prompt": "w1", "max_tokens": ENDLESS, **FIXED}

    def stats() -> dict:
        return server.engine_stats()

    async def until(condition, what: str) -> None:
        await asyncio.to_thread(eventually, condition, what)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            hog = asyncio.create_task(
                http.post("/completions", json=body, headers={"X-Autellix-Program": "hog"})
            )
            await until(lambda: stats()["running"] == 1, "the hog runs")
            waiter = asyncio.create_task(
                http.post("/completions", json=body, headers={"X-Autellix-Program": "impatient"})
            )
            await until(lambda: stats()["waiting"] == 1, "the second call waits")
            waiting = [s.call_id for s in list(engine.calls.values()) if not s.running]
            assert len(waiting) == 1
            assert set(server.frontend.table.get("impatient").calls) == set(waiting)
            waiter.cancel()  # closes the connection while the call waits
            await asyncio.gather(waiter, return_exceptions=True)
            await until(lambda: stats()["waiting"] == 0, "the waiting call left the engine")
            assert waiting[0] not in engine.calls and stats()["running"] == 1  # the hog runs on
            await until(
                lambda: server.frontend.table.get("impatient").calls == {},
                "the process table closed the waiting call",
            )
            hog.cancel()
            await asyncio.gather(hog, return_exceptions=True)
            await asyncio.to_thread(server.wait_engines_stopped, 2 * ENDLESS)

    asyncio.run(main())


def test_metrics_in_prometheus_format(serve) -> None:
    server = serve()
    with openai.OpenAI(base_url=server.base_url, api_key="x") as c:
        c.completions.create(model=MODEL, prompt="w1 w2 w3 w4 w5", max_tokens=3, extra_body=FIXED)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "autellix_queue_length{",
        "autellix_running{",
        "autellix_swapped{",
        "autellix_preemptions{",
        "autellix_swap_out_bytes{",
        "autellix_kv_usage{",
        "autellix_prefix_cache_hit_rate{",
        "autellix_programs ",
        "autellix_call_latency_seconds_bucket",
        "autellix_program_latency_seconds_count",
        "autellix_replica_alive{",
    ):
        assert name in text, name
