"""The messages between the frontend and an engine replica in another process.

One frozen dataclass per kind of message (SGLang's io_struct is the model); each end
dispatches on the type. A child-process replica sends them over its pipe; a Ray actor
takes an `AddCall` as its generate's argument. Fields are plain values and the engine's
own small dataclasses, so a message pickles about as cheaply as a tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autellix.engine.llm_engine import CallOutput, EngineInfo
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot

# --- frontend -> replica ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddCall:
    """Start a call: its prompt, its sampling, and its program's snapshot."""

    token_ids: list[int]
    params: SamplingParams
    call_id: str
    program_id: str
    program: ProgramSnapshot


@dataclass(frozen=True, slots=True)
class AbortCall:
    """Stop a call (its client left); the replica answers with its last output."""

    call_id: str


@dataclass(frozen=True, slots=True)
class EndProgram:
    """A program ended: its cached KV goes first when memory is needed."""

    program_id: str


@dataclass(frozen=True, slots=True)
class GetStats:
    """Ask for the engine's stats; answered by `Stats`."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the replica's process."""


# --- replica -> frontend ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The engine is loaded; its limits."""

    info: EngineInfo


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The engine could not be made; why."""

    error: str


@dataclass(frozen=True, slots=True)
class CallOutputs:
    """One step's outputs (or an aborted call's last one), for any number of calls."""

    outputs: list[CallOutput]


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The engine refused a call; the exception is raised to the call's stream."""

    call_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class Stats:
    stats: dict[str, Any]


ToReplica = AddCall | AbortCall | EndProgram | GetStats | Stop
FromReplica = Ready | StartFailed | CallOutputs | CallFailed | Stats
