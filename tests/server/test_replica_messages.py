"""The typed messages of a child-process replica: each kind over a real pipe, what the
child does with each one, and where the frontend's side puts each answer."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from pathlib import Path

import pytest

from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, CallOutput, EngineInfo, LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot
from autellix.server.replica import ProcessReplica, handle
from autellix.server.replica_io import (
    AbortCall,
    AddCall,
    CallFailed,
    CallOutputs,
    GetStats,
    Ready,
    StartFailed,
    Stats,
    Stop,
)

SNAPSHOT = ProgramSnapshot(1.5, 2.0, 0.25, ())


def add(call_id: str = "c1") -> AddCall:
    return AddCall([1, 2, 3], SamplingParams(max_tokens=2, ignore_eos=True), call_id, "p", SNAPSHOT)


def output(call_id: str, finished: bool = False) -> CallOutput:
    return CallOutput(call_id, "p", [5], " w5", finished=finished)


def test_every_message_crosses_a_pipe_unchanged() -> None:
    messages = [
        add(),
        AbortCall("c1"),
        GetStats(),
        Stop(),
        Ready(EngineInfo(256, 64, 4)),
        StartFailed("OSError: no model"),
        CallOutputs([output("c1"), output("c2", finished=True)]),
        Stats({"running": 1, "queue_lengths": [1, 0]}),
    ]
    parent, child = mp.Pipe()
    with parent, child:
        for msg in messages:
            child.send(msg)
            assert parent.recv() == msg
        child.send(CallFailed("c1", CallError("too long")))
        failed = parent.recv()
        assert isinstance(failed, CallFailed) and failed.call_id == "c1"
        assert isinstance(failed.error, CallError) and str(failed.error) == "too long"


def test_the_child_applies_each_message_to_its_engine(tiny_llama: Path) -> None:
    config = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64, max_running=4)
    engine = LLMEngine.from_config(config)
    sent: list = []
    assert handle(engine, add(), sent.append) and sent == []
    call = engine.calls["c1"]
    assert (call.program_id, call.program, call.token_ids) == ("p", SNAPSHOT, [1, 2, 3])

    assert handle(engine, add(), sent.append)  # the same call again: refused, to its stream
    [failed] = sent
    assert failed.call_id == "c1" and isinstance(failed.error, CallError)

    sent.clear()
    assert handle(engine, GetStats(), sent.append)
    assert isinstance(sent[0], Stats) and sent[0].stats["waiting"] == 1

    sent.clear()
    assert handle(engine, AbortCall("c1"), sent.append)
    [outs] = sent
    assert [(o.call_id, o.finish_reason) for o in outs.outputs] == [("c1", "abort")]
    assert handle(engine, AbortCall("c1"), sent.append) and len(sent) == 1  # gone: no answer

    assert handle(engine, Stop(), sent.append) is False
    with pytest.raises(TypeError):
        handle(engine, ("stop",), sent.append)  # type: ignore[arg-type]
    engine.check_idle()


def test_the_frontend_side_routes_each_answer() -> None:
    async def main() -> None:
        replica = ProcessReplica(0, EngineConfig())
        mine, other = asyncio.Queue(), asyncio.Queue()
        replica._streams = {"c1": mine, "c2": other}
        stats = asyncio.get_running_loop().create_future()
        replica._stats.append(stats)

        replica._dispatch(CallOutputs([output("c1"), output("gone"), output("c2", True)]))
        assert mine.get_nowait().call_id == "c1" and mine.empty()
        assert other.get_nowait().finished and other.empty()
        error = CallError("too long")
        replica._dispatch(CallFailed("c1", error))
        assert mine.get_nowait() is error
        replica._dispatch(Stats({"running": 0}))
        assert stats.result() == {"running": 0} and not replica._stats
        replica._dispatch(Stats({"running": 0}))  # nobody asked: dropped
        with pytest.raises(TypeError):
            replica._dispatch(("outs", []))  # type: ignore[arg-type]

    asyncio.run(main())
