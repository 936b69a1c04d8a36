"""Tiny randomly initialised Hugging Face models, made on the spot (no downloads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from autellix.engine.model import AttentionMetadata, LlamaForCausalLM, allocate_kv_cache

VOCAB = 256
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}w0 {% endif %}"
)
BASE_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    # Larger than the usual 0.02 so that logits are peaked and greedy choices clear.
    "initializer_range": 0.1,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
DEFAULT_THREADS = torch.get_num_threads()
ARCHS = {
    "llama": (LlamaConfig, HFLlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread: with tiny matrices thread hand-offs cost more than they save, and
    on a busy small machine OpenMP's spinning threads made these tests (the real-model one
    too) several times slower. Restored after each module."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(DEFAULT_THREADS)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(VOCAB - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(arch="llama", **config_overrides)`` -> a saved HF model folder (memoised)."""
    made: dict[str, Path] = {}

    def make(arch: str = "llama", **overrides: Any) -> Path:
        key = f"{arch}-{sorted(overrides.items())!r}"
        if key not in made:
            config_cls, model_cls = ARCHS[arch]
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = model_cls(config_cls(**{**BASE_CONFIG, **overrides}))
            model.save_pretrained(folder)
            tiny_tokenizer().save_pretrained(folder)
            made[key] = folder
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama(make_tiny_model: Callable[..., Path]) -> Path:
    return make_tiny_model()


@dataclass
class PagedRun:
    tokens: list[list[int]]  # prompt + generated, per sequence
    generated: list[list[int]]
    logits: list[torch.Tensor]  # [len(tokens) - 1, vocab]: the logits after every token fed


@torch.inference_mode()
def paged_generate(
    model: LlamaForCausalLM,
    prompt_ids: list[list[int]],
    max_new: int,
    *,
    chunk: int | None = None,
    block_size: int = 4,
    kv_dtype: torch.dtype = torch.float32,
) -> PagedRun:
    """A miniature engine: greedy decoding of all prompts in one batch.

    Every step feeds each unfinished sequence its next prompt chunk (``chunk`` tokens, all
    of them when None) or its last generated token, so steps mix prefill chunks and
    decodes. Each sequence gets a scrambled, non-contiguous set of blocks.
    """
    cfg = model.config
    need = [-(-(len(p) + max_new) // block_size) for p in prompt_ids]
    num_blocks = sum(need) + 3
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(1)).tolist()
    tables = [perm[sum(need[:i]) : sum(need[: i + 1])] for i in range(len(need))]
    kv_cache = allocate_kv_cache(
        cfg.num_layers, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim, kv_dtype
    )
    seqs = [list(p) for p in prompt_ids]
    cached = [0] * len(seqs)
    generated: list[list[int]] = [[] for _ in seqs]
    logits: list[list[torch.Tensor]] = [[] for _ in seqs]
    while active := [i for i in range(len(seqs)) if len(generated[i]) < max_new]:
        ids: list[int] = []
        positions: list[int] = []
        query_lens: list[int] = []
        for i in active:
            left = len(seqs[i]) - cached[i]
            q = left if chunk is None else min(chunk, left)
            ids += seqs[i][cached[i] : cached[i] + q]
            positions += range(cached[i], cached[i] + q)
            query_lens.append(q)
        meta = AttentionMetadata.build(
            [tables[i] for i in active], [cached[i] for i in active], query_lens, block_size
        )
        hidden = model(torch.tensor(ids), torch.tensor(positions), kv_cache, meta)
        step_logits = model.compute_logits(hidden).float().split(query_lens)
        for j, i in enumerate(active):
            cached[i] += query_lens[j]
            logits[i].append(step_logits[j])
            if cached[i] == len(seqs[i]):
                token = int(step_logits[j][-1].argmax())
                generated[i].append(token)
                seqs[i].append(token)
    return PagedRun(seqs, generated, [torch.cat(rows) for rows in logits])


@pytest.fixture(scope="session")
def paged() -> Callable[..., PagedRun]:
    """:func:`paged_generate`, as a fixture so that test modules need not import conftest."""
    return paged_generate
