"""The engine with a simulated executor: same scheduler and block manager, virtual time."""

import pytest

from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import CallError, LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot


def step_time(shape: StepShape) -> float:
    return 0.010 + 0.001 * shape.new_tokens


def make(policy: str = "plas", **kw) -> LLMEngine:
    config = EngineConfig(**{"policy": policy, "block_size": 16, "max_running": 2, **kw})
    executor = SimulatedExecutor(
        step_time,
        block_size=16,
        num_blocks=64,
        num_swap_blocks=64,
        swap_time_per_block=1e-4,
        token_id=7,
    )
    return LLMEngine(config, executor, eos_token_ids=(2,), max_model_len=4096)


def test_virtual_time_and_service() -> None:
    engine = make()
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    a = engine.add_call(list(range(3, 40)), params)
    b = engine.add_call(list(range(3, 20)), params)
    steps = 0
    outputs = {}
    while engine.has_unfinished():
        outputs |= {out.call_id: out for out in engine.step() if out.finished}
        steps += 1
    assert a.output_ids == [7] * 5 and b.output_ids == [7] * 5
    # what the process table folds into the program: neither call ever waited
    assert outputs[a.call_id].waiting == outputs[b.call_id].waiting == 0.0
    # first step: both prefills (37 + 17 tokens), then four decode steps of 2 tokens
    assert steps == 5
    assert engine.executor.clock() == pytest.approx(0.010 + 0.054 + 4 * 0.012)
    assert a.service == pytest.approx(engine.executor.clock()) and a.waiting == 0
    engine.check_idle()


def test_share_accounting_charges_each_call_its_tokens() -> None:
    engine = make(service_accounting="share")
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    a = engine.add_call(list(range(3, 40)), params)
    b = engine.add_call(list(range(3, 20)), params)
    while engine.has_unfinished():
        engine.step()
    # a prefill step of 37 + 17 tokens, then four decode steps of one token each
    prefill, decode = 0.010 + 0.054, 0.012
    assert a.service == pytest.approx(prefill * 37 / 54 + 4 * decode / 2)
    assert b.service == pytest.approx(prefill * 17 / 54 + 4 * decode / 2)
    assert a.service + b.service == pytest.approx(engine.executor.clock())


def test_program_priority_orders_calls() -> None:
    engine = make(max_running=1)
    params = SamplingParams(max_tokens=3, ignore_eos=True)
    heavy = engine.add_call([5] * 8, params, program=ProgramSnapshot(service=50.0))
    light = engine.add_call([6] * 8, params, program=ProgramSnapshot(service=0.0))
    finished = []
    while engine.has_unfinished():
        finished += [o.call_id for o in engine.step() if o.finished]
    assert finished == [light.call_id, heavy.call_id]
    engine.check_idle()


def test_no_tokenizer_means_token_ids_only() -> None:
    with pytest.raises(CallError, match="no tokenizer"):
        make().add_call("hello", SamplingParams())
