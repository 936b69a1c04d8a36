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
    with pytest.raises(SystemExit) as exit:  # argparse checks the bounds of one flag
        cli.main(["serve", "--beta", "-1"])
    assert exit.value.code == 2
    assert "argument --beta: must be more than 0, not -1.0" in capsys.readouterr().err
    assert cli.main(["serve", "--boundaries", "2", "1"]) == 2  # the config, flags together
    assert capsys.readouterr().err == (
        "autellix: error: queue boundaries must be strictly increasing\n"
    )


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


def test_engine_settings_backends_would_ignore_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("autellix.server.drain.run", lambda *a, **k: None)
    argv = ["serve", "--backend", "http://127.0.0.1:1"]

    def refused(*flags: str) -> str:
        assert cli.main([*argv, *flags]) == 2
        return capsys.readouterr().err

    assert "--dtype, --max-running, --preempt, --batch-cut set the engine" in refused(
        "--dtype", "bfloat16", "--max-running", "8", "--preempt", "--batch-cut"
    )
    # given at their defaults, they would still be ignored: refused all the same
    assert "--kv-retention, --max-running set the engine" in refused(
        "--max-running", "32", "--kv-retention"
    )
    assert ": --kv-retention set the engine" in refused("--no-kv-retention")
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


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--port", "70000"], "argument --port: must be at most 65535, not 70000"),
        (["--replicas", "0"], "argument --replicas: must be at least 1, not 0"),
        (["--kv-cache-gib", "0"], "argument --kv-cache-gib: must be more than 0.0, not 0.0"),
        (["--max-programs", "0"], "argument --max-programs: must be at least 1, not 0"),
        (["--max-body-bytes", "0"], "argument --max-body-bytes: must be at least 1, not 0"),
        (["--max-program-calls", "0"], "argument --max-program-calls: must be at least 1, not 0"),
        (["--max-tenant-calls", "0"], "argument --max-tenant-calls: must be at least 1, not 0"),
        (["--max-waiting", "-1"], "argument --max-waiting: must be at least 0, not -1"),
        (["--program-ttl", "0"], "argument --program-ttl: must be more than 0, not 0.0"),
        (["--drain-timeout", "-1"], "argument --drain-timeout: must be at least 0, not -1.0"),
        (["--replica-timeout", "-1"], "argument --replica-timeout: must be at least 0, not -1.0"),
        (["--long-prompt-tokens", "-1"], "argument --long-prompt-tokens: must be at least 0"),
        (["--swap-blocks", "-1"], "argument --swap-blocks: must be at least 0, not -1"),
        (["--max-model-len", "0"], "argument --max-model-len: must be at least 1, not 0"),
        (["--num-queues", "0"], "argument --num-queues: must be at least 1, not 0"),
        (["--boundary-ratio", "1"], "argument --boundary-ratio: must be more than 1, not 1.0"),
        (["--max-running", "0"], "argument --max-running: must be at least 1, not 0"),
    ],
)
def test_a_number_out_of_bounds_is_refused_before_anything_loads(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", *flags])
    assert exit.value.code == 2
    assert f"autellix serve: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--served-model-name="], "served_model_name (--served-model-name) must not be empty"),
        (["--api-key="], "api_key (--api-key) must not be empty"),
        (["--api-key", "a b"], "api_key (--api-key) must be printable and without spaces"),
        (["--backend-priority"], "backend_priority (--backend-priority) applies only with"),
        (["--backend-programs"], "backend_programs (--backend-programs) applies only with"),
        (["--backend", "localhost:8000"], "--backend localhost:8000: not an http:// or https://"),
        (["--backend", "http://h:99999"], "--backend http://h:99999: Port out of range"),
        (["--program-sizes", "nowhere/sizes.json"], "the folder nowhere does not exist"),
        (["--program-sizes", "."], "--program-sizes .: a folder, not a file"),
        (["--max-model-len", "300"], "--max-model-len 300 is longer than the model's context"),
        (
            ["--num-kv-blocks", "15", "--block-size", "16"],
            "the KV pool holds 240 tokens, fewer than one call of the whole context (256",
        ),
    ],
)
def test_settings_that_cannot_serve_are_one_line_before_the_server_starts(
    flags: list[str], message: str, capsys: pytest.CaptureFixture, tiny_llama
) -> None:
    # torch's kernels: nothing to build (a --backend runs no engine: it takes none)
    kernels = (
        [] if "--backend" in flags else ["--linear-kernel", "torch", "--attention-kernel", "torch"]
    )
    assert cli.main(["serve", "--model", str(tiny_llama), *kernels, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autellix: error: ") and message in err and err.count("\n") == 1


def test_a_pool_that_holds_one_whole_context_is_enough(
    monkeypatch: pytest.MonkeyPatch, tiny_llama
) -> None:
    monkeypatch.setattr("autellix.server.drain.run", lambda *a, **k: None)
    flags = ["--model", str(tiny_llama), "--num-kv-blocks", "16", "--block-size", "16"]
    assert cli.main(["serve", *flags]) == 0  # 256 tokens, the tiny model's context


def test_a_server_that_cannot_start_says_why_in_one_line(capsys: pytest.CaptureFixture) -> None:
    """A backend that does not answer: the reason, not a lifespan traceback, and exit 1."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]
    argv = ["serve", "--backend", f"http://127.0.0.1:{nobody}", "--port", "0"]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert str(exit.value).startswith("autellix: error: the server did not start: backend http")
    assert "does not serve /v1/models" in str(exit.value)
    assert "Traceback" not in capsys.readouterr().err
