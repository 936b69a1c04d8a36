"""Ending a program reaches the engines it used: its cached KV goes first when memory is
needed (DELETE, reaping), through a local replica and a child process; a program of one
anonymous call leaves the cache in LRU order."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from autellix.server.replica import handle
from autellix.server.replica_io import EndProgram

MODEL = "tiny"
PROMPT = " ".join(f"w{i}" for i in range(10, 30))  # 20 tokens: 5 full blocks of 4


def released(server) -> int:
    return server.engine_stats()["released_blocks"]


def wait_released(server, at_least: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (n := released(server)) < at_least:
        assert time.monotonic() < deadline, f"released {n} blocks, wanted {at_least}"
        time.sleep(0.02)
    return n


def test_deleting_a_program_releases_its_cache(serve) -> None:
    server = serve()
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)  # anonymous
        time.sleep(0.2)
        assert released(server) == 0
        c.completions.create(
            model=MODEL,
            prompt=PROMPT.replace("w1", "w2"),
            max_tokens=2,
            extra_headers={"X-Autellix-Program": "agent"},
        )
    assert httpx.delete(f"{server.base_url}/programs/agent").status_code == 200
    assert wait_released(server, 5) == 5
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'autellix_released_blocks{replica="0"} 5.0' in metrics


def test_a_reaped_program_releases_its_cache_in_a_child_process(serve) -> None:
    server = serve(replicas=1, processes=True, program_ttl=0.3)
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        c.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=2, extra_headers={"X-Autellix-Program": "p"}
        )
    assert wait_released(server, 5) == 5  # reaped after its TTL


def test_a_child_replica_applies_end_program(tiny_llama) -> None:
    from autellix.engine.config import EngineConfig
    from autellix.engine.llm_engine import LLMEngine
    from autellix.engine.sampling_params import SamplingParams

    engine = LLMEngine.from_config(
        EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=32)
    )
    engine.add_call(list(range(10, 30)), SamplingParams(max_tokens=1), program_id="p")
    while engine.has_unfinished():
        engine.step()
    assert handle(engine, EndProgram("p"), lambda msg: None)
    assert engine.stats()["released_blocks"] == 5


def test_a_programs_expected_return_pins_its_cache_until_it_ends(serve) -> None:
    from autellix.scheduling.retention import RetentionConfig

    server = serve(engine={"retention": RetentionConfig(enabled=True)})
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.BadRequestError, match="X-Autellix-Expect-Return"):
            c.completions.create(
                model=MODEL,
                prompt=PROMPT,
                max_tokens=2,
                extra_headers={"X-Autellix-Program": "agent", "X-Autellix-Expect-Return": "soon"},
            )
        c.completions.create(  # anonymous: never comes back, so never pinned
            model=MODEL,
            prompt=PROMPT,
            max_tokens=2,
            extra_headers={"X-Autellix-Expect-Return": "0"},
        )
        assert server.engine_stats()["pins_made"] == 0
        with pytest.raises(openai.BadRequestError, match="X-Autellix-Expect-Return"):
            c.completions.create(  # a bad hint is refused even where nothing would use it
                model=MODEL,
                prompt=PROMPT,
                max_tokens=2,
                extra_headers={"X-Autellix-Expect-Return": "soon"},
            )
        c.completions.create(
            model=MODEL,
            prompt=PROMPT.replace("w1", "w3"),
            max_tokens=2,
            extra_headers={"X-Autellix-Program": "agent", "X-Autellix-Expect-Return": "0"},
        )
    stats = server.engine_stats()
    assert (stats["pins_made"], stats["pinned_blocks"]) == (1, 5)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'autellix_pinned_blocks{replica="0"} 5.0' in metrics
    assert httpx.delete(f"{server.base_url}/programs/agent").status_code == 200
    deadline = time.monotonic() + 10
    while server.engine_stats()["pins_ended"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
