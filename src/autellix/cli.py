"""The `autellix` command."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Callable

from autellix.flags import add_engine_flags, number

COUNT = number(int, min=1)
POSITIVE = number(float, above=0)


def _run(module: str, function: str):
    """A subcommand's work, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return run


def _demo(args: argparse.Namespace) -> int:
    """The paper's toy, then the main job in small: the bench of `bench.command.demo_argv`."""
    from autellix.bench import command
    from autellix.sim import toy

    toy.print_tables()
    if args.toy_only:
        return 0
    argv = command.demo_argv(args)
    bench = build_parser().parse_args(argv)
    bench.command_line = shlex.join(["autellix", *argv])
    return command.run_bench(bench)


def _workload_stats(args: argparse.Namespace) -> int:
    from autellix.workloads import build_workload, format_stats, stats, workload_params

    params = workload_params(args.workload_arg)
    specs = build_workload(
        args.name, args.programs, rate=1.0, seed=args.seed, scale=args.scale, **params
    )
    print(format_stats({**stats(specs), "workload": args.name}))
    return 0


def _workload_names() -> str:
    from autellix.workloads import WORKLOADS

    return " | ".join(WORKLOADS)


def _add_workload_flags(
    p: argparse.ArgumentParser, programs: int, scale: float, rates: list[float] | None = None
) -> None:
    """--programs, --rates (when given defaults), --scale, --seed and --workload-arg."""
    per_rate = " per rate" if rates is not None else ""
    p.add_argument(
        "--programs",
        type=COUNT,
        default=programs,
        help=f"programs{per_rate} (default: %(default)s)",
    )
    if rates is not None:
        p.add_argument(
            "--rates",
            type=POSITIVE,
            nargs="+",
            default=rates,
            help="program arrival rates, programs/s (default: %(default)s)",
        )
    p.add_argument(
        "--scale",
        type=POSITIVE,
        default=scale,
        help="shrink text and output lengths by this (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: %(default)s)")
    p.add_argument(
        "--workload-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a workload builder parameter, e.g. iterations=4 for lats, lats.iterations=4 "
        "for mixed (repeatable)",
    )


def simulate_flags(p: argparse.ArgumentParser) -> None:
    from autellix.sim.command import SIM_ENGINE_DEFAULTS, SIM_VARIANTS
    from autellix.sim.toy import SCENARIOS

    p.description = (
        "Run a workload through real engines (scheduler, KV cache, policy, balancer) whose"
        " steps take what a latency model says: a roofline of a GPU and model, or a profile of"
        " this machine from `autellix profile`. Also the paper's toy scenarios ("
        + ", ".join(sorted(SCENARIOS))
        + ")."
    )
    p.add_argument("workload", help=f"{_workload_names()}, or a toy scenario")
    p.add_argument(
        "--policies",
        nargs="+",
        metavar="[NAME=]POLICY[:FLAGS]",
        help="engine variants, each a policy with extra engine flags (default: "
        + " ".join(repr(v) for v in SIM_VARIANTS)
        + ")",
    )
    p.add_argument(
        "--engine-args",
        default="",
        help=f"engine flags for every variant (on top of "
        f"{SIM_ENGINE_DEFAULTS!r}; see `autellix serve --help`)",
    )
    _add_simulate_target(p)
    _add_workload_flags(p, programs=200, scale=1.0, rates=[0.5, 1, 2, 4])
    p.add_argument(
        "--baseline", help="ratios are against this variant (default: vllm, else the first)"
    )
    p.add_argument(
        "--bound",
        type=POSITIVE,
        help="token-latency bound for equal latency (default: twice the baseline's at the lowest"
        " rate)",
    )
    p.add_argument("--out", help="results folder (default benchmarks/results/sim/WORKLOAD)")
    _add_simulate_toy(p)
    p.set_defaults(run=_run("autellix.sim.command", "run_simulate"))


def _add_simulate_target(p: argparse.ArgumentParser) -> None:
    """What is simulated: a GPU roofline or a profile, and the replicas."""
    from autellix.balancing import BALANCERS
    from autellix.sim.hardware import GPUS, MODELS

    p.add_argument("--gpu", default="a100", help=f"{' | '.join(GPUS)} (default: %(default)s)")
    p.add_argument(
        "--model", default="llama-3.1-8b", help=f"{' | '.join(MODELS)} (default: %(default)s)"
    )
    p.add_argument("--tp", type=COUNT, help="GPUs per replica (default: 1 for 8B, 4 for 70B)")
    p.add_argument(
        "--profile",
        help="a profile from `autellix profile` instead of the GPU roofline (default: none)",
    )
    p.add_argument(
        "--replicas", type=COUNT, default=1, help="engine replicas (default: %(default)s)"
    )
    p.add_argument(
        "--balancer", default="locality", choices=sorted(BALANCERS), help="(default: %(default)s)"
    )
    p.add_argument(
        "--long-prompt-tokens",
        type=number(int, min=0),
        default=2048,
        help="locality: prompts longer than this go to the program's pinned replica"
        " (default: %(default)s)",
    )


def _add_simulate_toy(p: argparse.ArgumentParser) -> None:
    from autellix.scheduling import POLICIES

    p.add_argument(
        "--policy", choices=sorted(POLICIES), help="toy scenarios: the policy (default: atlas)"
    )
    p.add_argument(
        "--max-batch",
        type=COUNT,
        default=2,
        help="toy scenarios: calls per step (default: %(default)s)",
    )


def _profile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="profile.json", help="where to write (default: %(default)s)")
    add_engine_flags(p)
    p.set_defaults(run=_run("autellix.sim.command", "run_profile"))


def _serve_flags(p: argparse.ArgumentParser) -> None:
    from autellix.server.launch import add_serve_flags

    add_serve_flags(p)
    p.set_defaults(run=_run("autellix.server.launch", "serve"))


def _workload_flags(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="workload_command", required=True)
    stats = sub.add_parser("stats", help="calls per program, prefill and decode tokens per call")
    stats.add_argument("name", help=_workload_names())
    _add_workload_flags(stats, programs=200, scale=1.0)
    stats.set_defaults(run=_workload_stats)


def _bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", help=_workload_names())
    _add_workload_flags(p, programs=20, scale=0.05, rates=[0.05, 0.1, 0.2])
    _add_bench_servers(p)
    _add_bench_endpoints(p)
    p.add_argument(
        "--named-kinds",
        action="store_true",
        help="programs name their kind to Autellix endpoints (X-Autellix-Kind: chatbot, react, "
        "lats, chat, fan-out, search), as SDK users who name their agents do",
    )
    _add_bench_measures(p)
    p.set_defaults(run=_run("autellix.bench.command", "run_bench"))


def _add_bench_servers(p: argparse.ArgumentParser) -> None:
    """The servers the bench starts itself: one per policy variant."""
    p.add_argument(
        "--policies",
        nargs="*",
        metavar="[NAME=]POLICY[:FLAGS]",
        help="start `autellix serve` per policy, with extra serve flags if given, e.g. "
        "vllm=fcfs:--no-prefix-caching (default: fcfs:--no-kv-retention, as vLLM serves, and the"
        " default policy when no endpoint is given)",
    )
    p.add_argument("--serve-args", default="", help="extra flags for those servers (default: none)")
    p.add_argument(
        "--port",
        type=number(int, min=1, max=65535),
        default=8400,
        help="first port for those servers (default: %(default)s)",
    )


def _add_bench_measures(p: argparse.ArgumentParser) -> None:
    """What is measured and compared, and where the results go."""
    p.add_argument(
        "--baseline", help="ratios are against this endpoint (default: fcfs, else the first)"
    )
    p.add_argument(
        "--bound",
        type=POSITIVE,
        help="token-latency bound for equal latency (default: twice the baseline's at the "
        "lowest rate)",
    )
    p.add_argument(
        "--seeds",
        type=COUNT,
        default=1,
        help="run the workload with this many seeds from --seed, each in OUT/seedN with fresh "
        "servers, and write OUT/ratios.md: each ratio to the baseline with its 95%% CI "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--search",
        type=number(int, min=0),
        default=0,
        metavar="STEPS",
        help="find each endpoint's throughput at the bound by measuring more rates: beyond "
        "--rates until the bound is crossed, then STEPS bisections (default: off)",
    )
    p.add_argument(
        "--timeout",
        type=POSITIVE,
        help="seconds per (endpoint, rate) run; programs still running then fail (default: none)",
    )
    p.add_argument("--out", help="results folder (default benchmarks/results/bench-WORKLOAD)")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep what OUT/results.json holds and add these endpoints or rates to the same "
        "tables (a rate run again replaces the old one)",
    )


def _add_bench_endpoints(p: argparse.ArgumentParser) -> None:
    for flag, what in (
        ("--endpoint", "an Autellix endpoint (program sessions)"),
        ("--peer", "an OpenAI-compatible peer without sessions (e.g. vLLM, FCFS)"),
        (
            "--peer-priority",
            "a peer in priority mode: calls stamped with the program's tokens so far",
        ),
        (
            "--peer-plugin",
            "a vLLM running the Autellix scheduler plug-in: calls name their program in vllm_xargs",
        ),
    ):
        p.add_argument(flag, action="append", metavar="NAME=URL", help=what)
    p.add_argument(
        "--model", help="model name for --endpoint/--peer (default: the first one each serves)"
    )


def _demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--toy-only", action="store_true", help="only the toy scenarios")
    p.add_argument(
        "--programs", type=COUNT, default=40, help="programs per rate (default: %(default)s)"
    )
    p.add_argument(
        "--rates",
        type=POSITIVE,
        nargs="+",
        default=[8.0],
        help="arrival rates, programs/s (default: %(default)s: a burst, where calls queue on two "
        "CPU cores and scheduling matters)",
    )
    p.add_argument(
        "--max-running",
        type=COUNT,
        help="calls in a batch for every server (default: the server's own)",
    )
    p.add_argument(
        "--scale", type=POSITIVE, default=0.1, help="workload scale (default: %(default)s)"
    )
    p.set_defaults(run=_demo)


class _Subcommand(argparse.ArgumentParser):
    """A subcommand whose flags are added when it is parsed or its help is shown: one
    subcommand does not wait for another's imports (serve's flags import torch)."""

    add_flags: Callable[[argparse.ArgumentParser], None] | None = None

    def _with_flags(self) -> None:
        add, self.add_flags = self.add_flags, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._with_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._with_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self._with_flags()
        return super().format_help()


COMMANDS = {
    "simulate": (
        "a workload through the real scheduler in virtual time, at GPU scale",
        simulate_flags,
    ),
    "profile": (
        "time the engine's steps on this machine, for `simulate --profile`",
        _profile_flags,
    ),
    "serve": ("the OpenAI-compatible server with program sessions", _serve_flags),
    "workload": ("inspect the agentic workloads", _workload_flags),
    "bench": ("run a workload against endpoints at a sweep of arrival rates", _bench_flags),
    "demo": (
        "the toy scenarios, then a mixed workload under FCFS (without and with prefix caching)"
        " and Autellix",
        _demo_flags,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autellix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Subcommand)
    for name, (what, flags) in COMMANDS.items():
        commands.add_parser(name, help=what).add_flags = flags
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was given, not only what it parsed to (`flags.given_flags`)
    args.command_line = shlex.join(["autellix", *argv])  # results folders record it
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C on a bench or a simulation: no traceback
        print("autellix: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `autellix workload stats mixed | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"autellix: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
