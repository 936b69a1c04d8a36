"""Soak: `autellix serve` with replicas under mixed agent programs at 1.5x the knee load
for N minutes, with random client disconnects, bad requests and one replica killed
(kill -9) midway. Records the server's RSS and open file descriptors (its own and its
replicas'), KV usage and calls in flight (from /metrics) and call latency over time.

Fails (exit 1, with the reasons) if any series grows without bound or a call is lost:

- growth: over each steady span (from the end of the warm-up to the kill, and from the
  kill plus a settling time to the end) each series is fitted by least squares on time
  and the calls in flight, so that a burst of calls (which raises fds and latency while
  it lasts) is not taken for a leak; the fit's time term over the span must stay under
  a tolerance of the series' level (RSS 10%, fds 20%, KV usage 0.2 absolute, latency
  50%; each with a floor so that noise near zero passes). The latency is that of a small
  probe call sent every 10 s as a program of its own: the same work each time, where the
  calls' own latencies vary with their size and follow the queue over their whole life
  (it still waits behind other programs' calls in the first queue). Calls that stay in
  flight for good are caught by the drain check below. The kill halves the capacity, so
  the two spans are judged apart.
- lost: every call sent gets an answer, or a clear error: an HTTP error with OpenAI's
  error body (429 when full, 503), or an error event on its stream. A call that gets
  nothing (a cut connection, a stream without its end, a timeout) is lost. Calls that
  fail with the killed replica (the "died" error event) are counted apart: at most the
  calls it had in flight at the kill (its waiting calls move to the live replica).
- after the load: within a minute (--drain) no call is in flight and no KV block is held.

The knee is found as `autellix bench --search` finds throughput at equal latency: the
highest arrival rate whose mean program token latency stays under twice that of the
lowest rate (measured here on the same server unless --knee is given).

    python benchmarks/soak.py --minutes 30
    python benchmarks/soak.py --minutes 2 --knee 0.2     # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from autellix.bench.metrics import Summary
from autellix.bench.runner import Endpoint, run_specs
from autellix.bench.search import over, search_rate
from autellix.bench.sweep import wait_healthy
from autellix.machine import provenance, this_commit
from autellix.workloads import build_workload, workload_params
from autellix.workloads.spec import ProgramSpec, resolve

MODEL = "soak"
ANSWERED, REFUSED, DISCONNECTED, DIED, ERROR_EVENT, LOST, CUT = (
    "answered",  # the whole stream, to [DONE]
    "refused",  # an HTTP error with OpenAI's error body (429, 503, 400 ...)
    "disconnected",  # the client left on purpose
    "replica_died",  # an error event: the replica it ran on was killed
    "error_event",  # another error event on the stream
    "lost",  # nothing clear: a cut connection, a stream without its end, a timeout
    "cut_at_end",  # the run ended while the call was in flight
)
TOLERANCE = {  # series: (rise allowed as a fraction of its level, floor of that level)
    "rss_mib": (0.10, 200.0),
    "fds": (0.20, 40.0),
    "kv_usage": (None, 0.2),  # absolute: a fraction of the KV pool
    "latency_s": (0.50, 2.0),
}


@dataclass
class CallRecord:
    start: float
    end: float
    outcome: str
    status: int = 200
    detail: str = ""


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    processes: int
    kv_usage: float  # mean over live replicas
    in_flight: int
    programs: int


@dataclass
class Kill:
    t: float
    pid: int
    replica: str = "?"
    in_flight: int = 0  # the victim's calls in flight just before the kill


@dataclass
class Growth:
    """A series' rise over a span at equal calls in flight, against what it may rise."""

    span: str
    series: str
    rise: float
    allowed: float
    level: float

    def failure(self) -> str | None:
        if self.rise <= self.allowed:
            return None
        return (
            f"{self.series} grows {self.rise:.3g} at equal calls in flight over the "
            f"{self.span}, more than {self.allowed:.3g} (level {self.level:.3g})"
        )


@dataclass
class Run:
    calls: list[CallRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    bad: list[tuple[str, int, bool]] = field(default_factory=list)  # (what, status, ok)
    probes: list[tuple[float, float, float]] = field(default_factory=list)  # (t, in flight, s)
    kill: Kill | None = None
    drained: dict = field(default_factory=dict)


# --- the server -------------------------------------------------------------------------


def start_server(args: argparse.Namespace, log) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "autellix.cli",
        "serve",
        "--port",
        str(args.port),
        "--served-model-name",
        MODEL,
        "--log-level",
        "warning",
        *shlex.split(args.serve_args),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    wait_healthy(f"http://127.0.0.1:{args.port}", proc, what="autellix serve")
    return proc


def metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {metric: {replica label ('' if none): value}}."""
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        replica = ""
        if 'replica="' in labels:
            replica = labels.split('replica="')[1].split('"')[0]
        found.setdefault(name, {})[replica] = float(value)
    return found


def live(m: dict[str, dict[str, float]], name: str) -> list[float]:
    """A per-replica metric of the live replicas (a dead one's gauges keep their last value)."""
    alive = m.get("autellix_replica_alive", {})
    return [v for r, v in m.get(name, {}).items() if alive.get(r)]


def replicas_of(server: psutil.Process) -> list[psutil.Process]:
    """The server's replica processes (multiprocessing children), not its helpers."""
    found = []
    for child in server.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
    return found


def resources(server: psutil.Process) -> tuple[float, int, int]:
    """(RSS MiB, open fds, processes) of the server and its children."""
    rss, fds, n = 0, 0, 0
    for p in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            fds += p.num_fds()
            n += 1
    return rss / 2**20, fds, n


# --- the load -----------------------------------------------------------------------------


class Driver:
    def __init__(self, args: argparse.Namespace, http: httpx.AsyncClient, run: Run) -> None:
        self.args = args
        self.http = http
        self.run = run
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.metrics_url = f"http://127.0.0.1:{args.port}/metrics"

    async def metrics(self) -> dict[str, dict[str, float]]:
        r = await self.http.get(self.metrics_url)
        r.raise_for_status()  # an httpx.HTTPError: a gap in the series
        return metrics(r.text)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def program(self, spec: ProgramSpec) -> None:
        await asyncio.sleep(max(0.0, spec.arrival - self.now()))
        name = f"soak-{uuid.uuid4().hex[:12]}"
        outputs: list[list[str]] = []
        try:
            for stage in spec.stages:
                calls = [self.call(name, i, c, outputs) for i, c in enumerate(stage.calls)]
                texts = await asyncio.gather(*calls)
                if any(t is None for t in texts):  # the agent met an error: it stops
                    break
                outputs.append([t or "" for t in texts])
                delay = max((c.tool_delay for c in stage.calls), default=0.0)
                await asyncio.sleep(delay)
        finally:
            with contextlib.suppress(httpx.HTTPError):  # a good client ends its program
                await self.http.delete(f"/programs/{name}")

    async def call(self, program: str, thread: int, spec, outputs) -> str | None:
        """One streamed call, recorded; its text, or None if it did not finish."""
        body = {
            "model": MODEL,
            "messages": resolve(spec.messages, outputs),
            "max_tokens": spec.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        headers = {"X-Autellix-Program": program, "X-Autellix-Thread": str(thread)}
        leave_after = self.rng.randint(1, 4) if self.rng.random() < self.args.disconnects else None
        record = CallRecord(self.now(), math.nan, LOST)
        self.run.calls.append(record)
        try:
            return await self.stream(body, headers, leave_after, record)
        except httpx.HTTPError as exc:
            record.outcome, record.detail = LOST, f"{type(exc).__name__}: {exc}"
            return None
        except asyncio.CancelledError:
            record.outcome = CUT
            raise
        finally:
            record.end = self.now()

    async def probe(self) -> None:
        """One fixed small call, a program of its own (so it enters the first queue): the
        same work each time, so its latency follows the server's speed and load."""
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count to ten."}],
            "max_tokens": 16,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        in_flight = self.run.samples[-1].in_flight if self.run.samples else 0
        record = CallRecord(self.now(), math.nan, LOST)
        self.run.calls.append(record)
        try:
            await self.stream(body, {}, None, record)
        except httpx.HTTPError as exc:
            record.detail = f"{type(exc).__name__}: {exc}"
        finally:
            record.end = self.now()
        if record.outcome == ANSWERED:
            self.run.probes.append((record.start, in_flight, record.end - record.start))

    async def stream(self, body, headers, leave_after, record: CallRecord) -> str | None:
        async with self.http.stream("POST", "/chat/completions", json=body, headers=headers) as r:
            record.status = r.status_code
            if r.status_code != 200:
                error = openai_error(await r.aread())
                record.outcome = REFUSED if error else LOST
                record.detail = error or "an error without OpenAI's error body"
                return None
            text: list[str] = []
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    record.outcome = ANSWERED
                    return "".join(text)
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[len("data: ") :])
                if "error" in event:
                    message = str(event["error"].get("message", ""))
                    record.outcome = DIED if "died" in message else ERROR_EVENT
                    record.detail = message
                    return None
                text += [c["delta"].get("content") or "" for c in event["choices"]]
                if leave_after is not None and len(text) >= leave_after:
                    record.outcome = DISCONNECTED
                    return None  # leaving the block closes the connection mid-stream
            record.detail = "the stream ended without [DONE]"
            return None


def openai_error(body: bytes) -> str | None:
    """The message of an OpenAI-shaped error body, else None."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return None
    return str(error["message"])


BAD_REQUESTS: list[tuple[str, str, str, object]] = [  # (what, method, path, body)
    ("not json", "POST", "/chat/completions", b"{not json"),
    ("no model", "POST", "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    (
        "negative max_tokens",
        "POST",
        "/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
    ),
    ("messages not a list", "POST", "/chat/completions", {"model": MODEL, "messages": "x"}),
    ("unknown field", "POST", "/completions", {"model": MODEL, "prompt": "x", "best_of": 3}),
    ("unknown program", "GET", "/programs/no-such-program", None),
    ("bad page size", "GET", "/programs?limit=0", None),
]


async def bad_requests(driver: Driver, until: float) -> None:
    """A bad request every 1/--bad-rate s: each must be a 4xx with OpenAI's error body."""
    i = 0
    while driver.now() < until:
        what, method, path, body = BAD_REQUESTS[i % len(BAD_REQUESTS)]
        i += 1
        kwargs: dict = {"content": body} if isinstance(body, bytes) else {"json": body}
        try:
            r = await driver.http.request(method, path, **({} if body is None else kwargs))
            ok = 400 <= r.status_code < 500 and openai_error(r.content) is not None
            driver.run.bad.append((what, r.status_code, ok))
        except httpx.HTTPError:
            driver.run.bad.append((what, 0, False))
        await asyncio.sleep(1 / driver.args.bad_rate)


async def probe_forever(driver: Driver) -> None:
    while True:
        await driver.probe()
        await asyncio.sleep(driver.args.probe)


async def sample_forever(driver: Driver, server: psutil.Process) -> None:
    while True:
        try:
            driver.run.samples.append(await sample(driver, server))
        except (httpx.HTTPError, psutil.Error, ValueError) as exc:  # a gap, not the end
            print(f"soak: no sample at {driver.now():.0f} s: {exc!r}", flush=True)
        await asyncio.sleep(driver.args.sample)


async def sample(driver: Driver, server: psutil.Process) -> Sample:
    rss, fds, n = resources(server)
    m = await driver.metrics()
    kv = live(m, "autellix_kv_usage")
    return Sample(
        driver.now(),
        rss,
        fds,
        n,
        sum(kv) / len(kv) if kv else 0.0,
        int(sum(m.get("autellix_in_flight", {}).values())),
        int(m.get("autellix_programs", {}).get("", 0)),
    )


async def retried(fetch, tries: int = 10):
    for _ in range(tries - 1):
        with contextlib.suppress(httpx.HTTPError):
            return await fetch()
        await asyncio.sleep(1)
    return await fetch()


async def kill_a_replica(driver: Driver, server: psutil.Process, at: float) -> None:
    await asyncio.sleep(max(0.0, at - driver.now()))
    victims = replicas_of(server)
    if len(victims) < 2:
        print("soak: fewer than two replica processes: no replica is killed", flush=True)
        return
    before = (await retried(driver.metrics)).get("autellix_in_flight", {})
    victim = driver.rng.choice(victims)
    os.kill(victim.pid, signal.SIGKILL)
    kill = Kill(driver.now(), victim.pid)
    driver.run.kill = kill
    for _ in range(50):  # which replica it was: the one the server now reports dead
        await asyncio.sleep(0.2)
        alive = (await retried(driver.metrics)).get("autellix_replica_alive")
        dead = [r for r, up in (alive or {}).items() if not up]
        if dead:
            kill.replica, kill.in_flight = dead[0], int(before.get(dead[0], 0))
            break
    print(
        f"soak: killed replica {kill.replica} (pid {kill.pid}) at {kill.t:.0f} s "
        f"with {kill.in_flight} calls in flight",
        flush=True,
    )


async def drained(driver: Driver, timeout: float = 60) -> dict:
    """After the load: no call in flight and no KV block held, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        m = await retried(driver.metrics)
        in_flight = sum(m.get("autellix_in_flight", {}).values())
        kv = max(live(m, "autellix_kv_usage"), default=0.0)
        if (in_flight == 0 and kv == 0) or time.monotonic() > deadline:
            engine_calls = {  # what the live replicas' engines still hold, for a diagnosis
                name: sum(live(m, f"autellix_{name}")) for name in ("running", "waiting", "swapped")
            }
            ok = in_flight == 0 and kv == 0
            return {"in_flight": in_flight, "kv_usage": kv, **engine_calls, "ok": ok}
        await asyncio.sleep(1)


async def soak(args: argparse.Namespace, specs: list[ProgramSpec], server: psutil.Process) -> Run:
    run = Run()
    duration = args.minutes * 60
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100, keepalive_expiry=1)
    base = f"http://127.0.0.1:{args.port}/v1"
    async with httpx.AsyncClient(base_url=base, timeout=args.call_timeout, limits=limits) as http:
        http.headers["Authorization"] = "Bearer EMPTY"
        driver = Driver(args, http, run)
        helpers = [
            asyncio.create_task(sample_forever(driver, server)),
            asyncio.create_task(probe_forever(driver)),
            asyncio.create_task(bad_requests(driver, duration)),
            asyncio.create_task(kill_a_replica(driver, server, duration * args.kill_at)),
        ]
        programs = [asyncio.create_task(driver.program(s)) for s in specs]
        await asyncio.sleep(max(0.0, duration - driver.now()))
        _, pending = await asyncio.wait(programs, timeout=args.grace)
        for task in [*pending, *helpers]:
            task.cancel()
        await asyncio.gather(*pending, *helpers, return_exceptions=True)
        print(
            f"soak: load over at {driver.now():.0f} s; waiting for the server to drain", flush=True
        )
        run.drained = await drained(driver, args.drain)
        run.samples.append(await sample(driver, server))
    return run


# --- the knee ---------------------------------------------------------------------------


def find_knee(args: argparse.Namespace) -> tuple[float, list[Summary]]:
    """The highest rate whose mean program token latency stays under twice the lowest
    rate's (the bound `autellix bench` uses), by the bench's own search."""
    endpoint = Endpoint("soak", f"http://127.0.0.1:{args.port}/v1", MODEL)

    def measure(rate: float) -> Summary:
        specs = build(args, rate, args.knee_programs)
        records = asyncio.run(run_specs(specs, endpoint, timeout=args.knee_timeout))
        summary = Summary.of("soak", rate, records)
        print(
            f"knee search: {rate:.3g} programs/s -> {summary.token_latency_mean:.3f} s/token "
            f"({summary.failed} failed)",
            flush=True,
        )
        return summary

    points = [measure(args.knee_start)]
    bound = 2 * points[0].token_latency_mean
    points += search_rate(measure, points, bound, steps=args.knee_steps)
    under = [s.rate for s in points if not over(s, bound)]
    return (max(under) if under else args.knee_start), points


def build(args: argparse.Namespace, rate: float, programs: int) -> list[ProgramSpec]:
    return build_workload(
        args.workload,
        programs,
        rate=rate,
        seed=args.seed,
        scale=args.scale,
        **workload_params(args.workload_arg),
    )


# --- judging and the report -----------------------------------------------------------


def time_rise(points: list[tuple[float, float, float]], start: float, end: float) -> float:
    """The rise over [start, end] of a least-squares fit y = a + b*t + c*in_flight to
    (t, in_flight, y) points: the growth that the calls in flight do not explain."""
    t, in_flight, y = (np.array(column, dtype=float) for column in zip(*points, strict=True))
    design = np.column_stack([np.ones_like(t), t - start, in_flight])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(coef[1] * (end - start))


def latency_windows(run: Run, start: float, end: float, windows: int) -> list[tuple[float, float]]:
    """(window middle, mean latency of the calls answered in it)."""
    width = (end - start) / windows
    found = []
    for i in range(windows):
        lo, hi = start + i * width, start + (i + 1) * width
        lat = [c.end - c.start for c in run.calls if c.outcome == ANSWERED and lo <= c.end < hi]
        if lat:
            found.append(((lo + hi) / 2, sum(lat) / len(lat)))
    return found


def series(run: Run, name: str, start: float, end: float) -> list[tuple[float, float, float]]:
    """(t, calls in flight, value) over the span; latency is the probes'."""
    if name == "latency_s":
        return [p for p in run.probes if start <= p[0] < end]
    samples = [s for s in run.samples if start <= s.t < end]
    return [(s.t, s.in_flight, float(getattr(s, name))) for s in samples]


def growth(run: Run, spans: list[tuple[str, float, float]]) -> list[Growth]:
    rows = []
    for label, start, end in spans:
        for name, (fraction, floor) in TOLERANCE.items():
            points = series(run, name, start, end)
            if len(points) < 4:
                continue
            level = sorted(y for _, _, y in points)[len(points) // 2]
            allowed = floor if fraction is None else fraction * max(level, floor)
            span = f"{label} ({start:.0f}-{end:.0f} s)"
            rows.append(Growth(span, name, time_rise(points, start, end), allowed, level))
    return rows


def judge(args: argparse.Namespace, run: Run) -> tuple[list[str], dict, list[Growth]]:
    duration = args.minutes * 60
    kill_t = run.kill.t if run.kill else duration * args.kill_at
    spans = [
        ("span before the kill", duration * args.warmup, kill_t),
        ("span after the kill", kill_t + duration * args.settle, duration),
    ]
    rows = growth(run, spans)
    failures = [f for f in (g.failure() for g in rows) if f]
    counts: dict[str, int] = {}
    for c in run.calls:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    if counts.get(LOST):
        failures.append(f"{counts[LOST]} calls lost (no answer and no clear error)")
    died, victim = counts.get(DIED, 0), run.kill.in_flight if run.kill else 0
    if died > victim:
        failures.append(f"{died} calls failed with the killed replica, which had {victim}")
    if run.kill is None:
        failures.append("no replica was killed (serve with --replicas 2 or more)")
    bad_wrong = [b for b in run.bad if not b[2]]
    if bad_wrong:
        failures.append(
            f"{len(bad_wrong)} bad requests not refused with an OpenAI 4xx: "
            f"{sorted(set(bad_wrong))[:5]}"
        )
    if not run.drained.get("ok"):
        failures.append(f"after the load the server still held calls or KV: {run.drained}")
    return failures, counts, rows


def write_results(args, out: Path, run: Run, knee: float, knee_points, verdict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "timeseries.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(Sample.__dataclass_fields__)
        w.writerows(asdict(s).values() for s in run.samples)
    with open(out / "probes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "in_flight", "latency_s"])
        w.writerows(f"{t:.3f} {n} {lat:.3f}".split() for t, n, lat in run.probes)
    with open(out / "calls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start", "end", "outcome", "status", "detail"])
        for c in run.calls:
            w.writerow([f"{c.start:.3f}", f"{c.end:.3f}", c.outcome, c.status, c.detail[:200]])
    plotted = plot(args, run, out / "soak.png")
    text = summary(args, run, knee, knee_points, verdict, plotted)
    (out / "summary.md").write_text(text)
    return text


def plot(args: argparse.Namespace, run: Run, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s.t / 60 for s in run.samples]
    lat = latency_windows(run, 0, args.minutes * 60, 30)
    panels = [
        ("RSS, server + replicas (MiB)", t, [s.rss_mib for s in run.samples]),
        ("open file descriptors", t, [s.fds for s in run.samples]),
        ("KV usage (mean of live replicas)", t, [s.kv_usage for s in run.samples]),
        ("calls in flight", t, [s.in_flight for s in run.samples]),
        ("mean call latency (s), answered", [x / 60 for x, _ in lat], [y for _, y in lat]),
        (
            "probe latency (s): 16 tokens",
            [p[0] / 60 for p in run.probes],
            [p[2] for p in run.probes],
        ),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 14), sharex=True)
    for ax, (title, xs, ys) in zip(axes, panels, strict=True):
        ax.plot(xs, ys, marker=".")
        ax.set_title(title, fontsize=9)
        if run.kill:
            ax.axvline(run.kill.t / 60, color="red", linestyle="--", label="replica killed")
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def summary(args, run: Run, knee, knee_points, verdict, plotted: bool) -> str:
    failures, counts, rows = verdict
    first, last = run.samples[0], run.samples[-1]
    sent = len(run.calls)
    passed = "PASS" if not failures else "FAIL"
    knee_text = (
        f"{knee:.3g} programs/s (given)"
        if not knee_points
        else f"{knee:.3g} programs/s (searched: "
        + ", ".join(f"{s.rate:.3g}/s {s.token_latency_mean:.3f} s/tok" for s in knee_points)
        + ")"
    )
    kill = run.kill
    lines = [
        f"### Soak: {args.minutes:g} min of {args.workload} at {args.load:g}x the knee — {passed}",
        "",
        f"Knee: {knee_text}; load {args.load * knee:.3g} programs/s.",
        f"Replica killed: {kill.replica} at {kill.t:.0f} s with {kill.in_flight} calls in flight."
        if kill
        else "Replica killed: none.",
        "",
        "| calls sent | " + " | ".join(sorted(counts)) + " |",
        "|---|" + "---|" * len(counts),
        f"| {sent} | " + " | ".join(str(counts[k]) for k in sorted(counts)) + " |",
        "",
        f"Bad requests: {len(run.bad)} sent, {sum(b[2] for b in run.bad)} refused with an "
        "OpenAI-shaped 4xx.",
        "",
        "| | first sample | last sample |",
        "|---|---|---|",
        f"| RSS (MiB) | {first.rss_mib:.0f} | {last.rss_mib:.0f} |",
        f"| open fds | {first.fds} | {last.fds} |",
        f"| processes | {first.processes} | {last.processes} |",
        f"| KV usage | {first.kv_usage:.3f} | {last.kv_usage:.3f} |",
        f"| programs in the table | {first.programs} | {last.programs} |",
        "",
        "Growth at equal calls in flight (least squares of each series on time and calls in "
        "flight; the rise is the time term over the span):",
        "",
        "| span | series | rise | allowed | level |",
        "|---|---|---|---|---|",
        *(
            f"| {g.span} | {g.series} | {g.rise:.3g} | {g.allowed:.3g} | {g.level:.3g} |"
            for g in rows
        ),
        "",
        f"After the load: {run.drained}.",
        "",
        "Failures:" if failures else "No failures.",
        *(f"- {f}" for f in failures),
        "",
        "Files: timeseries.csv (samples), probes.csv (latency probes), calls.csv (every call)"
        + (", soak.png (the plot)." if plotted else "; no plot (matplotlib is missing)."),
        "",
        *provenance(args.command_line, args.commit),
        "",
    ]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--load", type=float, default=1.5, help="times the knee rate")
    p.add_argument("--knee", type=float, default=None, help="the knee (programs/s): no search")
    p.add_argument("--knee-start", type=float, default=0.05, help="the search's lowest rate")
    p.add_argument("--knee-programs", type=int, default=12, help="programs per search rate")
    p.add_argument("--knee-steps", type=int, default=2, help="bisections of the crossing")
    p.add_argument("--knee-timeout", type=float, default=600, help="seconds per search rate")
    p.add_argument("--workload", default="mixed")
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workload-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="workload parameters (default: lats.iterations=2)",
    )
    p.add_argument(
        "--serve-args",
        default="--replicas 2 --max-running 8 --max-waiting 16",
        help="`autellix serve` flags (default: %(default)s)",
    )
    p.add_argument("--disconnects", type=float, default=0.05, help="calls the client leaves")
    p.add_argument("--bad-rate", type=float, default=1.0, help="bad requests per second")
    p.add_argument("--kill-at", type=float, default=0.5, help="the kill, as a share of the run")
    p.add_argument("--warmup", type=float, default=0.1, help="share of the run not judged")
    p.add_argument("--settle", type=float, default=0.1, help="share not judged after the kill")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--probe", type=float, default=10.0, help="seconds between latency probes")
    p.add_argument("--grace", type=float, default=30.0, help="seconds programs may finish in")
    p.add_argument("--drain", type=float, default=60.0, help="seconds the server has to idle")
    p.add_argument("--call-timeout", type=float, default=600.0)
    p.add_argument("--port", type=int, default=8360)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.workload_arg = ["lats.iterations=2"] if args.workload_arg is None else args.workload_arg
    args.command_line = shlex.join(["python", *sys.argv])
    args.commit = this_commit()
    return args


def main() -> int:
    args = parse_args()
    out = args.out or Path(f"benchmarks/results/soak-{args.commit}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "server.log", "w") as log:
        proc = start_server(args, log)
        try:
            knee, knee_points = (args.knee, []) if args.knee else find_knee(args)
            rate = args.load * knee
            duration = args.minutes * 60
            programs = build(args, rate, math.ceil(rate * duration * 1.5) + 1)
            specs = [s for s in programs if s.arrival < duration]
            print(f"soak: {len(specs)} programs at {rate:.3g}/s for {duration:.0f} s", flush=True)
            run = asyncio.run(soak(args, specs, psutil.Process(proc.pid)))
            verdict = judge(args, run)
            failures = verdict[0]
            print(write_results(args, out, run, knee, knee_points, verdict))
        finally:
            proc.terminate()  # the server drains (it has nothing in flight) and exits
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"results under {out}")
    for failure in failures:
        print(f"soak FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
