"""`autellix profile` on the tiny model, the fitted latency model, `autellix simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autellix.cli import main
from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.sim.latency import Profile
from autellix.sim.profile import measure


def test_fit_recovers_a_linear_step_time() -> None:
    shapes = [StepShape(n, s, c, 0.0) for n in (1, 8, 64, 300) for s in (1, 4) for c in (10, 900)]
    truth = [0.002, 1e-4, 5e-4, 2e-6]
    samples = [
        (
            sh,
            truth[0]
            + truth[1] * sh.new_tokens
            + truth[2] * sh.num_seqs
            + truth[3] * sh.context_tokens,
        )
        for sh in shapes
    ]
    profile = Profile.fit(
        samples, swap_time_per_block=1e-5, bytes_per_block=1, block_size=16, num_blocks=10
    )
    assert profile.coefficients == pytest.approx(truth, rel=1e-6, abs=1e-12)
    assert profile.error() < 1e-9
    assert profile(StepShape(10, 2, 100, 0.0)) == pytest.approx(0.002 + 1e-3 + 1e-3 + 2e-4)


def test_profile_measures_the_real_engine(tiny_llama: Path, tmp_path: Path) -> None:
    config = EngineConfig(model=str(tiny_llama), num_kv_blocks=256, max_running=8)
    profile = measure(config, (1, 4), (8, 64), decode_tokens=4, command="autellix profile")
    assert len(profile.samples or []) >= 2 * 2 * 4  # every generation's steps
    assert profile.num_blocks == 256 and profile.swap_time_per_block > 0
    # every step's time is positive and the fit predicts them to within a factor
    assert all(t > 0 for _, t in profile.samples or [])
    path = tmp_path / "p.json"
    profile.save(path)
    assert Profile.load(path).coefficients == profile.coefficients
    provenance = Profile.load(path).provenance  # what made it, where and at which commit
    assert provenance[0] == "Command: `autellix profile`"
    assert [line.split(":")[0] for line in provenance] == ["Command", "Machine", "Commit", "Date"]


def test_simulate_cli_writes_the_bench_reports(tmp_path: Path, capsys) -> None:
    profile = Profile([0.01, 1e-5, 1e-4, 0.0], 1e-5, 1, 16, 512, "test", "test")
    profile.save(tmp_path / "profile.json")
    out = tmp_path / "out"
    argv = [
        "simulate",
        "chatbot",
        "--programs",
        "4",
        "--scale",
        "0.05",
        "--rates",
        "1",
        "4",
        "--profile",
        str(tmp_path / "profile.json"),
        "--policies",
        "fcfs",
        "atlas",
        "srpt:--max-running 2",
        "--baseline",
        "fcfs",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = (out / "summary.md").read_text()
    for name in ("| fcfs | 1 | 4/4", "| atlas | 4 | 4/4", "| srpt | 4 | 4/4", "Simulation speed"):
        assert name in summary
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["records"]["srpt@4.0"]) == 4
    record = saved["records"]["srpt@4.0"][0]  # totals, not every call
    assert "calls" not in record and record["num_calls"] > 0 and record["decode_tokens"] > 0
    assert (out / "latency.png").exists()
    # what the replicas' engines counted, as a bench run reads it from /metrics: later
    # turns of a chat find the earlier ones in the prefix cache, held for them by the
    # default KV retention
    atlas = next(s for s in saved["summaries"] if (s["endpoint"], s["rate"]) == ("atlas", 4.0))
    assert 0 < atlas["prefix_hit_rate"] < 1 and atlas["hit_rate_by_kind"]
    assert atlas["counters"]["pins_made"] > 0 and atlas["counters"]["preemptions"] >= 0
    assert "| hit rate by program class |" in summary


def test_simulate_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    cases = [
        (["simulate", "chatbot", "--gpu", "tpu"], "unknown GPU 'tpu'"),
        (["simulate", "chatbot", "--model", "gpt-5"], "unknown model 'gpt-5'"),
        (["simulate", "chatbot", "--model", "llama-3.1-70b", "--tp", "1"], "does not fit"),
        (["simulate", "chatbot", "--profile", str(bad)], "is not a profile"),
        (["simulate", "chatbot", "--policies", "atlas:--warp 9"], "unknown engine flags: --warp"),
        (["simulate", "chatbot", "--policies", "lifo"], "invalid choice: 'lifo'"),
        (["simulate", "chatbot", "--baseline", "nosuch"], "--baseline 'nosuch' is none of vllm"),
        (
            ["simulate", "chatbot", "--policies", "a=fcfs", "a=plas"],
            "two variants or endpoints are named 'a'",
        ),
    ]
    for argv, message in cases:
        assert main([*argv, "--programs", "1", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("autellix: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "chatbot", "--programs", "-1"], "argument --programs: must be at least 1"),
        (["simulate", "chatbot", "--replicas", "0"], "argument --replicas: must be at least 1"),
        (["simulate", "chatbot", "--tp", "0"], "argument --tp: must be at least 1, not 0"),
        (["simulate", "chatbot", "--scale", "0"], "argument --scale: must be more than 0"),
        (["simulate", "chatbot", "--rates", "1", "0"], "argument --rates: must be more than 0"),
        (["simulate", "chatbot", "--bound", "-1"], "argument --bound: must be more than 0"),
        (["workload", "stats", "mixed", "--programs", "0"], "argument --programs: must be at"),
        (["bench", "mixed", "--programs", "0"], "argument --programs: must be at least 1"),
        (["bench", "mixed", "--timeout", "0"], "argument --timeout: must be more than 0"),
        (["bench", "mixed", "--seeds", "0"], "argument --seeds: must be at least 1, not 0"),
        (["bench", "mixed", "--port", "0"], "argument --port: must be at least 1, not 0"),
        (["demo", "--max-running", "0"], "argument --max-running: must be at least 1, not 0"),
        (["demo", "--programs", "0"], "argument --programs: must be at least 1, not 0"),
    ],
)
def test_numbers_out_of_bounds_are_argparse_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "x"], "--baseline 'x' is none of fcfs, gittins"),
        (["--policies", "a=fcfs", "a=plas"], "two variants or endpoints are named 'a'"),
        (
            ["--policies", "fcfs", "--peer", "fcfs=http://h/v1"],
            "two variants or endpoints are named 'fcfs'",
        ),
        (["--policies"], "nothing to measure: give --policies or an endpoint"),
    ],
)
def test_bench_names_are_checked_before_anything_runs(
    argv: list[str], message: str, capsys, tmp_path: Path
) -> None:
    assert main(["bench", "mixed", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autellix: error: {message}") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # no server started, nothing written


def test_ctrl_c_stops_a_command_without_a_traceback(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    argv = ["simulate", "mixed", "--programs", "5000", "--rates", "4", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autellix.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(5)  # imported and simulating (5000 programs take minutes)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.endswith("autellix: interrupted\n"), err
    assert "Traceback" not in err


def test_profile_checks_the_engine_as_serve_does(tiny_llama: Path, capsys) -> None:
    kernels = ["--linear-kernel", "torch", "--attention-kernel", "torch"]
    argv = ["profile", "--model", str(tiny_llama), *kernels, "--num-kv-blocks", "4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("autellix: error: the KV pool holds 64 tokens, fewer than one call")


def test_flags_of_the_other_kind_of_simulation_are_refused(capsys, tmp_path: Path) -> None:
    """A toy scenario takes --policy and --max-batch alone; a workload takes all but those.
    A flag that would be ignored is refused instead."""
    argv = ["simulate", "toy-fig2", "--programs", "20", "--gpu", "h100", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "autellix: error: --gpu, --out, --programs: not for a toy scenario\n"
    )
    assert main(["simulate", "chatbot", "--policy", "plas", "--programs", "1"]) == 2
    assert "--policy: not for a workload" in capsys.readouterr().err
    assert main(["simulate", "toy-fig2", "--policy", "plas", "--max-batch", "2"]) == 0
