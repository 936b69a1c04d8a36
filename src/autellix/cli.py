"""The `autellix` command."""

from __future__ import annotations

import argparse
import json
import sys

from autellix.scheduling import POLICIES
from autellix.sim.toy import SCENARIOS, run_toy


def _simulate(args: argparse.Namespace) -> int:
    result = run_toy(args.workload, args.policy, max_batch=args.max_batch)
    print(json.dumps(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for scenario in SCENARIOS:
        table = Table(title=f"{scenario}: batch of 2, one decode step per time unit")
        for column in ("policy", "total wait", "makespan", "mean program latency", "finish"):
            table.add_column(column)
        for policy in POLICIES:
            r = run_toy(scenario, policy)
            finish = " ".join(f"{p}={t}" for p, t in sorted(r["finish"].items()))
            table.add_row(
                policy,
                str(r["total_wait"]),
                str(r["makespan"]),
                f"{r['mean_program_latency']:.2f}",
                finish,
            )
        console.print(table)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from autellix.engine.config import EngineConfig
    from autellix.engine.model import load_config
    from autellix.scheduling import SchedulingConfig
    from autellix.scheduling.config import geometric_boundaries
    from autellix.server.app import create_app
    from autellix.server.frontend import Frontend, ServeConfig

    if args.model is not None:
        load_config(args.model)  # a bad folder is a one-line error, before anything starts
    boundaries = args.boundaries or geometric_boundaries(
        args.first_boundary, args.boundary_ratio, args.num_queues
    )
    scheduling = SchedulingConfig(
        boundaries=tuple(boundaries),
        quanta=tuple(args.quanta) if args.quanta else None,
        beta=args.beta,
        skip_join=args.skip_join,
    )
    engine = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        policy=args.policy,
        scheduling=scheduling,
        block_size=args.block_size,
        num_kv_blocks=args.num_kv_blocks,
        kv_cache_bytes=int(args.kv_cache_gib * 2**30),
        swap_blocks=args.swap_blocks,
        preemption=args.preemption,
        prefix_caching=not args.no_prefix_caching,
        max_running=args.max_running,
        max_prefill_tokens=args.max_prefill_tokens,
        chunked_prefill=not args.no_chunked_prefill,
        schedule_every=args.schedule_every,
        max_model_len=args.max_model_len,
    )
    config = ServeConfig(
        engine=engine,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        balancer=args.balancer,
        long_prompt_tokens=args.long_prompt_tokens,
        served_model_name=args.served_model_name,
        program_ttl=args.program_ttl,
        max_waiting=args.max_waiting,
        ray=args.ray,
    )
    app = create_app(Frontend(config))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    from autellix.balancing import BALANCERS

    p.add_argument(
        "--model", help="Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)"
    )
    p.add_argument(
        "--served-model-name", help="the model name clients send (default: the folder's name)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="engine replicas, each a process with its own model copy (default 1)",
    )
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="place the replicas as Ray actors (auto: join or start a local cluster)",
    )
    p.add_argument(
        "--balancer",
        default="locality",
        choices=sorted(BALANCERS),
        help="how calls are spread over replicas (default locality)",
    )
    p.add_argument(
        "--long-prompt-tokens",
        type=int,
        default=2048,
        help="locality: prompts longer than this go to the program's pinned replica",
    )
    p.add_argument(
        "--program-ttl",
        type=float,
        default=600.0,
        help="seconds an idle program is kept in the process table (default 600)",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=256,
        help="calls queued per replica beyond --max-running before 429 (default 256)",
    )
    g = p.add_argument_group("scheduling")
    g.add_argument(
        "--policy",
        default="atlas",
        choices=["fcfs", "mlfq", "plas", "atlas"],
        help="atlas (default): program-level least attained service by critical path;"
        " for single-threaded programs it equals plas, so it serves both kinds",
    )
    g.add_argument("--num-queues", type=int, default=11, help="K priority queues (default 11)")
    g.add_argument(
        "--first-boundary",
        type=float,
        default=1.0,
        help="upper edge of Q1 in seconds of service (default 1)",
    )
    g.add_argument(
        "--boundary-ratio",
        type=float,
        default=2.0,
        help="each boundary is this times the one before (default 2)",
    )
    g.add_argument(
        "--boundaries", type=float, nargs="+", help="explicit queue boundaries (seconds)"
    )
    g.add_argument("--quanta", type=float, nargs="+", help="per-queue quanta (default: widths)")
    g.add_argument("--beta", type=float, default=5.0, help="anti-starvation ratio (default 5)")
    g.add_argument("--skip-join", action="store_true", help="mlfq: enter by prompt length")
    e = p.add_argument_group("engine")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    e.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    e.add_argument(
        "--num-kv-blocks", type=int, help="KV pool size in blocks (overrides --kv-cache-gib)"
    )
    e.add_argument(
        "--kv-cache-gib", type=float, default=1.0, help="KV pool size in GiB (default 1)"
    )
    e.add_argument(
        "--swap-blocks", type=int, help="host swap pool in blocks (default: as the KV pool)"
    )
    e.add_argument("--preemption", default="swap", choices=["swap", "recompute"])
    e.add_argument("--no-prefix-caching", action="store_true", help="turn prefix caching off")
    e.add_argument("--max-running", type=int, default=32, help="calls in a batch (default 32)")
    e.add_argument(
        "--max-prefill-tokens", type=int, default=512, help="prompt tokens per step (default 512)"
    )
    e.add_argument("--no-chunked-prefill", action="store_true", help="prefill whole prompts only")
    e.add_argument(
        "--schedule-every",
        type=int,
        default=1,
        help="multi-step: a scheduling round every N decode steps (default 1)",
    )
    e.add_argument("--max-model-len", type=int, help="context length (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autellix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run a workload in virtual time")
    simulate.add_argument("workload", choices=sorted(SCENARIOS), help="the scenario to run")
    simulate.add_argument("--policy", choices=sorted(POLICIES), default="atlas")
    simulate.add_argument("--max-batch", type=int, default=2, help="calls per step (default 2)")
    simulate.set_defaults(run=_simulate)

    serve = commands.add_parser("serve", help="the OpenAI-compatible server with program sessions")
    _add_serve_flags(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="the paper's toy scenarios under every policy")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        print(f"autellix: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
