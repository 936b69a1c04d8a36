"""Random engine settings and arrival patterns: the tokens never change, the block
accounting holds after every step, and nothing leaks."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from autellix.engine.call import Status
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.scheduling import SchedulingConfig

MAX_NEW = 6
PARAMS = SamplingParams(temperature=0, max_tokens=MAX_NEW, ignore_eos=True)
SHARED = list(range(20, 40))
g = torch.Generator().manual_seed(11)
PROMPTS = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (3, 9, 21, 14, 1)]
PROMPTS += [[*SHARED, 7], [*SHARED, 8, 9], SHARED[:12]]


@pytest.fixture(scope="module")
def loaded(tiny_llama: Path):
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    reference = {}
    with torch.inference_mode():
        for p in PROMPTS:
            ids = torch.tensor([p])
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW,
                do_sample=False,
                eos_token_id=None,
            )
            reference[tuple(p)] = out[0, len(p) :].tolist()
    return tiny_llama, reference


def check_blocks(engine: LLMEngine) -> None:
    blocks = engine.blocks
    refs = Counter(b for s in engine.calls.values() for b in s.block_table)
    for block in blocks.blocks:
        assert block.ref_count == refs.get(block.block_id, 0)
    assert blocks.num_free == sum(1 for b in blocks.blocks if b.ref_count == 0)
    swap_held = sum(len(s.swap_table) for s in engine.calls.values())
    assert blocks.num_free_swap + swap_held == blocks.num_swap_blocks
    for s in engine.calls.values():
        if s.status is Status.RUNNING:
            assert len(s.block_table) == blocks.blocks_for(s.num_computed)
        elif s.status is Status.SWAPPED:
            assert s.swap_table and not s.block_table
        else:
            assert not s.block_table and not s.swap_table and s.num_computed == 0
    assert set(engine.calls) == set(engine.policy.calls)  # every call in exactly one place


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    policy=st.sampled_from(["fcfs", "mlfq", "plas", "atlas", "gittins"]),
    preemption=st.sampled_from(["swap", "recompute"]),
    num_blocks=st.integers(8, 40),
    max_running=st.integers(1, 5),
    budget=st.integers(1, 40),
    chunked=st.booleans(),
    every=st.integers(1, 3),
    tiny_quanta=st.booleans(),
    prefix_caching=st.booleans(),
    keep_preempted=st.booleans(),
    preempt=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_random_engines_give_reference_tokens(
    loaded,
    policy,
    preemption,
    num_blocks,
    max_running,
    budget,
    chunked,
    every,
    tiny_quanta,
    prefix_caching,
    keep_preempted,
    preempt,
    seed,
) -> None:
    folder, reference = loaded
    boundaries = (1e-6, 1e-5, 1e-4) if tiny_quanta else SchedulingConfig().boundaries
    scheduling = SchedulingConfig(boundaries=boundaries, preempt=preempt)
    engine = LLMEngine.from_config(
        EngineConfig(
            model=str(folder),
            policy=policy,
            preemption=preemption,
            block_size=4,
            num_kv_blocks=num_blocks,
            max_running=max_running,
            max_prefill_tokens=budget,
            chunked_prefill=chunked,
            schedule_every=every,
            scheduling=scheduling,
            prefix_caching=prefix_caching,
            keep_preempted=keep_preempted,
        )
    )
    rng = random.Random(seed)
    pending = [p for p in PROMPTS if engine.blocks.blocks_for(len(p) + MAX_NEW) <= num_blocks]
    rng.shuffle(pending)
    seqs, aborted = [], set()
    for _ in range(2000):
        if pending and rng.random() < 0.4:
            seqs.append(engine.add_call(pending.pop(), PARAMS))
        if engine.calls and rng.random() < 0.03:
            victim = rng.choice(sorted(engine.calls))
            engine.abort(victim)
            aborted.add(victim)
        engine.step()
        check_blocks(engine)
        if not pending and not engine.has_unfinished():
            break
    assert not pending and not engine.has_unfinished(), "the engine stalled"
    for s in seqs:
        if s.call_id not in aborted:
            assert s.output_ids == reference[tuple(s.token_ids[: s.num_prompt_tokens])]
    engine.check_idle()
