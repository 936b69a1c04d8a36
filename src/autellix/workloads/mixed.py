"""Mixed: an equal share of chatbot, react and lats programs, in a random order."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from autellix.workloads import chatbot, lats, react
from autellix.workloads.sampling import poisson_arrivals
from autellix.workloads.spec import ProgramSpec, check_params

BUILDERS: dict[str, Callable[..., list[ProgramSpec]]] = {
    "chatbot": chatbot.build,
    "react": react.build,
    "lats": lats.build,
}


def build(
    num_programs: int,
    rate: float,
    seed: int,
    scale: float = 1.0,
    **params: dict[str, Any],
) -> list[ProgramSpec]:
    """``params`` are per workload, e.g. ``lats={"branching": 3}``."""
    unknown = set(params) - set(BUILDERS)
    if unknown:
        raise ValueError(f"mixed takes parameters per workload {sorted(BUILDERS)}: {unknown}")
    programs: list[ProgramSpec] = []
    for k, (name, builder) in enumerate(BUILDERS.items()):
        share = num_programs // 3 + (k < num_programs % 3)
        own = params.get(name, {})
        if not isinstance(own, dict):
            raise ValueError(f"mixed takes {name}.KEY=VALUE, not {name}={own!r}")
        try:
            check_params(builder, own)
            programs += builder(share, float("inf"), seed, scale, **own)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    random.Random(f"mixed-{seed}").shuffle(programs)
    for program, arrival in zip(programs, poisson_arrivals(num_programs, rate, seed), strict=True):
        program.arrival = arrival
    return programs
