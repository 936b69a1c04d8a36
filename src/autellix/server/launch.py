"""`autellix serve`: its flags (ServeConfig's, with EngineConfig's nested) and the server."""

from __future__ import annotations

import argparse

from autellix.flags import ENGINE_SECTIONS, add_flags, engine_choices, from_args
from autellix.server.frontend import ServeConfig

LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]

# Flag metadata for ServeConfig's fields, which carry none yet (its field metadata wins
# once it has some). Keyed by field name; the flag names are fixed here so that renaming
# a field does not rename its flag.
SERVE_FLAGS = {
    "host": {"help": "address to listen on"},
    "port": {"help": "port"},
    "replicas": {"help": "engine replicas, each a process with its own model copy"},
    "balancer": {"help": "how calls are spread over replicas"},
    "long_prompt_tokens": {
        "help": "locality: prompts longer than this go to the program's pinned replica"
    },
    "served_model_name": {"help": "the model name clients send (default: the folder's name)"},
    "program_ttl": {"help": "seconds an idle program is kept in the process table"},
    "max_queued_per_replica": {
        "flag": "--max-waiting",
        "help": "calls in flight per replica beyond --max-running before the server answers 429",
    },
    "processes": {"flag": None},  # replicas in child processes when there is more than one
    "ray": {
        "metavar": "auto|ADDRESS",
        "help": "place the replicas as Ray actors (auto: join or start a local cluster)",
    },
}


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    from autellix.balancing import BALANCERS

    add_flags(
        parser,
        ServeConfig,
        sections=ENGINE_SECTIONS,
        choices={**engine_choices(), "balancer": sorted(BALANCERS)},
        extra=SERVE_FLAGS,
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="the server's log level (default: %(default)s)",
    )


def serve(args: argparse.Namespace) -> int:
    """Start the server with the parsed flags; returns when it stops."""
    import uvicorn

    from autellix.engine.model import load_config
    from autellix.server.app import create_app
    from autellix.server.frontend import Frontend

    if args.model is not None:
        load_config(args.model)  # a bad folder is a one-line error, before anything starts
    config = from_args(ServeConfig, args, extra=SERVE_FLAGS)
    app = create_app(Frontend(config))
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level)
    return 0
