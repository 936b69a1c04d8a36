"""The bench runner against a real server: real outputs feed later prompts, the
process table sees the programs, results land on disk, a dead endpoint is reported."""

from __future__ import annotations

import asyncio
import json

import openai

from autellix.bench.metrics import Summary
from autellix.bench.report import read_results, write_results
from autellix.bench.runner import Endpoint, run_specs
from autellix.bench.sweep import sweep
from autellix.workloads.spec import CallSpec, ProgramSpec, Stage

MODEL = "tiny"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def specs(rate: float = 1.0) -> list[ProgramSpec]:
    chat = ProgramSpec(
        "chat",
        "chatbot",
        0.0,
        [
            Stage([CallSpec([user("w1 w2")], 5, 4)]),
            Stage(
                [
                    CallSpec(
                        [user("w1 w2"), {"role": "assistant", "ref": [0, 0]}, user("w3")],
                        4,
                        12,
                        tool_delay=0.0,
                    )
                ]
            ),
        ],
    )
    fan = ProgramSpec(
        "fan",
        "lats",
        0.2 / rate,
        [
            Stage([CallSpec([user(f"w{i} w9")], 3, 4, tool_delay=0.05) for i in range(3)]),
            Stage([CallSpec([user("w5"), {"role": "assistant", "ref": [0, 2]}], 2, 8)]),
        ],
    )
    return [chat, fan]


def test_runner_feeds_real_outputs_and_names_programs(serve) -> None:
    server = serve()
    endpoint = Endpoint("autellix", server.base_url, MODEL)
    records = asyncio.run(run_specs(specs(), endpoint))
    by_id = {r.program_id: r for r in records}
    assert all(r.error is None for r in records)
    chat = by_id["chat"]
    assert [c.output_tokens for c in chat.calls] == [5, 4]
    # the second prompt holds the first call's real 5-token answer
    assert chat.calls[1].prompt_tokens > chat.calls[0].prompt_tokens + 5
    fan = by_id["fan"]
    assert len(fan.calls) == 4 and fan.decode_tokens == 3 * 3 + 2
    assert fan.latency > 0.05  # the tool delay between the stages
    table = server.frontend.table
    chat_id = next(p for p in table.programs if p.endswith("-chat"))
    fan_id = next(p for p in table.programs if p.endswith("-fan"))
    assert table.get(chat_id).completed_calls == 2 and table.get(fan_id).completed_calls == 4
    assert table.get(fan_id).critical_path < table.get(fan_id).service  # threads overlapped
    # a second run of the same specs is a new set of programs to the server
    asyncio.run(run_specs(specs(), endpoint))
    assert len(table.programs) == 4


def test_sweep_and_report(serve, tmp_path) -> None:
    server = serve()
    ok = Endpoint("atlas", server.base_url, None)  # no model name: the one it serves
    dead = Endpoint("gone", "http://127.0.0.1:9/v1", MODEL, sessions=False)
    summaries, records, failed = sweep(specs, [ok, dead], rates=[1.0, 2.0])
    assert set(failed) == {"gone"} and "unreachable" in failed["gone"]
    assert ok.model == MODEL
    assert [s.rate for s in summaries["atlas"]] == [1.0, 2.0]
    assert all(s.completed == 2 for s in summaries["atlas"])
    # each run's prefix-cache hit rate, from the server's counters: the second rate sends
    # the first's prompts again, so their full blocks come from the cache
    first, second = (s.prefix_hit_rate for s in summaries["atlas"])
    assert first is not None and second is not None and 0 <= first < second < 1
    # ... and per program class (here the hash of each program's system prompt), and the
    # engine's counters over each run, retention's among them (whether a pin pays here
    # depends on wall-clock gaps against this machine's prefill time, so how many is not
    # asserted); nothing is evicted from a pool this large
    for s in summaries["atlas"]:
        assert s.hit_rate_by_kind and all(0 <= r < 1 for r in s.hit_rate_by_kind.values())
        assert s.counters and s.counters["pins_made"] >= s.counters["pins_hit"] >= 0
        assert s.counters["evictions"] == 0
    kinds = summaries["atlas"][1].hit_rate_by_kind
    assert kinds and max(kinds.values()) > 0
    markdown = write_results(tmp_path, "t", {"atlas": summaries["atlas"]}, records, "atlas")
    assert "| atlas | 1 | 2/2 |" in markdown and "1.00x" in markdown
    assert "| hit rate by program class |" in markdown
    for s in summaries["atlas"]:  # preemptions, evictions, pins made, hit (blocks)
        c = s.counters or {}
        row = f"| 0 | 0 | {c['pins_made']:.0f} | {c['pins_hit']:.0f} ({c['pin_hit_blocks']:.0f}) |"
        assert row in markdown
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["records"]["atlas@1.0"]) == 2
    assert (tmp_path / "latency.png").stat().st_size > 10_000
    assert (tmp_path / "summary.csv").read_text().startswith("endpoint,rate")
    assert isinstance(summaries["atlas"][0], Summary)
    # `bench --append` reads a run back whole, to add endpoints to the same tables
    again_s, again_r = read_results(tmp_path)
    assert again_s == {"atlas": summaries["atlas"]} and again_r == records


def sent_field(monkeypatch, field: str) -> list[tuple[str, object]]:
    """(first message, the value of `field`) of each chat call the bench sends, with the
    field taken out before the server sees it: this server stands in for a vLLM peer and
    refuses vLLM's fields."""
    sent: list[tuple[str, object]] = []
    client = openai.DefaultAsyncHttpxClient  # the bench's http client
    send = client.send

    async def recording(self, request, **kw):
        if request.url.path.endswith("/chat/completions"):
            body = json.loads(request.content)
            sent.append((body["messages"][0]["content"], body.pop(field, None)))
            headers = {k: v for k, v in request.headers.items() if k != "content-length"}
            request = type(request)(request.method, request.url, headers=headers, json=body)
        return await send(self, request, **kw)

    monkeypatch.setattr(client, "send", recording)
    return sent


def test_priority_peer_mode_sends_stamps(serve, monkeypatch) -> None:
    """Each call is stamped with its program's output tokens so far, as sent on the wire."""
    server = serve()
    sent = sent_field(monkeypatch, "priority")
    peer = Endpoint("peer", server.base_url, MODEL, sessions=False, priority=True)
    records = asyncio.run(run_specs(specs(), peer))
    assert [r.error for r in records if r.error] == []
    # chat: 5 tokens, then its second turn; fan: three parallel calls of 3, then one
    assert sorted(sent) == sorted(
        [("w1 w2", 0), ("w1 w2", 5), ("w0 w9", 0), ("w1 w9", 0), ("w2 w9", 0), ("w5", 9)]
    )
    # without sessions every call is a program of one call: none is left in the table
    assert "chat" not in server.frontend.table


def test_a_plugin_peer_gets_each_calls_program_in_vllm_xargs(serve, monkeypatch) -> None:
    server = serve()
    sent = sent_field(monkeypatch, "vllm_xargs")
    peer = Endpoint("peer", server.base_url, MODEL, sessions=False, program_args=True)
    records = asyncio.run(run_specs(specs(), peer))
    assert [r.error for r in records if r.error] == []
    # each run tags its programs, so that two runs on one vLLM are different programs
    names = {text: args["autellix_program"] for text, args in sent}
    assert len(sent) == 6 and len(set(names.values())) == 2
    assert names["w1 w2"].endswith("-chat") and names["w5"].endswith("-fan")


def test_programs_name_their_kind_when_asked(serve, monkeypatch, tmp_path) -> None:
    import argparse

    import autellix.bench.sweep as sweep_module
    from autellix.bench.command import Results, measure

    server = serve()
    table = server.frontend.table
    asyncio.run(run_specs(specs(), Endpoint("autellix", server.base_url, MODEL, kinds=True)))
    assert sorted(p.kind for p in table.programs.values()) == ["chatbot", "lats"]
    asyncio.run(run_specs(specs(), Endpoint("autellix", server.base_url, MODEL)))
    assert sorted(p.kind or "" for p in table.programs.values()) == ["", "", "chatbot", "lats"]
    # `autellix bench --named-kinds` asks it of every endpoint with sessions, and only those
    seen = []
    monkeypatch.setattr(sweep_module, "sweep", lambda b, eps, *a: seen.extend(eps) or ({}, {}, {}))
    args = argparse.Namespace(named_kinds=True, rates=[1.0], timeout=None, search=0)
    for ep in (Endpoint("a", "http://x/v1", MODEL), Endpoint("p", "http://y/v1", MODEL, False)):
        measure(args, specs, ep, Results(tmp_path, append=False))
    assert [ep.kinds for ep in seen] == [True, False]


def test_a_bench_whose_programs_all_fail_fails(serve, tmp_path, capsys) -> None:
    """A model the endpoint does not serve: every call is a 404, and the bench says so and
    exits 1 (it used to write a table of NaNs and exit 0)."""
    from autellix.cli import main

    server = serve()
    argv = ["bench", "chatbot", "--programs", "2", "--scale", "0.05", "--rates", "1"]
    argv += ["--endpoint", f"ok={server.base_url}", "--out", str(tmp_path)]
    assert main([*argv, "--model", "nosuch"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "ok: every program failed: NotFoundError: Error code: 404 - model 'nosuch'" in out
    assert main([*argv, "--model", MODEL]) == 0  # the control
