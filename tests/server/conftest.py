"""A real server on a loopback port, in a thread, serving the tiny model."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import uvicorn

from autellix.engine.config import EngineConfig
from autellix.server.app import create_app
from autellix.server.drain import DrainingServer
from autellix.server.frontend import Frontend, ServeConfig
from autellix.server.replica import LocalReplica

MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, frontend: Frontend, port: int | None = None) -> None:
        self.frontend = frontend
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        config = uvicorn.Config(
            create_app(frontend), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = DrainingServer(config, frontend)  # handle_exit(SIGTERM, None) drains
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def wait_idle(self, timeout: float = 10) -> None:
        """Until no call is in flight anywhere (aborts are applied between steps)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = any(r.in_flight for r in self.frontend.replicas)
            engines_busy = any(
                r.engine.has_unfinished()
                for r in self.frontend.replicas
                if isinstance(r, LocalReplica) and r.engine is not None
            )
            if not busy and not engines_busy:
                return
            time.sleep(0.02)
        raise AssertionError("calls still in flight")

    def call(self, coro):
        """Run a coroutine on the server's event loop, from the test's thread."""
        loop = self.frontend._reaper.get_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    def engine_stats(self, index: int = 0) -> dict:
        """A replica's engine stats, asked on the server's loop (a child process or an
        actor answers over its channel)."""
        return self.call(self.frontend.replicas[index].stats())

    def wait_engines_stopped(self, below: int, timeout: float = 10) -> None:
        """After a client left: within `timeout`, no engine holds a call or a KV block,
        and the engines compute no more tokens, fewer than `below` in all (the tokens
        computed so far, plus what the left calls asked for: they were stopped, they did
        not finish). Does not wait for calls to end by themselves."""
        n = len(self.frontend.replicas)
        deadline = time.monotonic() + timeout
        while True:
            stats = [self.engine_stats(i) for i in range(n)]
            if all(s["running"] == s["waiting"] == 0 and s["kv_usage"] == 0 for s in stats):
                break
            assert time.monotonic() < deadline, f"engines still hold calls: {stats}"
            time.sleep(0.02)
        computed = sum(s["computed_tokens"] for s in stats)
        time.sleep(0.2)
        assert sum(self.engine_stats(i)["computed_tokens"] for i in range(n)) == computed
        assert computed < below, (computed, below)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def long_context(make_tiny_model: Callable[..., Path]) -> dict:
    """serve(engine=long_context): the tiny model with a context of 32k tokens and the
    KV blocks for it, so that a call of 30_000 tokens is valid and takes tens of seconds:
    it cannot end by itself within a test."""
    folder = make_tiny_model(max_position_embeddings=32_768)
    return {"model": str(folder), "num_kv_blocks": 32_768 // 4}


@pytest.fixture
def serve(tiny_llama: Path) -> Iterator[Callable[..., Running]]:
    """serve(**ServeConfig fields, engine={EngineConfig fields}) -> a running server. After
    the test: no call in flight, no KV block held, no active call in the process table."""
    running: list[Running] = []

    def start(engine: dict | None = None, **serve_fields) -> Running:
        engine_config = EngineConfig(
            **{
                "model": str(tiny_llama),
                "block_size": 4,
                "num_kv_blocks": 128,
                "max_running": 8,
                **(engine or {}),
            }
        )
        fields = {"served_model_name": MODEL, **serve_fields}
        config = ServeConfig(engine=engine_config, **fields)
        r = Running(Frontend(config)).start()
        running.append(r)
        return r

    yield start
    for r in running:
        try:
            r.wait_idle()
            for rep in r.frontend.replicas:
                if isinstance(rep, LocalReplica) and rep.engine is not None:
                    rep.engine.check_idle()
                elif rep.alive:  # a child process or an actor: ask it (aborts land late)
                    deadline = time.monotonic() + 10
                    while True:
                        stats = r.call(rep.stats())
                        idle = stats["kv_usage"] == 0 and stats["running"] == stats["waiting"] == 0
                        if idle or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    assert idle, stats
            assert all(not p.calls for p in r.frontend.table.programs.values())
            in_flight = r.frontend.in_flight  # every request's calls were released
            deadline = time.monotonic() + 10
            while (in_flight.tenants or in_flight.programs) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not in_flight.tenants and not in_flight.programs, vars(in_flight)
        finally:
            r.stop()


@pytest.fixture
def server(serve) -> Running:
    """A server with the default settings of `serve`."""
    return serve()


@pytest.fixture
def client(server: Running) -> Iterator[openai.OpenAI]:
    """The official openai client of `server` (no retries: a test sees every error)."""
    with openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def module_server(tiny_llama: Path) -> Iterator[Running]:
    """A server with the default settings of `serve`, shared by a module's tests; after
    them, no call in flight."""
    engine = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=256, max_running=8)
    running = Running(Frontend(ServeConfig(engine=engine, served_model_name=MODEL))).start()
    yield running
    try:
        running.wait_idle(30)
        assert all(not p.calls for p in running.frontend.table.programs.values())
        assert running.frontend.calls_in_flight == 0
    finally:
        running.stop()


@pytest.fixture(scope="module")
def default_model_server() -> Iterator[Running]:
    """A server of the embedded default model (SmolLM2-135M), shared by a module's tests."""
    engine = EngineConfig(max_running=8, kv_cache_bytes=64 << 20)
    running = Running(Frontend(ServeConfig(engine=engine))).start()
    yield running
    running.stop()


@pytest.fixture
def front(tiny_llama: Path) -> Iterator[Callable[..., Running]]:
    """front(*backend urls, engine={...}, **ServeConfig fields) -> a running frontend that
    serves through those OpenAI-compatible servers (`autellix serve --backend`)."""
    made: list[Running] = []

    def start(*urls: str, engine: dict | None = None, **fields) -> Running:
        engine_config = EngineConfig(**{"model": str(tiny_llama), **(engine or {})})
        config = ServeConfig(engine=engine_config, backend=urls, served_model_name=MODEL, **fields)
        made.append(Running(Frontend(config)).start())
        return made[-1]

    yield start
    for r in made:
        r.stop()
