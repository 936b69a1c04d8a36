"""The engine end to end on a tiny model: exact tokens against transformers under
preemption (swap and recompute), prefix-cache hits, chunked prefill, multi-step
scheduling and calls joining and leaving, with no KV block leaked after any test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, LLMEngine, QueueFull
from autellix.engine.sampling_params import SamplingParams
from autellix.programs import ProgramSnapshot
from autellix.scheduling import SchedulingConfig
from autellix.scheduling.retention import RetentionConfig

MAX_NEW = 10
GREEDY = SamplingParams(temperature=0, max_tokens=MAX_NEW, ignore_eos=True)
SHARED = list(range(10, 34))  # a 24-token prefix several prompts share


def make_prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    rand = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (7, 19, 1, 33, 12, 4)]
    return [*rand, [*SHARED, 40, 41], [*SHARED, 50], SHARED[:16]]


PROMPTS = make_prompts()


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> dict[tuple[int, ...], list[int]]:
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    out = {}
    with torch.inference_mode():
        for p in PROMPTS:
            ids = torch.tensor([p])
            gen = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW,
                do_sample=False,
                eos_token_id=None,
            )
            out[tuple(p)] = gen[0, len(p) :].tolist()
    return out


@pytest.fixture
def make_engine(tiny_llama: Path) -> Iterator[Callable[..., LLMEngine]]:
    """Engines on the tiny model; each is checked for leaked KV and swap blocks after the
    test, whatever happened in it."""
    made: list[LLMEngine] = []

    def make(**overrides) -> LLMEngine:
        settings = dict(block_size=4, num_kv_blocks=64, max_running=4, max_prefill_tokens=32)
        config = EngineConfig(model=str(tiny_llama), **{**settings, **overrides})
        engine = LLMEngine.from_config(config)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.check_idle()


def run(engine: LLMEngine, prompts: list[list[int]], params=GREEDY, join_every: int = 0):
    """Generate; with join_every > 0 the calls arrive one every that many steps."""
    pending = list(prompts)
    seqs = []
    steps = 0
    while pending or engine.has_unfinished():
        if pending and (join_every == 0 or steps % join_every == 0):
            for p in pending if join_every == 0 else pending[:1]:
                seqs.append(engine.add_call(p, params))
            pending = [] if join_every == 0 else pending[1:]
        engine.step()
        steps += 1
    return {tuple(s.token_ids[: s.num_prompt_tokens]): s.output_ids for s in seqs}


def test_greedy_tokens_match_transformers(make_engine, reference) -> None:
    assert run(make_engine(), PROMPTS) == reference


# Tiny quanta demote a call every step, so PLAS and MLFQ keep preempting running calls
# for waiting ones: a preemption storm. A pool of 14 blocks (the longest call needs 11)
# adds memory pressure, which is what preempts under FCFS.
STORM = SchedulingConfig(boundaries=(1e-6, 2e-6, 4e-6, 8e-6), beta=1e9, preempt=True)


@pytest.mark.parametrize("preemption", ["swap", "recompute"])
@pytest.mark.parametrize("policy", ["plas", "mlfq", "fcfs"])
def test_same_tokens_under_preemption(make_engine, reference, preemption, policy) -> None:
    engine = make_engine(
        policy=policy, scheduling=STORM, preemption=preemption, num_kv_blocks=14, max_running=3
    )
    assert run(engine, PROMPTS, join_every=2) == reference
    assert engine.scheduler.num_preemptions > 0 and engine.scheduler.num_evictions > 0
    if preemption == "swap":
        assert engine.scheduler.swapped_out_blocks > 0
        assert engine.scheduler.swapped_in_blocks == engine.scheduler.swapped_out_blocks


def test_swap_pool_full_falls_back_to_recompute(make_engine, reference) -> None:
    engine = make_engine(
        policy="mlfq", scheduling=STORM, swap_blocks=2, max_running=2, num_kv_blocks=14
    )
    assert run(engine, PROMPTS) == reference
    assert engine.scheduler.num_evictions > 0  # with 2 swap blocks, most fall back to recompute


def test_preempted_calls_keep_their_blocks_until_memory_is_needed(make_engine, reference) -> None:
    # a big pool: MLFQ rotates the calls every step, but no block ever leaves the device
    engine = make_engine(policy="mlfq", scheduling=STORM, max_running=2, num_kv_blocks=256)
    assert run(engine, PROMPTS) == reference
    assert engine.scheduler.num_preemptions > 0
    assert engine.scheduler.num_evictions == 0 and engine.scheduler.swapped_out_blocks == 0
    # the paper's semantics: out of the batch, out of device memory
    engine = make_engine(
        policy="mlfq", scheduling=STORM, max_running=2, num_kv_blocks=256, keep_preempted=False
    )
    assert run(engine, PROMPTS) == reference
    assert engine.scheduler.num_evictions == engine.scheduler.num_preemptions > 0


def test_prefix_cache_hits_give_the_same_tokens(make_engine, reference) -> None:
    engine = make_engine()
    assert run(engine, PROMPTS) == reference
    hits_before = engine.blocks.hit_tokens
    again = run(engine, PROMPTS)  # every full prompt block is cached now
    assert again == reference
    assert engine.blocks.hit_tokens > hits_before
    without = make_engine(prefix_caching=False)
    assert run(without, PROMPTS) == reference and without.blocks.hit_tokens == 0


def test_shared_prefix_is_reused_across_calls(make_engine) -> None:
    engine = make_engine(max_running=1)
    first = engine.add_call([*SHARED, 40, 41], GREEDY)
    while engine.has_unfinished():
        engine.step()
    second = engine.add_call([*SHARED, 50], GREEDY)
    engine.step()
    assert first.num_cached_prompt_tokens == 0
    assert second.num_cached_prompt_tokens == 24
    while engine.has_unfinished():
        engine.step()


@pytest.mark.parametrize("chunked, budget", [(True, 5), (True, 64), (False, 8)])
def test_chunked_prefill_on_and_off(make_engine, reference, chunked, budget) -> None:
    engine = make_engine(chunked_prefill=chunked, max_prefill_tokens=budget)
    assert run(engine, PROMPTS, join_every=1) == reference


@pytest.mark.parametrize("every", [2, 4])
def test_multi_step_scheduling(make_engine, reference, every) -> None:
    assert run(make_engine(schedule_every=every), PROMPTS, join_every=3) == reference


def test_abort_mid_prefill_mid_decode_and_swapped(make_engine) -> None:
    engine = make_engine(max_prefill_tokens=4, max_running=2, policy="mlfq", scheduling=STORM)
    a = engine.add_call(PROMPTS[3], GREEDY)  # 33 tokens: prefill takes 9 steps
    b = engine.add_call(PROMPTS[0], GREEDY)
    c = engine.add_call(PROMPTS[1], GREEDY)
    engine.step()
    assert 0 < a.num_computed < a.num_prompt_tokens
    out = engine.abort(a.call_id)
    assert out.finished and out.finish_reason == "abort"
    for _ in range(6):
        engine.step()
    assert b.output_ids
    engine.abort(b.call_id)
    engine.abort(c.call_id)
    assert engine.abort("no-such-call") is None
    assert not engine.has_unfinished()


def test_stop_conditions(make_engine, reference) -> None:
    engine = make_engine()
    ref = reference[tuple(PROMPTS[1])]
    stop_token = ref[4]
    [seq] = engine.generate(
        [PROMPTS[1]],
        SamplingParams(temperature=0, max_tokens=MAX_NEW, stop_token_ids=(stop_token,)),
    )
    assert seq.output_ids == ref[: ref.index(stop_token) + 1] and seq.finish_reason == "stop"
    [seq] = engine.generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=3))
    assert seq.output_ids == ref[:3] and seq.finish_reason == "length"
    # stop strings cut the text
    word = engine.tokenizer.decode([ref[2]])
    [seq] = engine.generate(
        [PROMPTS[1]], SamplingParams(temperature=0, max_tokens=MAX_NEW, stop=(word,))
    )
    assert seq.finish_reason == "stop" and word not in seq.text


def test_eos_and_min_tokens(make_engine, reference) -> None:
    engine = make_engine()
    eos = engine.scheduler.eos_token_ids[0]
    ref = reference[tuple(PROMPTS[0])]
    # make the model's 3rd greedy token the end of sequence
    engine.scheduler.eos_token_ids = (ref[2],)
    [seq] = engine.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=MAX_NEW))
    assert seq.output_ids == ref[:3] and seq.finish_reason == "stop"
    [seq] = engine.generate(
        [PROMPTS[0]], SamplingParams(temperature=0, max_tokens=MAX_NEW, ignore_eos=True)
    )
    assert len(seq.output_ids) == MAX_NEW
    engine.executor.eos_token_ids = engine.scheduler.eos_token_ids
    [seq] = engine.generate(
        [PROMPTS[0]], SamplingParams(temperature=0, max_tokens=MAX_NEW, min_tokens=5)
    )
    assert len(seq.output_ids) >= 5 and ref[2] not in seq.output_ids[:5]
    assert eos is not None


def test_seeded_sampling_is_reproducible(make_engine) -> None:
    engine = make_engine()
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=8, ignore_eos=True)
    a = run(engine, [PROMPTS[0]], params)
    b = run(engine, PROMPTS[:3], params)
    assert a[tuple(PROMPTS[0])] == b[tuple(PROMPTS[0])]


def test_bad_requests_are_clear_errors(make_engine) -> None:
    engine = make_engine(num_kv_blocks=8)
    with pytest.raises(CallError, match="needs 9 KV blocks; the pool has 8"):
        engine.add_call(list(range(3, 30)), SamplingParams(max_tokens=8))
    with pytest.raises(CallError, match="exceeds the model's context of 256"):
        engine.add_call([5] * 250, SamplingParams(max_tokens=10))
    with pytest.raises(CallError, match="empty"):
        engine.add_call([], GREEDY)
    engine.add_call([5, 6], GREEDY, call_id="x")
    with pytest.raises(CallError, match="already in the engine"):
        engine.add_call([5, 6], GREEDY, call_id="x")
    engine.abort("x")


def test_waiting_queue_bound(make_engine) -> None:
    engine = make_engine(max_waiting=2)
    engine.add_call([5, 6], GREEDY)
    engine.add_call([5, 7], GREEDY)
    with pytest.raises(QueueFull):
        engine.add_call([5, 8], GREEDY)
    while engine.has_unfinished():
        engine.step()


def test_service_and_waiting_are_reported(make_engine) -> None:
    engine = make_engine(max_running=1)
    outs = []
    engine.add_call(PROMPTS[0], GREEDY)
    engine.add_call(PROMPTS[1], GREEDY)
    while engine.has_unfinished():
        outs += [o for o in engine.step() if o.finished]
    first, second = outs
    assert first.service > 0 and second.service > 0
    assert second.waiting >= first.service * 0.5  # it waited while the first ran


def test_batched_swap_path_gives_the_same_tokens(make_engine, reference) -> None:
    """The accelerator's swap path (one gather and scatter a round), run on the CPU."""
    engine = make_engine(policy="plas", scheduling=STORM, num_kv_blocks=14, max_running=3)
    engine.executor.batched_swap = True
    assert run(engine, PROMPTS, join_every=2) == reference
    assert engine.scheduler.swapped_out_blocks > 0


@pytest.mark.parametrize("batched", [False, True])
def test_a_pin_copied_to_host_comes_back_with_the_same_tokens(
    make_engine, tiny_llama, batched
) -> None:
    """The agent's pin must give way to a fresh call ranked above it: its blocks go to
    host memory, the fresh call takes the device blocks of the prefix's tail (tails go
    first), and the agent's next call finds the head on the device, copies the tail back
    instead of recomputing it, and generates exactly what transformers does for its whole
    prompt."""
    retention = RetentionConfig(enabled=True, ttl_margin=60.0)  # no lapse on a slow machine
    engine = make_engine(policy="plas", num_kv_blocks=14, swap_blocks=16, retention=retention)
    engine.executor.batched_swap = batched
    back_later = ProgramSnapshot(expect_return=1e-4)  # soon: holding is worth it
    first = engine.add_call(PROMPTS[6], GREEDY, program_id="agent", program=back_later)
    while engine.has_unfinished():
        engine.step()
    assert engine.blocks.num_pinned == 8
    fresh = engine.add_call(PROMPTS[3][:20], GREEDY, program_id="fresh")
    while engine.has_unfinished():
        engine.step()
    assert engine.stats()["pins_evicted"] == 1 and len(engine.blocks.host) == 8
    prompt = [*first.token_ids, 5, 6, 7]
    second = engine.add_call(prompt, GREEDY, program_id="agent")
    while engine.has_unfinished():
        engine.step()
    assert second.num_cached_prompt_tokens == 32 and fresh.output_ids
    back = engine.blocks.pin_stats.from_host
    assert 0 < back < 8 and not engine.blocks.host
    stats, block_bytes = engine.stats(), engine.executor.bytes_per_block
    assert stats["retention_swap_out_bytes"] == 8 * block_bytes
    assert stats["retention_swap_in_bytes"] == back * block_bytes
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        want = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False
        )
    assert second.output_ids == want[0, len(prompt) :].tolist()
