"""Program specs: what a workload asks of a serving engine, independent of who runs it.

A program is a list of stages; a stage is one call or several parallel calls, joined
before the next stage starts. A call's prompt may contain the real output of an earlier
call of the same program: the message ``{"role": "assistant", "ref": [stage, call]}``
stands for it, and the runner substitutes it (:func:`resolve`) once that call is done.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Message = dict[str, Any]


@dataclass
class CallSpec:
    messages: list[Message]  # OpenAI chat messages; {"role": "assistant", "ref": [s, c]} refs
    max_tokens: int  # target output length (sent with ignore_eos)
    prompt_tokens: int  # chat-templated prompt length, refs counted at their target length
    tool_delay: float = 0.0  # seconds after this call before the program's next stage


@dataclass
class Stage:
    calls: list[CallSpec]  # parallel; the next stage starts when all are done


@dataclass
class ProgramSpec:
    program_id: str
    workload: str  # chatbot | react | lats
    arrival: float  # seconds from the start of the run
    stages: list[Stage]

    @property
    def calls(self) -> list[CallSpec]:
        return [call for stage in self.stages for call in stage.calls]

    @property
    def num_calls(self) -> int:
        return sum(len(stage.calls) for stage in self.stages)

    @property
    def decode_tokens(self) -> int:
        return sum(call.max_tokens for call in self.calls)

    @property
    def prefill_tokens(self) -> int:
        return sum(call.prompt_tokens for call in self.calls)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramSpec:
        stages = [Stage([CallSpec(**call) for call in stage["calls"]]) for stage in data["stages"]]
        return cls(data["program_id"], data["workload"], data["arrival"], stages)


def is_ref(message: Message) -> bool:
    return "ref" in message


def resolve(messages: list[Message], outputs: Sequence[Sequence[str]]) -> list[Message]:
    """``messages`` with every ref replaced by the referenced call's output text
    (``outputs[stage][call]``)."""
    return [
        {"role": m["role"], "content": outputs[m["ref"][0]][m["ref"][1]]} if is_ref(m) else m
        for m in messages
    ]


def save(specs: list[ProgramSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps([spec.to_json() for spec in specs]))


def load(path: str | Path) -> list[ProgramSpec]:
    return [ProgramSpec.from_json(data) for data in json.loads(Path(path).read_text())]


def check_param(name: str, value: Any, kind: Any) -> None:
    """A workload parameter (--workload-arg) of an int or float kind is a number of that
    kind; ValueError names it otherwise."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int and not (number and isinstance(value, int)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if kind is float and not number:
        raise ValueError(f"{name} must be a number, not {value!r}")


def check_least(name: str, value: float, least: float) -> None:
    """A workload parameter at least `least`; ValueError names it otherwise."""
    if not value >= least:
        raise ValueError(f"{name} must be at least {least}, not {value!r}")


def check_params(builder: Any, params: dict[str, Any]) -> None:
    """The parameters a builder's signature types (`check_param`)."""
    hints = typing.get_type_hints(builder)
    for key, value in params.items():
        check_param(key, value, hints.get(key))
