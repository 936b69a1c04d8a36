"""Shutting down without dropping calls: on SIGTERM or SIGINT the server drains.

New calls get 503 with Retry-After and `/health` says "draining" (503), so a load
balancer moves traffic away, while the listener stays open to say so; the calls in flight
finish, up to `--drain-timeout`, and those still running then are stopped (their KV
freed) with a 503 or a stream's error event. Then uvicorn shuts down and the process
exits 0. A second signal stops the calls at once, a third exits without waiting.

uvicorn's own handler would close the listener at once (new calls: connection refused)
and re-raise the signal after shutting down (exit status -15), hence `DrainingServer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from autellix.server.frontend import Frontend

log = logging.getLogger("autellix.drain")

GRACE = 5  # seconds for stopped calls to send their last event


async def until_idle(frontend: Frontend, timeout: float, hurry: asyncio.Event) -> bool:
    """Whether every request's calls ended within `timeout` seconds (and before `hurry`)."""
    deadline = time.monotonic() + timeout
    while frontend.calls_in_flight:
        if time.monotonic() >= deadline or hurry.is_set():
            return False
        await asyncio.sleep(0.05)
    return True


async def drain(frontend: Frontend, timeout: float, hurry: asyncio.Event) -> None:
    """Refuse new calls, let those in flight finish for `timeout` s (or until `hurry`),
    then stop the rest."""
    frontend.draining = True
    log.warning("draining: %d calls in flight, %.0f s to finish", frontend.calls_in_flight, timeout)
    if not await until_idle(frontend, timeout, hurry):
        log.warning("stopping %d calls", frontend.calls_in_flight)
        frontend.cut_calls("the server shut down before this call finished")
        await until_idle(frontend, GRACE, asyncio.Event())


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM or SIGINT drains (`drain`) before it exits, the
    second stops the calls in flight at once, and a third exits without waiting."""

    def __init__(self, config: uvicorn.Config, frontend: Frontend) -> None:
        config.timeout_graceful_shutdown = GRACE  # responses still open after the drain
        super().__init__(config)
        self.frontend = frontend
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hurry: asyncio.Event | None = None
        self.startup_error: Exception | None = None

    async def startup(self, sockets=None) -> None:
        """The frontend starts (model, replicas, backends) before the app's lifespan and
        the listener: where it cannot, the server stops with the reason in one line
        (`startup_error`), not a lifespan traceback."""
        self.loop = asyncio.get_running_loop()
        self.hurry = asyncio.Event()
        try:
            await self.frontend.start()
        except Exception as exc:
            log.debug("the frontend did not start", exc_info=True)
            await self.frontend.stop()
            self.startup_error, self.should_exit = exc, True
            return
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler (or any thread's call)."""
        if self.loop is None or self.hurry is None or self.should_exit:
            self.force_exit = self.should_exit
            self.should_exit = True
        elif not self.frontend.draining:
            self.frontend.draining = True
            self.loop.call_soon_threadsafe(self._drain)
        else:
            self.loop.call_soon_threadsafe(self.hurry.set)

    def _drain(self) -> None:
        assert self.hurry is not None
        timeout = self.frontend.config.drain_timeout
        task = asyncio.ensure_future(drain(self.frontend, timeout, self.hurry))
        task.add_done_callback(lambda _: setattr(self, "should_exit", True))


def run(app: FastAPI, host: str, port: int, log_level: str) -> None:
    """uvicorn.run, draining on the first SIGTERM or SIGINT."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
    server = DrainingServer(config, app.state.frontend)
    server.run()
    if server.startup_error is not None:
        raise SystemExit(f"autellix: error: the server did not start: {server.startup_error}")
