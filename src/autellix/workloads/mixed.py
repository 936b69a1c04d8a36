"""Mixed: an equal share of chatbot, react and lats programs, in a random order."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from autellix.workloads import chatbot, lats, react
from autellix.workloads.sampling import poisson_arrivals
from autellix.workloads.spec import ProgramSpec

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
        programs += builder(share, float("inf"), seed, scale, **params.get(name, {}))
    random.Random(f"mixed-{seed}").shuffle(programs)
    for program, arrival in zip(programs, poisson_arrivals(num_programs, rate, seed), strict=True):
        program.arrival = arrival
    return programs
