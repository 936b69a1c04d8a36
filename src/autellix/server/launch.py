"""`autellix serve`: its flags (ServeConfig's, with EngineConfig's nested, each from its
field's metadata) and the server."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import urllib.parse
from collections.abc import Set as AbstractSet

from autellix.engine.config import EngineConfig
from autellix.flags import (
    ENGINE_SECTIONS,
    add_flags,
    changed_or_given,
    engine_choices,
    from_args,
    given_flags,
)
from autellix.server.frontend import ServeConfig

LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    from autellix.balancing import BALANCERS

    add_flags(
        parser,
        ServeConfig,
        sections=ENGINE_SECTIONS,
        choices={**engine_choices(), "balancer": sorted(BALANCERS)},
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="the server's log level (default: %(default)s)",
    )


def serve(args: argparse.Namespace) -> int:
    """Start the server with the parsed flags; returns when it stops."""
    from autellix.engine.llm_engine import check_engine
    from autellix.engine.model import load_config
    from autellix.server import drain
    from autellix.server.app import create_app
    from autellix.server.frontend import Frontend
    from autellix.server.tenants import KeyFileError

    config = from_args(ServeConfig, args)
    # bad settings are a one-line error (ValueError) before anything starts, not a
    # traceback from the engine loading in the server
    if not config.backend:
        check_engine(config.engine)
    else:
        if args.model is not None:
            load_config(args.model)
        given = given_flags(add_serve_flags, args.argv[1:])  # argv[0]: "serve"
        if ignored := backends_ignore(config.engine, given):
            raise ValueError(
                f"{', '.join(ignored)} set the engine, which --backend does not run (the"
                " backends' own settings apply)"
            )
        for url in config.backend:
            check_url(url)
    if config.program_sizes is not None:
        check_writable(config.program_sizes, "--program-sizes")
    try:
        frontend = Frontend(config)
    except (OSError, KeyFileError) as exc:
        raise ValueError(f"--api-keys: {exc}") from None
    if frontend.keys.open and not loopback(config.host):
        print(
            f"warning: serving on {config.host} without an API key: anyone who can reach "
            "it can use it (--api-key or --api-keys)",
            file=sys.stderr,
        )
    drain.run(create_app(frontend), host=config.host, port=config.port, log_level=args.log_level)
    return 0


# What the frontend over --backend servers takes from the engine's settings: the model (its
# tokenizer), the order (policy, queues, anti-starvation) and the block size (routing).
BACKEND_USES = {"model", "device", "policy", "scheduling", "block_size", "max_waiting"}


def backends_ignore(engine: EngineConfig, given: AbstractSet[str] = frozenset()) -> list[str]:
    """The flags of the engine settings that only an engine of our own would use, changed
    from their defaults or given on the command line (`given`), even at the default."""
    ignored = changed_or_given(engine, EngineConfig(), given, skip=BACKEND_USES)
    scheduling = engine.scheduling  # the order is the frontend's; these act inside an engine
    return ignored + [
        flag
        for flag, on in (("--preempt", scheduling.preempt), ("--batch-cut", scheduling.batch_cut))
        if on
    ]


def check_url(url: str) -> None:
    """A --backend URL: http(s)://HOST[:PORT][/v1]."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 (a port out of range or not a number raises)
    except ValueError as exc:
        raise ValueError(f"--backend {url}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--backend {url}: not an http:// or https:// URL")


def check_writable(path: str, flag: str) -> None:
    """A file the server writes at shutdown: its folder must exist (and it, if it exists,
    be a file), so that the mistake shows at start and not after hours of serving."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: a folder, not a file")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only localhost is known to be local
        return False
