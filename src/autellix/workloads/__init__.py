"""Agentic workloads as program specs: chatbot (ShareGPT), react (BFCL), lats (HumanEval),
and mixed (an equal share of the three). See spec.py for what a spec holds."""

from collections.abc import Callable

from autellix.workloads import chatbot, lats, mixed, react
from autellix.workloads.spec import CallSpec, ProgramSpec, Stage, load, resolve, save
from autellix.workloads.stats import PAPER, format_stats, stats

Builder = Callable[..., list[ProgramSpec]]

# Each: build(num_programs, rate, seed, scale=1.0, **params) -> list[ProgramSpec]
WORKLOADS: dict[str, Builder] = {
    "chatbot": chatbot.build,
    "react": react.build,
    "lats": lats.build,
    "mixed": mixed.build,
}


def build_workload(
    name: str, num_programs: int, rate: float, seed: int = 0, scale: float = 1.0, **params
) -> list[ProgramSpec]:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    return WORKLOADS[name](num_programs, rate, seed, scale, **params)


__all__ = [
    "PAPER",
    "WORKLOADS",
    "CallSpec",
    "ProgramSpec",
    "Stage",
    "build_workload",
    "format_stats",
    "load",
    "resolve",
    "save",
    "stats",
]
