"""Faults: draining on SIGTERM, a replica killed under load, a hung replica, and a
restart on the same port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from autellix.server.replica import ProcessReplica

MODEL = "tiny"
FIXED = {"ignore_eos": True}
ENDLESS = 30_000  # max_tokens of a call that cannot finish within a test (long_context)


def wait_for(predicate, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def events(response: httpx.Response):
    """A stream's data events, parsed ([DONE] as the string)."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            yield data if data == "[DONE]" else json.loads(data)


class Caller(threading.Thread):
    """One call in a thread: streamed (its events) or whole (its status and body)."""

    def __init__(self, base_url: str, max_tokens: int, stream: bool, prompt: str = "w1 w2"):
        super().__init__(daemon=True)
        self.base_url, self.stream = base_url, stream
        self.body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, **FIXED}
        self.first = threading.Event()  # a stream's first token came
        self.events: list = []
        self.status: int | None = None
        self.json: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=120) as http:
                if not self.stream:
                    r = http.post("/completions", json=self.body)
                    self.status, self.json = r.status_code, r.json()
                    return
                with http.stream("POST", "/completions", json={**self.body, "stream": True}) as r:
                    self.status = r.status_code
                    for event in events(r):
                        self.events.append(event)
                        self.first.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()

    @property
    def answered(self) -> bool:
        if self.stream:
            done = self.events[-1:] == ["[DONE]"]
            return self.status == 200 and done and self.stream_error is None
        return self.status == 200

    @property
    def stream_error(self) -> dict | None:
        return next((e["error"] for e in self.events if isinstance(e, dict) and "error" in e), None)


def assert_openai_error(body: dict, status_type: str = "service_unavailable") -> dict:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert error["type"] == status_type and "Traceback" not in error["message"]
    return error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_while_draining(server) -> None:
    """New calls and /health answer 503 with the draining error, in OpenAI's shape."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        r = http.post("/completions", json={"model": MODEL, "prompt": "w3", "max_tokens": 2})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert assert_openai_error(r.json())["code"] == "draining"
        r = http.post("/programs", json={})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        health = http.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"


# --- draining ---------------------------------------------------------------------------


def test_sigterm_drains_in_flight_calls_then_exits(serve, long_context) -> None:
    server = serve(engine=long_context, drain_timeout=60)
    callers = [Caller(server.base_url, 4000, stream) for stream in (True, False)]
    for c in callers:
        c.start()
    wait_for(lambda: server.frontend.calls_in_flight == 2, what="both calls in flight")
    callers[0].first.wait(30)
    signalled = time.monotonic()
    server.server.handle_exit(signal.SIGTERM, None)
    refused_while_draining(server)
    for c in callers:
        c.join(60)
    server.thread.join(30)
    took = time.monotonic() - signalled
    assert not server.thread.is_alive(), "the server did not exit after the drain"
    streamed, whole = callers
    assert streamed.answered and streamed.events[-2]["choices"][0]["finish_reason"] == "length"
    assert whole.answered and whole.json["usage"]["completion_tokens"] == 4000
    print(f"drain: 2 calls in flight finished, server exited {took:.1f} s after SIGTERM")


def test_calls_past_the_drain_timeout_are_stopped_cleanly(serve, long_context) -> None:
    server = serve(engine=long_context, drain_timeout=1)
    callers = [Caller(server.base_url, ENDLESS, stream) for stream in (True, False)]
    for c in callers:
        c.start()
    wait_for(lambda: server.frontend.calls_in_flight == 2, what="both calls in flight")
    callers[0].first.wait(30)
    signalled = time.monotonic()
    server.server.handle_exit(signal.SIGTERM, None)
    for c in callers:
        c.join(30)
        assert not c.is_alive(), "a call hung past the drain"
    server.thread.join(30)
    took = time.monotonic() - signalled
    assert not server.thread.is_alive() and took < 10, took
    streamed, whole = callers
    assert streamed.status == 200 and streamed.error is None
    error = streamed.stream_error
    assert error is not None and "shut down" in error["message"], streamed.events[-3:]
    assert_openai_error({"error": error})
    assert streamed.events[-2:] == [{"error": error}, "[DONE]"]  # the end, as vLLM sends it
    assert whole.status == 503 and "shut down" in assert_openai_error(whole.json)["message"]
    print(f"drain timeout 1 s: 2 endless calls stopped, server exited {took:.1f} s after SIGTERM")
    # the fixture's teardown checks that the engine holds no call and no KV block


def test_a_second_signal_stops_the_calls_at_once(serve, long_context) -> None:
    server = serve(engine=long_context, drain_timeout=600)
    caller = Caller(server.base_url, ENDLESS, stream=True)
    caller.start()
    caller.first.wait(30)
    server.server.handle_exit(signal.SIGTERM, None)
    wait_for(lambda: server.frontend.draining, what="the drain")
    server.server.handle_exit(signal.SIGINT, None)
    server.thread.join(15)
    assert not server.thread.is_alive()
    caller.join(15)
    assert not caller.is_alive() and "shut down" in caller.stream_error["message"]


# --- a replica killed under load ----------------------------------------------------------


def test_kill_9_of_a_replica_under_load_loses_only_its_started_calls(serve) -> None:
    # 4 running calls a replica: of the 10 calls each gets, most wait in its queue
    server = serve(replicas=2, processes=True, balancer="least-used", engine={"max_running": 4})
    replicas = server.frontend.replicas
    assert all(isinstance(r, ProcessReplica) for r in replicas)
    callers = [Caller(server.base_url, 150, True, prompt=f"w{i} w2") for i in range(20)]
    for c in callers:
        c.start()
    wait_for(lambda: sum(r.in_flight for r in replicas) == 20, what="every call in flight")
    wait_for(lambda: sum(bool(c.events) for c in callers) >= 6, 60, "calls under way")
    victim = replicas[0]

    async def kill() -> tuple[int, dict]:  # on the server's loop: no call moves meanwhile
        stats = await victim.stats()
        os.kill(victim.process.pid, signal.SIGKILL)
        return victim.in_flight, stats

    in_flight, stats = server.call(kill())
    for c in callers:
        c.join(120)
        assert not c.is_alive(), "a call hung after the kill"
    answered = sum(c.answered for c in callers)
    failed = [c for c in callers if not c.answered]
    print(
        f"kill -9 under load: {answered} answered, {len(failed)} failed, "
        f"{in_flight} in flight on the dead replica ({stats['running']} running, "
        f"{stats['waiting']} waiting)"
    )
    # only calls that had started on the dead replica fail (their tokens were sent, so
    # they cannot move); its waiting calls move to the live one
    assert stats["waiting"] > 0 and answered + len(failed) == 20
    assert len(failed) < in_flight
    for c in failed:  # a token, then a clean error event, never a cut connection
        assert c.error is None and c.status == 200
        assert "choices" in c.events[0], c.events
        assert "died" in assert_openai_error({"error": c.stream_error})["message"]
    assert not victim.alive
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        for i in range(4):
            r = http.post(
                "/completions", json={"model": MODEL, "prompt": f"w{i}", "max_tokens": 3, **FIXED}
            )
            assert r.status_code == 200, r.text
        assert replicas[1].in_flight == 0


# --- a hung replica ---------------------------------------------------------------------


def test_a_hung_replica_is_treated_as_dead(serve, long_context) -> None:
    server = serve(engine=long_context, replicas=2, processes=True, replica_timeout=2)
    replicas = server.frontend.replicas
    callers = [Caller(server.base_url, ENDLESS, True, prompt=f"w{i} w2") for i in range(2)]
    for c in callers:
        c.start()
    wait_for(lambda: all(r.in_flight == 1 for r in replicas), what="a call on each replica")
    for c in callers:
        c.first.wait(30)
    victim = replicas[0]
    os.kill(victim.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(lambda: not victim.alive, timeout=15, what="the hang to be seen")
        seen = time.monotonic() - stopped
        assert 2 <= seen < 10, seen  # 2 s and the watchdog's period, on a busy machine
        wait_for(lambda: any(c.stream_error for c in callers), what="the hung call's error")
        hung = next(c for c in callers if c.stream_error)
        hung.join(10)
        assert not hung.is_alive() and hung.error is None
        message = assert_openai_error({"error": hung.stream_error})["message"]
        assert "made no progress for 2 s" in message, message
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            r = http.post(
                "/completions", json={"model": MODEL, "prompt": "w5", "max_tokens": 3, **FIXED}
            )
            assert r.status_code == 200, r.text
            health = http.get(f"{server.url}/health").json()
            assert [rep["alive"] for rep in health["replicas"]] == [False, True]
    finally:
        if victim.process.is_alive():
            os.kill(victim.process.pid, signal.SIGKILL)
        server.call(cut(server.frontend))
    for c in callers:
        c.join(15)
        assert not c.is_alive()


def test_a_long_prefill_is_not_a_hang(serve, long_context) -> None:
    """A child busy prefilling sends no output for seconds, but its heartbeat says it is
    alive: the watchdog leaves it be."""
    # 8 tokens a step: some 2,500 steps, seconds even on a fast machine
    engine = {**long_context, "max_prefill_tokens": 8}
    server = serve(engine=engine, replicas=2, processes=True, replica_timeout=1)
    prompt = [5 + i % 200 for i in range(20_000)]
    started = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        r = http.post("/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert took > 2, f"the prefill took {took:.1f} s: too short to test the watchdog"
    assert all(rep.alive for rep in server.frontend.replicas)


async def cut(frontend) -> None:
    frontend.cut_calls("the test is over")


# --- `autellix serve` as a process: SIGTERM, exit 0, and a restart on the same port -------


def start_serve(engine: dict, port: int, log: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "autellix.cli", "serve", "--model", engine["model"], *extra]
    args += ["--port", str(port), "--served-model-name", MODEL, "--drain-timeout", "30"]
    args += ["--block-size", "4", "--num-kv-blocks", str(engine["num_kv_blocks"])]
    args += ["--log-level", "info"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=120, what="autellix serve to be healthy")
    return proc


@pytest.mark.slow
def test_serve_drains_on_sigterm_exits_0_and_restarts_on_the_same_port(
    long_context: dict, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(long_context, port, tmp_path / "first.log")
    try:
        caller = Caller(f"{url}/v1", 3000, stream=True)
        caller.start()
        caller.first.wait(30)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 503, what="draining")
        r = httpx.post(
            f"{url}/v1/completions", json={"model": MODEL, "prompt": "w", "max_tokens": 2}
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
        caller.join(60)
        assert caller.answered, caller.events[-3:]
        assert proc.wait(timeout=30) == 0, (tmp_path / "first.log").read_text()
        proc = start_serve(long_context, port, tmp_path / "second.log")  # at once, same port
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": MODEL, "prompt": "w1", "max_tokens": 3, **FIXED},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in (tmp_path / "second.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_on_ray_drains_on_sigterm_and_exits_0(long_context: dict, tmp_path: Path) -> None:
    """ray.init installs its own SIGTERM handler, which exits at once (status 15): the
    server's must stay, so that a Ray deployment drains like any other."""
    pytest.importorskip("ray")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_serve(long_context, port, log, "--ray", "auto")
    try:
        caller = Caller(f"http://127.0.0.1:{port}/v1", 3000, stream=True)
        caller.start()
        caller.first.wait(60)
        proc.send_signal(signal.SIGTERM)
        caller.join(90)
        assert caller.answered, caller.events[-3:]
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "draining: 1 calls in flight" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
