"""Our Llama over the paged cache against transformers, token for token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from autellix.engine.model import LlamaForCausalLM, paged_kernel
from autellix.engine.model.linear import PackedLinear, resolve_kernel
from autellix.engine.model.loader import load_model, stack_projections

PROMPT_LENS = [5, 17, 1, 30, 9]
MAX_NEW = 12
Paged = Callable[..., Any]  # conftest.paged_generate


def prompts(seed: int = 0, vocab: int = 256) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]


def hf_reference(folder: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@torch.inference_mode()
def hf_greedy(hf: torch.nn.Module, prompt: list[int], max_new: int = MAX_NEW) -> list[int]:
    ids = torch.tensor([prompt])
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=None,  # always generate max_new tokens
    )
    return out[0, len(prompt) :].tolist()


@torch.inference_mode()
def hf_logits(hf: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    """Logits after each token but the last (what the paged run computes)."""
    return hf(torch.tensor([tokens])).logits[0, :-1].float()


def with_layer_ops(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """The model with the C++ layer ops, as the engine runs it on a CPU."""
    model.kernels = paged_kernel.load()
    return model


@pytest.fixture(scope="module", params=["auto+cpp", "onednn+cpp", "onednn", "torch"])
def ours(tiny_llama: Path, request: pytest.FixtureRequest) -> LlamaForCausalLM:
    """The model on each linear kernel (auto: the engine's, oneDNN with our kernel for a few
    rows), with the C++ layer ops or torch's: all must give transformers' tokens and logits."""
    linear, _, ops = request.param.partition("+")
    model = load_model(tiny_llama, linear=linear)[0]
    return with_layer_ops(model) if ops else model


@pytest.fixture(scope="module")
def hf(tiny_llama: Path) -> torch.nn.Module:
    return hf_reference(tiny_llama)


@pytest.fixture(scope="module")
def hf_tokens(hf: torch.nn.Module) -> list[list[int]]:
    return [hf_greedy(hf, p) for p in prompts()]


@pytest.mark.parametrize("chunk", [None, 3, 7], ids=["whole-prefill", "chunk3", "chunk7"])
@pytest.mark.parametrize("block_size", [4, 16])
def test_greedy_matches_transformers_generate(
    paged: Paged,
    ours: LlamaForCausalLM,
    hf_tokens: list[list[int]],
    chunk: int | None,
    block_size: int,
) -> None:
    run = paged(ours, prompts(), MAX_NEW, chunk=chunk, block_size=block_size)
    assert run.generated == hf_tokens


def test_logits_match_transformers_fp32(
    paged: Paged, ours: LlamaForCausalLM, hf: torch.nn.Module
) -> None:
    run = paged(ours, prompts(), MAX_NEW, chunk=5)
    for tokens, logits in zip(run.tokens, run.logits, strict=True):
        torch.testing.assert_close(logits, hf_logits(hf, tokens), atol=2e-5, rtol=1e-5)


def test_one_call_at_a_time_matches_transformers(
    paged: Paged, ours: LlamaForCausalLM, hf: torch.nn.Module, hf_tokens: list[list[int]]
) -> None:
    """Decode steps of one row (and prefills of one token), as a lone call runs."""
    for prompt, expected in zip(prompts(), hf_tokens, strict=True):
        run = paged(ours, [prompt], MAX_NEW)
        assert run.generated == [expected]
        torch.testing.assert_close(
            run.logits[0], hf_logits(hf, run.tokens[0]), atol=2e-5, rtol=1e-5
        )


def test_one_token_steps_match_whole_prefill(paged: Paged, ours: LlamaForCausalLM) -> None:
    # Prefill one token per step: every step is a batched decode over the cache.
    whole = paged(ours, prompts(), 3)
    stepwise = paged(ours, prompts(), 3, chunk=1)
    assert whole.generated == stepwise.generated
    for a, b in zip(whole.logits, stepwise.logits, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_bf16_runs_and_mostly_agrees(paged: Paged, tiny_llama: Path, hf: torch.nn.Module) -> None:
    model = with_layer_ops(load_model(tiny_llama, dtype=torch.bfloat16)[0])
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert isinstance(model.lm_head, PackedLinear)
        assert model.lm_head.packed.dtype == torch.bfloat16
    else:  # torch's own linear layers (see resolve_kernel)
        assert model.lm_head.weight.dtype == torch.bfloat16
    run = paged(model, prompts(), MAX_NEW, chunk=7, kv_dtype=torch.bfloat16)
    agree = total = 0
    for tokens, logits in zip(run.tokens, run.logits, strict=True):
        ref = hf_logits(hf, tokens)  # fp32, teacher-forced on the bf16 run's tokens
        assert torch.isfinite(logits).all()
        assert torch.nn.functional.cosine_similarity(logits, ref, dim=-1).min() > 0.99
        agree += int((logits.argmax(-1) == ref.argmax(-1)).sum())
        total += len(ref)
    assert agree / total > 0.9


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small, so that the tiny head dim has frequencies in all three bands.
    "original_max_position_embeddings": 64,
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3-rope": ("llama", {"rope_parameters": LLAMA3_ROPE}),
    "linear-rope-tied-mha": (
        "llama",
        {
            "rope_parameters": {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
            "tie_word_embeddings": True,
            "num_key_value_heads": 4,
        },
    ),
    "qwen2-bias": ("qwen2", {}),
    "llama-bias-mqa": (
        "llama",
        {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1},
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_match_transformers(
    paged: Paged, make_tiny_model: Callable[..., Path], variant: str
) -> None:
    arch, overrides = VARIANTS[variant]
    folder = make_tiny_model(arch, **overrides)
    model, _, cfg = load_model(folder)
    with_layer_ops(model)
    hf = hf_reference(folder)
    assert cfg.rope["rope_type"] == overrides.get("rope_parameters", {}).get("rope_type", "default")
    if cfg.tie_word_embeddings:
        plain = load_model(folder, linear="torch")[0]
        assert plain.lm_head.weight is plain.model.embed_tokens.weight
    ids = prompts(seed=2)[:3]
    run = paged(model, ids, 6, chunk=6)
    for prompt, tokens, logits in zip(ids, run.tokens, run.logits, strict=True):
        torch.testing.assert_close(logits, hf_logits(hf, tokens), atol=2e-5, rtol=1e-5)
        assert tokens[len(prompt) :] == hf_greedy(hf, prompt, 6)


def test_parameter_names_match_transformers(tiny_llama: Path, hf: torch.nn.Module) -> None:
    """Transformers' names, but q/k/v and gate/up: one stacked matrix each."""
    plain = load_model(tiny_llama, linear="torch")[0]
    theirs = dict(hf.state_dict())
    stack_projections(theirs, plain.config.num_layers)
    assert set(plain.state_dict()) == set(theirs)
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name], atol=0, rtol=0)
    assert not any(name.endswith(("q_proj.weight", "mlp.up_proj.weight")) for name in theirs)


def test_auto_packs_every_linear_on_the_cpu(tiny_llama: Path) -> None:
    model = load_model(tiny_llama)[0]
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == 4 * 2 + 1


def test_linear_kernel_choice() -> None:
    assert resolve_kernel("auto", "cpu") == "onednn"  # torch's CPU wheels have oneDNN
    assert resolve_kernel("auto", "cuda") == "torch"
    assert resolve_kernel("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="needs a CPU"):
        resolve_kernel("onednn", "cuda")
    with pytest.raises(ValueError, match="auto, onednn or torch"):
        resolve_kernel("mkl", "cpu")


@pytest.mark.parametrize("converts", [True, False])
def test_bf16_linears_use_onednn_only_where_the_cpu_converts_bf16(
    monkeypatch: pytest.MonkeyPatch, converts: bool
) -> None:
    """oneDNN's bf16 path refuses CPUs without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT (an
    AVX2 EPYC): there `auto` takes torch's linear layers, and `onednn` is an error."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: converts)
    assert resolve_kernel("auto", "cpu", torch.float32) == "onednn"
    assert resolve_kernel("auto", "cpu", torch.bfloat16) == ("onednn" if converts else "torch")
    if not converts:
        with pytest.raises(ValueError, match="bfloat16 path needs a CPU with AVX-512"):
            resolve_kernel("onednn", "cpu", torch.bfloat16)
