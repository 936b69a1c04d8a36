"""Agentic workloads as program specs: chatbot (ShareGPT), react (BFCL), lats (HumanEval),
mixed (an equal share of the three), and agents (synthetic chats, fan-outs and tree
searches; light- or heavy-tailed). See spec.py for what a spec holds."""

import ast
from collections.abc import Callable, Iterable

from autellix.workloads import agents, chatbot, lats, mixed, react
from autellix.workloads.spec import (
    CallSpec,
    ProgramSpec,
    Stage,
    check_params,
    load,
    resolve,
    save,
)
from autellix.workloads.stats import PAPER, format_stats, stats

Builder = Callable[..., list[ProgramSpec]]

# Each: build(num_programs, rate, seed, scale=1.0, **params) -> list[ProgramSpec]
WORKLOADS: dict[str, Builder] = {
    "chatbot": chatbot.build,
    "react": react.build,
    "lats": lats.build,
    "mixed": mixed.build,
    "agents": agents.build,
}


def build_workload(
    name: str, num_programs: int, rate: float, seed: int = 0, scale: float = 1.0, **params
) -> list[ProgramSpec]:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    try:
        check_params(WORKLOADS[name], params)
        return WORKLOADS[name](num_programs, rate, seed, scale, **params)
    except ValueError as exc:
        raise ValueError(f"workload {name}: {exc}") from None
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise
        raise ValueError(f"workload {name}: {exc}") from None


def workload_params(items: Iterable[str]) -> dict:
    """``KEY=VALUE`` strings as builder parameters; ``lats.iterations=2`` is
    ``{"lats": {"iterations": 2}}`` (mixed takes its parameters per workload)."""
    params: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a workload parameter is KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node = params
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return params


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
    "workload_params",
]
