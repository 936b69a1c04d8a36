"""Operating the server: metric values after a known load, `autellix serve` as a real
process and its SIGTERM, 503 with every replica dead, program reaping over HTTP, and
locality pins moving off a dead replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autellix.bench.engine_counters import read_counters
from autellix.engine.config import EngineConfig
from autellix.engine.sampling_params import SamplingParams
from autellix.server.frontend import Frontend, ServeConfig
from autellix.server.replica import LocalReplica, ProcessReplica

MODEL = "tiny"  # the served name in conftest
FIXED = {"ignore_eos": True}
PROGRAM = "X-Autellix-Program"


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: dict, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def wait_for(predicate, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /metrics ---------------------------------------------------------------------------


def test_metrics_values_after_a_known_load(serve) -> None:
    server = serve()
    a_prompt = " ".join(f"w{i}" for i in range(10, 23))  # 13 tokens: 3 full blocks of 4
    load = [  # (program or None for a call of its own, prompt, max_tokens)
        ("a", a_prompt, 3),
        ("a", a_prompt, 4),  # the same prompt: its first 3 blocks come from the cache
        ("b", "w30 w31 w32 w33 w34 w35", 5),
        ("b", "w40 w41", 2),
        ("b", "w50 w51 w52", 6),
        (None, "w60 w61 w62 w63 w64", 1),
    ]
    usages = []
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        for program, prompt, max_tokens in load:
            out = c.completions.create(
                model=MODEL,
                prompt=prompt,
                max_tokens=max_tokens,
                extra_body=FIXED,
                extra_headers={PROGRAM: program} if program else None,
            )
            assert out.usage.completion_tokens == max_tokens
            usages.append(out.usage)
    server.wait_idle()
    k = len(load)
    m = metrics(server.url)
    assert value(m, "autellix_call_latency_seconds_count") == k
    assert value(m, "autellix_call_waiting_seconds_count") == k
    assert value(m, "autellix_call_latency_seconds_bucket", le="+Inf") == k
    assert value(m, "autellix_calls_total", finish_reason="length") == k
    assert value(m, "autellix_generated_tokens_total") == sum(n for *_, n in load)
    assert value(m, "autellix_programs") == 2  # a and b; the lone call's program ended
    assert value(m, "autellix_program_latency_seconds_count") == 1  # that one
    assert value(m, "autellix_programs_reaped") == 0
    assert value(m, "autellix_replica_failures_total") == 0
    assert value(m, "autellix_replica_alive", replica="0") == 1
    for gauge in ("running", "waiting", "swapped", "in_flight", "kv_usage", "preemptions"):
        assert value(m, f"autellix_{gauge}", replica="0") == 0, gauge
    # the prefix cache: the engine's counters, the responses' cached tokens and the gauge
    stats = server.frontend.replicas[0].engine.stats()
    assert stats["prefix_queried_tokens"] == sum(u.prompt_tokens for u in usages)
    hits = sum(u.prompt_tokens_details.cached_tokens for u in usages)
    assert stats["prefix_hit_tokens"] == hits == 12
    rate = value(m, "autellix_prefix_cache_hit_rate", replica="0")
    assert rate == pytest.approx(hits / stats["prefix_queried_tokens"])
    assert value(m, "autellix_prefix_hit_tokens", replica="0") == hits
    queried = value(m, "autellix_prefix_queried_tokens", replica="0")
    assert queried == stats["prefix_queried_tokens"]
    counters = read_counters(server.url)  # what `autellix bench` reads
    assert counters is not None and counters.prefix == (hits, queried)
    by_kind = counters.by_kind.values()  # every class's tokens, summed: the same counts
    assert (sum(h for h, _ in by_kind), sum(q for _, q in by_kind)) == (hits, queried)
    assert counters.totals["preemptions"] == 0
    # KV retention (on by default): programs a and b came back, so their KV may be pinned
    # for them; kv_usage above counts only what calls hold, and every pin is accounted for
    pins = server.frontend.replicas[0].engine.retention_stats()
    assert value(m, "autellix_pinned_blocks", replica="0") == pins["pinned_blocks"]
    ended = sum(pins[k] for k in ("pins_hit", "pins_expired", "pins_evicted", "pins_ended"))
    assert counters.totals["pins_made"] == pins["pins_made"] == ended + pins["pins"]

    # ending a program observes its latency; a call cut short counts as an abort
    assert httpx.delete(f"{server.base_url}/programs/a").status_code == 200
    body = {"model": MODEL, "prompt": "w70 w71", "max_tokens": 200, "stream": True, **FIXED}
    with (
        httpx.Client(base_url=server.base_url, timeout=30) as http,
        http.stream("POST", "/completions", json=body) as r,
    ):
        next(line for line in r.iter_lines() if line.startswith("data:"))
    wait_for(
        lambda: value(metrics(server.url), "autellix_call_latency_seconds_count") == k + 1,
        what="the aborted call to be counted",
    )
    server.wait_idle()
    m = metrics(server.url)
    assert value(m, "autellix_calls_total", finish_reason="abort") == 1
    assert value(m, "autellix_calls_total", finish_reason="length") == k
    assert value(m, "autellix_programs") == 1  # b
    assert value(m, "autellix_program_latency_seconds_count") == 3  # + a, + the stream's own


# --- `autellix serve` as a process ------------------------------------------------------


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_autellix_serve_process_serves_then_exits_cleanly_on_sigterm(
    tiny_llama: Path, tmp_path: Path
) -> None:
    exe = Path(sys.executable).with_name("autellix")
    port = free_port()
    args = [
        str(exe),
        "serve",
        "--model",
        str(tiny_llama),
        "--port",
        str(port),
        "--served-model-name",
        MODEL,
        "--replicas",
        "2",
        "--block-size",
        "4",
        "--num-kv-blocks",
        "64",
        "--log-level",
        "info",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    kids: list[int] = []
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=120, what="autellix serve to be healthy")
        kids = children(proc.pid)
        assert len(kids) >= 2  # the two replica processes
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0) as c:
            chat = c.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "w7 w8"}],
                max_tokens=4,
                extra_body=FIXED,
            )
            assert chat.usage.completion_tokens == 4 and chat.choices[0].message.content
            comp = c.completions.create(
                model=MODEL, prompt="w9 w10", max_tokens=3, extra_body=FIXED
            )
            assert comp.usage.completion_tokens == 3
        # SIGTERM drains: a stream under way when the signal comes runs to its end
        body = {"model": MODEL, "prompt": "w11", "max_tokens": 150, "stream": True, **FIXED}
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=60) as http,
            http.stream("POST", "/completions", json=body) as r,
        ):
            events = (line[5:].strip() for line in r.iter_lines() if line.startswith("data:"))
            first = next(events)
            proc.send_signal(signal.SIGTERM)
            rest = [first, *events]
        assert rest[-1] == "[DONE]"
        assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
        rc = proc.wait(timeout=20)
        wait_for(lambda: not any(alive(p) for p in kids), timeout=10, what="replicas to exit")
        log = log_path.read_text()  # the replicas' output too
        # the drain ends in a clean exit (uvicorn alone would re-raise the signal: -15)
        assert rc == 0, log
        assert "Application shutdown complete" in log and "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- every replica dead ---------------------------------------------------------------


def test_every_replica_dead_answers_503(serve) -> None:
    server = serve(replicas=2, processes=True)
    replicas = server.frontend.replicas
    assert all(isinstance(r, ProcessReplica) for r in replicas)
    for r in replicas:
        r.kill()
    wait_for(lambda: not any(r.alive for r in replicas), what="the frontend to see the deaths")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for path, body in (
            ("/completions", {"prompt": "w1 w2", "max_tokens": 2}),
            ("/completions", {"prompt": "w1 w2", "max_tokens": 2, "stream": True}),
            ("/chat/completions", {"messages": [{"role": "user", "content": "w3"}]}),
        ):
            r = http.post(path, json={"model": MODEL, **body}, headers={PROGRAM: "p"})
            assert r.status_code == 503, (path, r.text)
            error = r.json()["error"]
            assert error["type"] == "service_unavailable" and "alive" in error["message"]
            assert set(error) == {"message", "type", "param", "code"}
        health = http.get(f"{server.url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert [rep["alive"] for rep in health.json()["replicas"]] == [False, False]
    with (
        openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        c.completions.create(model=MODEL, prompt="w1", max_tokens=2)
    assert caught.value.status_code == 503
    m = metrics(server.url)
    assert value(m, "autellix_replica_alive", replica="0") == 0
    assert value(m, "autellix_replica_alive", replica="1") == 0
    assert value(m, "autellix_replica_failures_total") == 0  # refused before any replica
    assert all(not p.calls for p in server.frontend.table.programs.values())


def test_a_replica_dead_before_the_reader_noticed_sends_the_call_elsewhere(
    tiny_llama: Path,
) -> None:
    """The child is gone but its pipe's reader has not told the loop yet: sending the call
    fails on the broken pipe. That must count as the replica dying (the call moves, the
    replica is marked dead), not surface as an internal error."""
    engine = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)
    config = ServeConfig(engine=engine, replicas=2, balancer="least-used")
    frontend = Frontend(config, replicas=[ProcessReplica(0, engine), LocalReplica(1, engine)])

    async def main() -> list:
        await frontend.start()
        try:
            dying = frontend.replicas[0]
            dying.kill()
            dying.process.join()  # blocks the loop: the reader's news cannot land yet
            assert dying.alive
            params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
            return [out async for out in frontend.stream([5, 6, 7], params, "p", None)]
        finally:
            await frontend.stop()

    outputs = asyncio.run(main())
    assert outputs[-1].finished and outputs[-1].num_output_tokens == 3
    assert frontend.table.get("p").engines == {0, 1}
    assert [r.alive for r in frontend.replicas] == [False, True]
    frontend.replicas[1].engine.check_idle()


# --- program reaping --------------------------------------------------------------------


def test_idle_programs_are_reaped_and_busy_ones_are_not(serve) -> None:
    ttl = 0.4
    server = serve(program_ttl=ttl)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        created = time.monotonic()
        assert http.post("/programs", json={"program_id": "idle"}).status_code == 201
        assert http.get("/programs/idle").status_code == 200  # not yet
        done = http.post(
            "/completions",
            json={"model": MODEL, "prompt": "w1 w2", "max_tokens": 2, **FIXED},
            headers={PROGRAM: "called"},
        )
        assert done.status_code == 200
        wait_for(
            lambda: http.get("/programs").json()["reaped"] == 2,
            timeout=10,
            what="idle programs to be reaped",
        )
        assert time.monotonic() - created > ttl
        for gone in ("idle", "called"):
            assert http.get(f"/programs/{gone}").json()["error"]["code"] == "program_not_found"
        assert http.get("/programs").json()["data"] == []
        assert value(metrics(server.url), "autellix_programs_reaped") == 2

        # a call in flight for many TTLs keeps its program
        engine = server.frontend.replicas[0].engine
        step = engine.step

        def slow_step():
            time.sleep(0.02)
            return step()

        engine.step = slow_step  # under 50 tokens a second: the call lasts over 3 s
        body = {"model": MODEL, "prompt": "w3 w4", "max_tokens": 150, "stream": True, **FIXED}
        with http.stream("POST", "/completions", json=body, headers={PROGRAM: "busy"}) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            time.sleep(3 * ttl)
            busy = http.get("/programs/busy")
            assert busy.status_code == 200
            info = busy.json()
            assert len(info["calls"]) == 1  # still in flight, so the check means something
            assert time.time() - info["last_arrival"] > 2 * ttl
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        engine.step = step
        assert http.get("/programs/busy").json()["completed_calls"] == 1
        wait_for(
            lambda: http.get("/programs/busy").status_code == 404,
            timeout=10,
            what="the busy program to be reaped once idle",
        )
        assert http.get("/programs").json()["reaped"] == 3


# --- locality pins and dead replicas ----------------------------------------------------


def test_a_pinned_program_moves_to_a_live_replica(serve) -> None:
    server = serve(replicas=2, balancer="locality", long_prompt_tokens=8)
    long = " ".join(f"w{i}" for i in range(10, 22))  # 12 tokens: long for a threshold of 8
    with httpx.Client(base_url=server.base_url, timeout=60) as http:

        def call(i: int) -> httpx.Response:
            return http.post(
                "/completions",
                json={"model": MODEL, "prompt": f"{long} w{i}", "max_tokens": 3, **FIXED},
                headers={PROGRAM: "agent"},
            )

        assert call(0).status_code == 200 and call(1).status_code == 200
        info = http.get("/programs/agent").json()
        pinned = info["pinned_engine"]
        assert pinned in (0, 1) and info["engines"] == [pinned]
        victim = server.frontend.replicas[pinned]
        victim.kill()
        wait_for(lambda: not victim.alive, what="the frontend to see the death")

        for i in (2, 3):
            r = call(i)
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 3
        info = http.get("/programs/agent").json()
        assert info["pinned_engine"] == 1 - pinned
        assert info["engines"] == [0, 1] and info["completed_calls"] == 4
        m = metrics(server.url)
        assert value(m, "autellix_replica_alive", replica=str(pinned)) == 0
        assert value(m, "autellix_replica_alive", replica=str(1 - pinned)) == 1


def test_metrics_answer_while_a_replica_is_too_busy_to(serve, monkeypatch) -> None:
    """A replica whose stats do not come within their timeout (a long step on a loaded
    machine) is left out of that scrape; /metrics is still a 200, not a 500."""
    server = serve()

    async def slow() -> dict:
        raise TimeoutError

    monkeypatch.setattr(server.frontend.replicas[0], "stats", slow)
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 200 and 'autellix_replica_alive{replica="0"} 1.0' in r.text


def test_only_a_balancer_that_reads_caches_keeps_the_routed_prompts() -> None:
    # an index of every prompt routed grows with the calls served: kept only where read
    for balancer, kept in (("locality", False), ("least-used", False), ("cache-aware", True)):
        replicas = [LocalReplica(i, EngineConfig()) for i in range(2)]
        frontend = Frontend(ServeConfig(balancer=balancer, replicas=2), replicas)
        assert all((r.routed is not None) == kept for r in frontend.replicas), balancer
