"""BFCL v4 function-calling records from the ``bfcl-eval`` wheel (its data files only).

Kept: the single-turn categories whose records carry their own function docs and a
ground truth (simple, multiple, parallel, their live versions). The multi-turn, memory
and web-search records name API classes instead, with docs of thousands of tokens.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

PACKAGE = "bfcl_eval"
INSTALL_HINT = "pip install --no-deps bfcl-eval"
CATEGORIES = (
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)


@dataclass
class Record:
    record_id: str
    system: str  # the record's own system message ("" if none)
    question: str
    functions: list[dict[str, Any]]
    docs: str  # the functions as JSON
    calls: list[str]  # the ground-truth calls in Python syntax


def _first(value: Any) -> Any:
    """BFCL lists the acceptable values of each argument; take the first, recursively."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, dict):
        return {k: _first(v) for k, v in value.items()}
    return value


def python_call(name: str, arguments: dict[str, Any]) -> str:
    values = {k: _first(v) for k, v in arguments.items()}
    # "" is BFCL's mark for an optional argument that may be left out
    args = ", ".join(f"{k}={v!r}" for k, v in values.items() if v != "")
    return f"{name}({args})"


def _lines(category: str, answers: bool) -> list[dict[str, Any]]:
    folder = resources.files(PACKAGE).joinpath("data")
    if answers:
        folder = folder.joinpath("possible_answer")
    text = folder.joinpath(f"BFCL_v4_{category}.json").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@functools.cache
def records() -> list[Record]:
    try:
        resources.files(PACKAGE)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"BFCL data not installed; run `{INSTALL_HINT}`") from e
    out = []
    for category in CATEGORIES:
        truth = {a["id"]: a["ground_truth"] for a in _lines(category, answers=True)}
        for r in _lines(category, answers=False):
            turn = r["question"][0]
            calls = [python_call(*next(iter(c.items()))) for c in truth[r["id"]]]
            out.append(
                Record(
                    record_id=r["id"],
                    system="\n".join(m["content"] for m in turn if m["role"] == "system"),
                    question="\n".join(m["content"] for m in turn if m["role"] != "system"),
                    functions=r["function"],
                    docs=json.dumps(r["function"]),
                    calls=calls,
                )
            )
    return out
