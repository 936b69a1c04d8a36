"""`autellix serve`: its flags reach the configs, and bad input is one line."""

import pytest

from autellix import cli


def test_flags_reach_the_configs(monkeypatch: pytest.MonkeyPatch, tiny_llama) -> None:
    seen = {}

    def fake_run(app, host, port, log_level):
        seen["frontend"] = app.state.frontend
        seen["where"] = (host, port, log_level)

    monkeypatch.setattr("autellix.server.drain.run", fake_run)
    argv = [
        "serve",
        "--model",
        str(tiny_llama),
        "--port",
        "8123",
        "--policy",
        "plas",
        "--balancer",
        "cache-aware",
        "--replicas",
        "3",
        "--ray",
        "auto",
        "--beta",
        "2",
        "--num-queues",
        "4",
        "--first-boundary",
        "0.5",
        "--preemption",
        "recompute",
        "--no-prefix-caching",
        "--evict-preempted",
        "--max-running",
        "7",
        "--service-accounting",
        "share",
        "--schedule-every",
        "3",
        "--max-waiting",
        "9",
        "--program-ttl",
        "60",
        "--long-prompt-tokens",
        "100",
    ]
    assert cli.main(argv) == 0
    config = seen["frontend"].config
    assert seen["where"] == ("127.0.0.1", 8123, "info")
    assert (config.replicas, config.balancer, config.ray) == (3, "cache-aware", "auto")
    assert config.max_queued_per_replica == 9  # --max-waiting keeps its name
    assert (config.program_ttl, config.long_prompt_tokens) == (60, 100)
    engine = config.engine
    assert (engine.policy, engine.preemption, engine.prefix_caching) == ("plas", "recompute", False)
    assert (engine.max_running, engine.schedule_every, engine.keep_preempted) == (7, 3, False)
    assert engine.service_accounting == "share"
    assert engine.scheduling.boundaries == (0.5, 1.0, 2.0) and engine.scheduling.beta == 2


def test_defaults() -> None:
    args = cli.build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.policy, args.balancer, args.replicas) == (
        "127.0.0.1",
        8000,
        "gittins",
        "locality",
        1,
    )
    assert args.prefix_caching and args.model is None


def test_bad_model_folder_is_one_line(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["serve", "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autellix: error: ") and err.count("\n") == 1


def test_bad_scheduling_values_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["serve", "--beta", "-1"]) == 2
    assert "beta must be positive" in capsys.readouterr().err


def test_a_batch_cut_the_policy_cannot_make_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["serve", "--policy", "fcfs", "--preempt", "--batch-cut"]) == 2
    assert (
        "batch_cut (--batch-cut) needs one of the policies plas, atlas" in capsys.readouterr().err
    )
    assert cli.main(["serve", "--batch-cut"]) == 2
    assert "batch_cut (--batch-cut) leaves running calls out: it needs preempt (--preempt)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--policy", "plas", "--no-gittins-per-size"],
            "gittins_per_size false (--no-gittins-per-size) applies only to policy gittins,"
            " not 'plas'",
        ),
        (["--skip-join"], "skip_join (--skip-join) applies only to policy mlfq, not 'gittins'"),
    ],
)
def test_a_setting_the_policy_does_not_serve_is_refused(
    capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    assert cli.main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", [["--no-kv-retention-host"], ["--kv-retention-max-ttl", "5"]])
def test_retention_settings_without_retention_are_refused(
    flag: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("autellix.server.drain.run", lambda *a, **k: None)
    assert cli.main(["serve", "--no-kv-retention", *flag]) == 2
    assert "apply only with --kv-retention" in capsys.readouterr().err
    assert cli.main(["serve", *flag]) == 0


def test_engine_settings_backends_would_ignore_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autellix.server.drain.run", lambda *a, **k: None)
    argv = ["serve", "--backend", "http://127.0.0.1:1"]
    with pytest.raises(
        SystemExit, match="--dtype, --max-running, --preempt, --batch-cut set the engine"
    ):
        cli.main([*argv, "--dtype", "bfloat16", "--max-running", "8", "--preempt", "--batch-cut"])
    # given at their defaults, they would still be ignored: refused all the same
    with pytest.raises(SystemExit, match="--kv-retention, --max-running set the engine"):
        cli.main([*argv, "--max-running", "32", "--kv-retention"])
    with pytest.raises(SystemExit, match="--kv-retention set the engine"):
        cli.main([*argv, "--no-kv-retention"])
    # what the frontend itself uses (the order, its queues, the block size) is taken
    assert cli.main([*argv, "--policy", "atlas", "--beta", "3", "--block-size", "32"]) == 0


def test_a_kernel_that_cannot_run_here_is_one_line(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before the server starts, not a traceback from the engine loading in it."""
    import torch

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    args = ["serve", "--dtype", "bfloat16", "--linear-kernel", "onednn", "--port", "1"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "the onednn linear kernel cannot run here: its bfloat16 path needs" in err
    assert err.count("\n") == 1
