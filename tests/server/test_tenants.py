"""API keys, tenants and the caps that bound the server's state, over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from autellix.scheduling import SchedulingConfig
from autellix.server import tenants
from autellix.server.tenants import KeyFileError, KeyRing, Tenant, read_key_file

MODEL = "tiny"
FIXED = {"ignore_eos": True}
ENDLESS = 30_000  # max_tokens of a call that cannot finish within a test (long_context)
KEYS = {
    "keys": [
        {"key": "sk-alice", "tenant": "alice"},
        {"key": "sk-alice-2", "tenant": "alice", "max_programs": 3},
        {"key": "sk-bob", "tenant": "bob"},
    ]
}
TWO_TENANTS = {"keys": [{"key": "sk-alice", "tenant": "alice"}, {"key": "sk-bob", "tenant": "bob"}]}


def key_file(tmp_path: Path, keys: dict = KEYS, name: str = "keys.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(keys))
    return str(path)


def client(server, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=key, max_retries=0, default_headers=headers or None
    )


def http(server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def complete(c: openai.OpenAI, program: str | None = None, **extra) -> str:
    body = {**FIXED, **extra, **({"program_id": program} if program else {})}
    r = c.completions.create(model=MODEL, prompt="w1 w2", max_tokens=2, extra_body=body)
    return r.choices[0].text


# --- keys -------------------------------------------------------------------------------


def test_a_key_file_in_json_or_toml(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text(
        '[[keys]]\nkey = "sk-alice"\ntenant = "alice"\n\n'
        '[[keys]]\nkey = "sk-alice-2"\ntenant = "alice"\nmax_programs = 3\n\n'
        '[[keys]]\nkey = "sk-bob"\ntenant = "bob"\n'
    )
    alice = Tenant("alice", max_programs=3)
    expected = {"sk-alice": alice, "sk-alice-2": alice, "sk-bob": Tenant("bob")}
    assert read_key_file(toml) == read_key_file(key_file(tmp_path)) == expected
    toml.write_text('[[keys]]\nkey = "sk-carol"\ntenant = "carol"\nweight = 2.5\n')
    assert read_key_file(toml) == {"sk-carol": Tenant("carol", weight=2.5)}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"key": "k", "tenant": "a"}, {"key": "k", "tenant": "b"}], "given twice"),
        ([{"key": "k", "tenant": "a", "max_cals": 3}], "unknown field(s) max_cals"),
        ([{"key": "k", "tenant": "a", "max_calls": 0}], "max_calls must be a positive"),
        ([{"key": "k", "tenant": "a", "weight": 0}], "weight must be a positive number"),
        ([{"key": "k", "tenant": "a", "weight": "2"}], "weight must be a positive number"),
        ([{"key": "k", "tenant": "a", "weight": float("nan")}], "weight must be a positive"),
        ([{"key": "k", "tenant": "a\x1fb"}], "'tenant' must be"),
        ([{"key": "", "tenant": "a"}], "'key' must be"),
        ([{"key": "sk- 1", "tenant": "a"}], "'key' must be"),
        (
            [
                {"key": "k", "tenant": "a", "max_calls": 2},
                {"key": "l", "tenant": "a", "max_calls": 3},
            ],
            "has max_calls 2 on another key",
        ),
    ],
)
def test_a_bad_key_file_is_refused_by_name(tmp_path: Path, entries: list, message: str) -> None:
    with pytest.raises(KeyFileError, match=r"keys\.json: keys\[\d\]: ") as e:
        read_key_file(key_file(tmp_path, {"keys": entries}))
    assert message in str(e.value)


def test_no_keys_is_a_bad_key_file_not_an_open_server(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="expected a list of keys"):
        KeyRing(key_file=key_file(tmp_path, {"keys": []}))
    with pytest.raises(KeyFileError, match="--api-key must be"):
        KeyRing(api_key="")


def test_every_key_is_compared_in_constant_time(monkeypatch, tmp_path: Path) -> None:
    """hmac.compare_digest against every key, with no early exit on the first match."""
    compared = []

    def compare(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return a == b

    monkeypatch.setattr(tenants.hmac, "compare_digest", compare)
    ring = KeyRing("sk-default", key_file(tmp_path))
    assert ring.tenant("Bearer sk-alice") == Tenant("alice", max_programs=3)
    assert len(compared) == 4
    assert ring.tenant("Bearer sk-nope") is None and len(compared) == 8
    assert ring.tenant("Bearer sk-default") == Tenant("default")
    assert ring.tenant(None) is ring.tenant("sk-alice") is ring.tenant("Basic sk-alice") is None


def test_keys_are_checked_on_every_route_but_health_and_metrics(serve) -> None:
    server = serve(api_key="sk-one")
    for key in (None, "sk-wrong"):
        with http(server, key) as h:
            for method, path in [
                ("GET", "/models"),
                ("POST", "/completions"),
                ("POST", "/chat/completions"),
                ("GET", "/programs"),
                ("POST", "/programs"),
                ("GET", "/programs/p"),
                ("DELETE", "/programs/p"),
            ]:
                r = h.request(method, path, json={"model": MODEL})
                error = assert_error(r, 401, "invalid_api_key")
                assert error["type"] == "invalid_request_error", (method, path)
            assert h.get(f"{server.url}/health").status_code == 200
            assert h.get(f"{server.url}/metrics").status_code == 200
    with client(server, "sk-wrong") as c, pytest.raises(openai.AuthenticationError) as e:
        complete(c)
    assert e.value.code == "invalid_api_key"
    with client(server, "sk-one") as c:
        assert complete(c) is not None
        assert [m.id for m in c.models.list()] == [MODEL]
    assert server.frontend.table.programs == {}  # nothing was started by the refused calls


def test_metrics_can_need_a_key(serve) -> None:
    server = serve(api_key="sk-one", metrics_need_key=True)
    assert_error(httpx.get(f"{server.url}/metrics"), 401, "invalid_api_key")
    assert httpx.get(f"{server.url}/health").status_code == 200
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer sk-one"})
    assert r.status_code == 200 and "autellix_programs" in r.text


def test_without_keys_the_server_is_open_and_everything_is_the_default_tenant(serve) -> None:
    server = serve()
    with client(server, "anything") as c:
        complete(c, "mine")
    assert server.frontend.table.get("mine").tenant == "default"
    assert httpx.get(f"{server.base_url}/programs/mine").json()["id"] == "mine"


# --- tenants ----------------------------------------------------------------------------


def test_a_program_belongs_to_the_tenant_that_started_it(serve, tmp_path: Path) -> None:
    server = serve(api_keys=key_file(tmp_path))
    with http(server, "sk-alice") as alice, http(server, "sk-bob") as bob:
        assert alice.post("/programs", json={"program_id": "agent-1"}).status_code == 201
        for method in ("GET", "DELETE"):
            error = assert_error(bob.request(method, "/programs/agent-1"), 404, "program_not_found")
            assert "'agent-1'" in error["message"] and "alice" not in error["message"]
        assert alice.get("/programs/agent-1").json()["completed_calls"] == 0  # not deleted
        # bob's calls naming alice's program, by header and by body, start a program of his
        with client(server, "sk-bob", **{"X-Autellix-Program": "agent-1"}) as c:
            complete(c)
        with client(server, "sk-bob") as c:
            complete(c, "agent-1")
        assert alice.get("/programs/agent-1").json()["completed_calls"] == 0
        assert bob.get("/programs/agent-1").json()["completed_calls"] == 2
        # alice's other key is the same tenant
        with http(server, "sk-alice-2") as alice2:
            assert alice2.get("/programs/agent-1").json()["id"] == "agent-1"
        assert [p["id"] for p in bob.get("/programs").json()["data"]] == ["agent-1"]
        assert bob.delete("/programs/agent-1").json()["deleted"] is True
        assert alice.get("/programs/agent-1").status_code == 200
    table = server.frontend.table
    assert {(p.tenant, p.name) for p in table.programs.values()} == {("alice", "agent-1")}


def test_a_program_id_with_control_characters_is_refused(serve, tmp_path: Path) -> None:
    """The table namespaces ids with a control character; a client's id cannot hold one."""
    server = serve(api_keys=key_file(tmp_path))
    with http(server, "sk-alice") as alice:
        r = alice.post("/programs", json={"program_id": "bob\x1fagent"})
        assert_error(r, 400, "invalid_value")
        body = {"model": MODEL, "prompt": "w1", "max_tokens": 1, "program_id": "bob\x1fagent"}
        assert_error(alice.post("/completions", json=body), 400, "invalid_value")


def test_the_program_list_is_the_callers_and_pages(serve, tmp_path: Path) -> None:
    server = serve(api_keys=key_file(tmp_path))
    with http(server, "sk-bob") as bob, http(server, "sk-alice") as alice:
        names = [f"a{i:02d}" for i in range(45)]
        for name in reversed(names):
            assert bob.post("/programs", json={"program_id": name}).status_code == 201
        alice.post("/programs", json={"program_id": "b"})
        seen, after, pages = [], None, []
        while True:
            page = bob.get("/programs", params={"after": after} if after else {}).json()
            ids = [p["id"] for p in page["data"]]
            assert (page["first_id"], page["last_id"]) == (ids[0], ids[-1])
            seen += ids
            pages.append((len(ids), page["has_more"]))
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == names and pages == [(20, True), (20, True), (5, False)]
        page = bob.get("/programs", params={"limit": 100}).json()
        assert len(page["data"]) == 45 and not page["has_more"]
        page = bob.get("/programs", params={"limit": 5, "after": "a39"}).json()
        assert len(page["data"]) == 5 and not page["has_more"]  # exactly the last page
        assert bob.delete("/programs/a40").status_code == 200  # a cursor that left
        page = bob.get("/programs", params={"limit": 2, "after": "a40"}).json()
        assert [p["id"] for p in page["data"]] == ["a41", "a42"] and page["has_more"]
        assert alice.get("/programs").json()["data"][0]["id"] == "b"
        for limit in (0, 101, "x"):
            error = assert_error(
                bob.get("/programs", params={"limit": limit}), 400, "invalid_value"
            )
            assert error["param"] == "limit"
        empty = bob.get("/programs", params={"after": "zzz"}).json()
        assert empty["data"] == [] and empty["first_id"] is None and not empty["has_more"]


def test_keys_reload_and_a_bad_file_keeps_the_old_keys(serve, tmp_path: Path, caplog) -> None:
    path = key_file(tmp_path)
    server = serve(api_keys=path)
    keys = server.frontend.keys
    with http(server, "sk-carol") as carol, http(server, "sk-bob") as bob:
        assert carol.get("/models").status_code == 401
        key_file(tmp_path, {"keys": [{"key": "sk-carol", "tenant": "carol"}]})
        keys.reload_logged()
        assert carol.get("/models").status_code == 200
        assert bob.get("/models").status_code == 401  # a key left the file: it is gone
        Path(path).write_text('{"keys": [{"key": "sk-bob"')  # half written
        with caplog.at_level(logging.ERROR, logger="autellix.tenants"):
            keys.reload_logged()
        assert "keys not reloaded, the old ones stay" in caplog.text
        assert carol.get("/models").status_code == 200 and bob.get("/models").status_code == 401


@contextmanager
def autellix_serve(*flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`autellix serve` in a process of its own (signals go to its main thread)."""
    from autellix.bench.sweep import wait_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "autellix.cli", "serve", "--port", str(port), *flags]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(command, env=env)
    try:
        wait_healthy(url, proc, what="autellix serve")
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(30)


def test_sighup_reloads_the_key_file_of_autellix_serve(tiny_llama: Path, tmp_path: Path) -> None:
    path = key_file(tmp_path)
    with autellix_serve("--model", str(tiny_llama), "--api-keys", path) as (proc, url):

        def status(key: str) -> int:
            r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            return r.status_code

        assert (status("sk-bob"), status("sk-carol")) == (200, 401)
        key_file(tmp_path, {"keys": [{"key": "sk-carol", "tenant": "carol"}]})
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while status("sk-carol") != 200:
            assert time.monotonic() < deadline, "the keys were not reloaded"
            time.sleep(0.05)
        assert status("sk-bob") == 401
        Path(path).write_text("not json")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None and status("sk-carol") == 200  # the old keys stay


def test_a_server_on_the_network_without_a_key_warns(monkeypatch, capsys) -> None:
    import argparse

    from autellix.server import drain, launch

    monkeypatch.setattr(drain, "run", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    launch.add_serve_flags(parser)
    for flags, warned in [
        (["--host", "0.0.0.0"], True),
        (["--host", "10.1.2.3", "--api-key", "k"], False),
        (["--host", "127.0.0.1"], False),
        (["--host", "::1"], False),
        (["--host", "localhost"], False),
    ]:
        launch.serve(parser.parse_args(flags))
        assert ("without an API key" in capsys.readouterr().err) is warned, flags


def test_a_bad_key_file_stops_autellix_serve_with_one_line(tmp_path: Path, capsys) -> None:
    import argparse

    from autellix.server import launch

    parser = argparse.ArgumentParser()
    launch.add_serve_flags(parser)
    bad = tmp_path / "keys.toml"
    bad.write_text("[[keys]]\nkey = 1\n")
    with pytest.raises(ValueError) as e:
        launch.serve(parser.parse_args(["--api-keys", str(bad)]))
    assert str(e.value).startswith("--api-keys: ") and "\n" not in str(e.value)


# --- bounded state ----------------------------------------------------------------------


def test_the_process_table_is_capped(serve) -> None:
    server = serve(max_programs=2)
    with http(server, None) as h, client(server, "x") as c:
        assert h.post("/programs", json={"program_id": "p1"}).status_code == 201
        complete(c, "p2")  # started by its first call
        r = h.post("/programs", json={"program_id": "p3"})
        error = assert_error(r, 429, "too_many_programs")
        assert r.headers["retry-after"] == "1" and error["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError) as e:
            complete(c, "p3")
        assert e.value.code == "too_many_programs"
        with pytest.raises(openai.RateLimitError):
            complete(c)  # a program of one call needs a row too
        complete(c, "p1")  # a program in the table takes calls
        h.delete("/programs/p1")
        complete(c)
        assert h.post("/programs", json={"program_id": "p3"}).status_code == 201
    assert set(server.frontend.table.programs) == {"p2", "p3"}


def test_a_tenant_is_capped_by_its_key_file(serve, tmp_path: Path) -> None:
    server = serve(api_keys=key_file(tmp_path))  # alice: max_programs 3 (on her second key)
    with http(server, "sk-alice") as alice, http(server, "sk-bob") as bob:
        for i in range(3):
            assert alice.post("/programs", json={"program_id": f"p{i}"}).status_code == 201
        assert_error(alice.post("/programs", json={"program_id": "p3"}), 429, "too_many_programs")
        with client(server, "sk-alice") as c, pytest.raises(openai.RateLimitError):
            complete(c, "p3")
        for i in range(4):
            assert bob.post("/programs", json={"program_id": f"p{i}"}).status_code == 201
    assert server.frontend.table.count("alice") == 3


def endless(c: openai.OpenAI, program: str | None) -> openai.Stream:
    """A streamed call that cannot finish within a test (its headers are in)."""
    body = {**FIXED, **({"program_id": program} if program else {})}
    return c.completions.create(
        model=MODEL, prompt="w1 w2", max_tokens=ENDLESS, stream=True, extra_body=body
    )


@contextmanager
def endless_streams(server, key: str, programs: list[str]) -> Iterator[list]:
    """`endless` calls, each decoding, until the block ends (then the client leaves)."""
    with ExitStack() as stack:
        streams = []
        for program in programs:
            c = stack.enter_context(client(server, key))
            stream = stack.enter_context(endless(c, program))
            next(stream)  # its first token: the call runs on the replica
            streams.append(stream)
        yield streams


def test_a_programs_calls_in_flight_are_capped(serve, long_context) -> None:
    server = serve(engine=long_context, max_program_calls=2)
    with endless_streams(server, "x", ["fan", "fan"]), client(server, "x") as c:
        with pytest.raises(openai.RateLimitError) as e:
            endless(c, "fan").close()
        assert e.value.code == "too_many_program_calls"
        assert e.value.response.headers["retry-after"] == "1"
        complete(c, "other")
        with pytest.raises(openai.BadRequestError) as e:  # more than it may ever have
            c.completions.create(model=MODEL, prompt="w1", max_tokens=1, n=3)
        assert "a program may have 2 in flight" in e.value.message
    server.wait_idle()
    with client(server, "x") as c:
        complete(c, "fan")  # the streams left: the program takes calls again


def test_one_tenant_flooding_leaves_room_for_another(serve, long_context, tmp_path) -> None:
    """Two tenants, no caps of their own: each may fill half the replicas' room (2 of 4
    calls); the flooder's third call is a 429, and the other tenant's call is answered
    (in the batch's third slot: the flood's calls would hold the others for minutes)."""
    server = serve(
        engine={**long_context, "max_running": 3},
        max_queued_per_replica=1,
        api_keys=key_file(tmp_path),
    )
    assert server.frontend.room == 4
    with endless_streams(server, "sk-alice", ["a1", "a2"]), client(server, "sk-alice") as c:
        for program in ("a3", "a4", "a1", None):  # the flood goes on
            with pytest.raises(openai.RateLimitError) as e:
                endless(c, program).close()
            assert e.value.code == "too_many_calls" and "'alice'" in e.value.message
        with client(server, "sk-bob") as bob:
            assert complete(bob, "b1") is not None
        assert server.frontend.in_flight.tenants == {"alice": 2}
    assert server.frontend.table.get("bob\x1fb1").completed_calls == 1


def flood_and_two(server, flood: int) -> tuple[list[str], int]:
    """Alice sends `flood` calls of 60 tokens, one program each; once they are all queued,
    Bob sends two calls of 4 tokens. Returns the tenants in the order their calls finished,
    and how many of Alice's calls had finished when Bob's last one did."""
    finished: list[str] = []

    async def main() -> None:
        alice = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-alice", max_retries=0)
        bob = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-bob", max_retries=0)

        async def call(c: openai.AsyncOpenAI, who: str, i: int, tokens: int) -> None:
            body = {**FIXED, "program_id": f"{who}{i}"}
            await c.completions.create(
                model=MODEL, prompt="w1 w2", max_tokens=tokens, extra_body=body
            )
            finished.append(who)

        async with alice, bob:
            flood_calls = [asyncio.create_task(call(alice, "alice", i, 60)) for i in range(flood)]
            deadline = time.monotonic() + 30
            while (await asyncio.to_thread(server.engine_stats))["waiting"] < flood - 4:
                assert time.monotonic() < deadline, "the flood did not queue"
                await asyncio.sleep(0.01)
            await asyncio.gather(*(call(bob, "bob", i, 4) for i in range(2)))
            await asyncio.gather(*flood_calls)

    asyncio.run(main())
    return finished, finished.index("bob", finished.index("bob") + 1) - 1


@pytest.mark.parametrize("shares", [True, False])
def test_a_flooding_tenant_does_not_starve_another(serve, tmp_path, shares: bool) -> None:
    """Alice floods 40 calls into a batch of 2; Bob's two calls are served beside the
    flood (each tenant gets half the batch), not after it. Without tenant shares, program-
    level LAS alone serves Alice's earlier fresh programs first: Bob waits for the flood."""
    server = serve(
        engine={
            "max_running": 2,
            "num_kv_blocks": 512,
            "scheduling": SchedulingConfig(tenant_shares=shares),
        },
        api_keys=key_file(tmp_path, TWO_TENANTS),
    )
    order, alice_before_bob = flood_and_two(server, flood=40)
    assert order.count("alice") == 40 and order.count("bob") == 2
    if shares:
        assert alice_before_bob <= 6, order  # Bob ran beside the 2-4 calls in the batch
    else:
        assert alice_before_bob >= 30, order


def test_a_tenants_weight_is_its_share_of_the_batch(serve, tmp_path) -> None:
    """Alice (weight 4) and Bob (weight 1) each send 20 equal calls at once into a batch of
    5: Alice's calls hold 4 of the 5 slots, so most of the first 20 answered are hers."""
    keys = {"keys": [{"key": "sk-alice", "tenant": "alice", "weight": 4}, TWO_TENANTS["keys"][1]]}
    server = serve(
        engine={"max_running": 5, "num_kv_blocks": 512}, api_keys=key_file(tmp_path, keys)
    )
    assert server.frontend.tenant_weight("alice") == 4 and server.frontend.tenant_weight("x") == 1
    finished: list[str] = []

    async def main() -> None:
        async def call(key: str, i: int) -> None:
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key=key) as c:
                body = {**FIXED, "program_id": f"p{i}"}
                await c.completions.create(model=MODEL, prompt="w1", max_tokens=40, extra_body=body)
            finished.append(key)

        await asyncio.gather(*(call(key, i) for i in range(20) for key in ("sk-alice", "sk-bob")))

    asyncio.run(main())
    assert finished[:20].count("sk-alice") >= 14, finished  # 16 at 4:1; 10 at 1:1


def test_a_tenants_calls_cap_from_its_key_file(serve, long_context, tmp_path) -> None:
    keys = {"keys": [{"key": "sk-alice", "tenant": "alice", "max_calls": 1}]}
    server = serve(engine=long_context, api_keys=key_file(tmp_path, keys))
    with endless_streams(server, "sk-alice", ["a1"]), client(server, "sk-alice") as c:
        with pytest.raises(openai.RateLimitError) as e:
            endless(c, "a2").close()
        assert e.value.code == "too_many_calls"


def test_a_body_over_the_limit_is_a_413(serve) -> None:
    server = serve(max_body_bytes=2000)
    with client(server, "x") as c:
        complete(c)  # a small body passes
        with pytest.raises(openai.APIStatusError) as e:
            c.completions.create(model=MODEL, prompt="w1 " * 1000, max_tokens=1)
        assert e.value.status_code == 413 and e.value.code == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(100):
            yield b"w1 " * 10
        yield b'"}'

    r = httpx.post(
        f"{server.base_url}/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    error = assert_error(r, 413, "request_too_large")
    assert error["type"] == "invalid_request_error" and "2000 bytes" in error["message"]
    assert server.frontend.table.programs == {}


def test_the_sdk_with_a_key(serve, tmp_path: Path) -> None:
    import autellix

    server = serve(api_keys=key_file(tmp_path))
    with autellix.Program(server.base_url, api_key="sk-bob", program_id="agent") as program:
        program.client.completions.create(model=MODEL, prompt="w1", max_tokens=2)
        assert program.info()["completed_calls"] == 1
        assert server.frontend.table.get("bob\x1fagent").tenant == "bob"
    assert server.frontend.table.programs == {}


def guard_run(headers: dict[str, str], chunks: Iterator[bytes], limit: int) -> tuple[int, int]:
    """(the status the Guard answers, the body messages it read) for a streamed body."""
    from autellix.server.guard import Guard

    read, sent = [0], []

    async def receive() -> dict:
        read[0] += 1
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "path": "/v1/completions", "headers": raw}
    asyncio.run(Guard(app, KeyRing(), limit)(scope, receive, send))
    return sent[0]["status"], read[0]


def test_the_guard_never_reads_a_body_past_the_limit() -> None:
    """A declared length over the limit is refused unread; an undeclared one is counted and
    refused as soon as it passes the limit, however long the client would go on."""
    forever = iter(lambda: b"x" * 100, None)
    assert guard_run({"content-length": str(10**12)}, forever, 1000) == (413, 0)
    assert guard_run({}, forever, 1000) == (413, 11)
    assert guard_run({}, iter([b"x" * 100] * 10), 1000) == (200, 11)
