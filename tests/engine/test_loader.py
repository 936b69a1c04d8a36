"""Loading Hugging Face folders: config parsing, tokenizer, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from autellix.engine.model.llama import ModelConfig
from autellix.engine.model.loader import load_config, load_model


def test_load_model_returns_model_tokenizer_config(tiny_llama: Path) -> None:
    model, tokenizer, cfg = load_model(tiny_llama)
    assert cfg.architecture == "LlamaForCausalLM"
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 4, 2, 16)
    assert cfg.eos_token_ids == (2,)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    text = tokenizer.apply_chat_template(
        [{"role": "w1", "content": "w2 w3"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "w1 w2 w3 w0 "
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == [4, 5, 6, 3]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_model(tmp_path / "nope")


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(tmp_path)


def test_unsupported_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    )
    with pytest.raises(ValueError, match=r"unsupported architecture.*GPT2LMHeadModel"):
        load_model(tmp_path)


def test_missing_weights_and_tokenizer(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_model(folder)
    shutil.copy(tiny_llama / "tokenizer.json", folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        load_model(folder)


def test_sharded_checkpoint(tiny_llama: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sharded"
    shutil.copytree(tiny_llama, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    save_file({n: state[n] for n in names[:half]}, folder / "model-00001-of-00002.safetensors")
    save_file({n: state[n] for n in names[half:]}, folder / "model-00002-of-00002.safetensors")
    sharded = load_model(folder)[0].state_dict()
    whole = load_model(tiny_llama)[0].state_dict()
    assert all(torch.equal(sharded[n], whole[n]) for n in whole)


def test_checkpoint_mismatch(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="checkpoint does not match"):
        load_model(folder)


def test_generation_config_adds_eos_ids(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gen"
    shutil.copytree(tiny_llama, folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert load_config(folder).eos_token_ids == (2, 7)


def test_transformers4_style_rope_config() -> None:
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 10,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "eos_token_id": [5, 6],
    }
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope["rope_type"] == "llama3" and cfg.rope["rope_theta"] == 500000.0
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.eos_token_ids) == (2, 4, (5, 6))
    with pytest.raises(ValueError, match="unsupported rope_type 'yarn'"):
        ModelConfig.from_hf({**hf, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})


def test_config_missing_entry() -> None:
    with pytest.raises(ValueError, match="lacks the entry 'vocab_size'"):
        ModelConfig.from_hf({"architectures": ["LlamaForCausalLM"], "num_attention_heads": 2})
