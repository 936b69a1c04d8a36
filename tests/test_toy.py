"""The paper's Figure 2 toy and a multi-threaded one, through the CLI."""

import json

import pytest

from autellix.cli import main
from autellix.sim.toy import run_toy


def simulate(capsys: pytest.CaptureFixture, scenario: str, policy: str) -> dict:
    assert main(["simulate", scenario, "--policy", policy]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_fig2_fcfs_waits_18_as_in_the_paper(capsys: pytest.CaptureFixture) -> None:
    result = simulate(capsys, "toy-fig2", "fcfs")
    assert result["policy"] == "fcfs"
    assert result["total_wait"] == 18 and result["makespan"] == 14


def test_fig2_plas_beats_fcfs_and_mlfq(capsys: pytest.CaptureFixture) -> None:
    fcfs, mlfq, plas = (simulate(capsys, "toy-fig2", p) for p in ("fcfs", "mlfq", "plas"))
    assert plas["total_wait"] < mlfq["total_wait"] <= fcfs["total_wait"]
    # the values documented in the README (paper: MLFQ 18, PLAS 12)
    assert (mlfq["total_wait"], plas["total_wait"]) == (17, 13)


def test_fig2_single_threaded_atlas_equals_plas() -> None:
    assert run_toy("toy-fig2", "atlas") == {**run_toy("toy-fig2", "plas"), "policy": "atlas"}


def test_atlas_finishes_the_parallel_program_sooner_than_plas(
    capsys: pytest.CaptureFixture,
) -> None:
    plas, atlas = (simulate(capsys, "toy-atlas", p) for p in ("plas", "atlas"))
    assert atlas["finish"]["P"] < plas["finish"]["P"]
    assert atlas["total_wait"] < plas["total_wait"]


def test_srpt_is_the_lower_bound_on_waiting() -> None:
    for scenario in ("toy-fig2", "toy-atlas"):
        waits = {p: run_toy(scenario, p)["total_wait"] for p in ("fcfs", "mlfq", "plas", "atlas")}
        assert run_toy(scenario, "srpt")["total_wait"] <= min(waits.values())


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:  # the parser's bound
        main(["simulate", "toy-fig2", "--max-batch", "0"])
    assert exit.value.code == 2
    assert "argument --max-batch: must be at least 1, not 0" in capsys.readouterr().err
    assert main(["simulate", "no-such-toy"]) == 2
    assert capsys.readouterr().err.startswith("autellix: error: unknown workload 'no-such-toy'")


def test_demo_prints_every_policy(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--toy-only"]) == 0
    out = capsys.readouterr().out
    for name in ("fcfs", "mlfq", "plas", "atlas", "srpt", "toy-fig2", "toy-atlas"):
        assert name in out


def test_demo_benches_a_small_mixed_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("autellix.sim.toy.print_tables", lambda: None)
    monkeypatch.setattr("autellix.bench.command.run_bench", lambda args: seen.append(args) or 0)
    assert main(["demo"]) == 0
    (args,) = seen
    assert (args.workload, args.programs, args.scale) == ("mixed", 40, 0.1)
    assert args.workload_arg == ["lats.iterations=2"]  # a few minutes, not an hour
    # vLLM's defaults: no KV retention; ours: the default settings
    assert args.policies == [
        "vllm=fcfs:--no-prefix-caching",
        "vllm-opt=fcfs:--no-kv-retention",
        "gittins",
    ]
    assert args.serve_args == ""  # the servers' default settings, not a throttled batch
    main(["demo", "--max-running", "4"])
    assert seen[-1].serve_args == "--max-running 4"
