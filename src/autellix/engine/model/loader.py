"""Load a Hugging Face model folder (config.json, safetensors, tokenizer) into our model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerFast

from autellix.engine.model.linear import few_rows_kernels, pack_linears, resolve_kernel
from autellix.engine.model.llama import LlamaForCausalLM, ModelConfig


def load_config(folder: str | Path) -> ModelConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in model folder {folder}")
    hf = json.loads(path.read_text())
    cfg = ModelConfig.from_hf(hf)
    # Instruct models often list extra end-of-turn ids only in generation_config.json.
    gen_path = folder / "generation_config.json"
    if gen_path.is_file():
        eos = json.loads(gen_path.read_text()).get("eos_token_id")
        extra = eos if isinstance(eos, list) else [] if eos is None else [eos]
        cfg.eos_token_ids = tuple(dict.fromkeys([*cfg.eos_token_ids, *extra]))
    return cfg


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in model folder {folder}")
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


STACKED = {  # our matrix: the checkpoint's, in the order their outputs are stacked
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}


def stack_projections(state: dict[str, torch.Tensor], num_layers: int) -> None:
    """Stack each layer's q/k/v and gate/up matrices (and biases) into the one matrix the
    model reads for them, in place; a missing one is left for `load_state_dict` to name."""
    for layer in range(num_layers):
        prefix = f"model.layers.{layer}."
        for ours, theirs in STACKED.items():
            for kind in ("weight", "bias"):
                names = [f"{prefix}{name}.{kind}" for name in theirs]
                if all(name in state for name in names):
                    state[f"{prefix}{ours}.{kind}"] = torch.cat([state.pop(n) for n in names])


def load_weights(
    folder: Path,
    cfg: ModelConfig,
    dtype: torch.dtype,
    device: torch.device | str,
    linear: str = "auto",
) -> LlamaForCausalLM:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in model folder {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if name.endswith("rotary_emb.inv_freq"):  # saved by some old checkpoints
                    continue
                # A copy: a tensor on the file's mapping keeps all of it mapped, and the
                # pages packing reads stay resident after the packed copies replace them.
                state[name] = f.get_tensor(name).to(device=device, dtype=dtype, copy=True)
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    stack_projections(state, cfg.num_layers)
    # Build on the meta device (no random init), then adopt the loaded tensors.
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match {cfg.architecture}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.tie_weights()
    model.eval().requires_grad_(False)
    if resolve_kernel(linear, device, dtype) == "onednn":
        del state  # so that each weight is freed as soon as its packed copy is made
        pack_linears(model, few_rows_kernels(linear, dtype))
    return model


def load_model(
    folder: str | Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    linear: str = "auto",
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, ModelConfig]:
    """Model, tokenizer and config of a Hugging Face model folder; ``linear`` is the
    kernel of its linear layers (`autellix.engine.model.linear`)."""
    folder = Path(folder)
    cfg = load_config(folder)
    tokenizer = load_tokenizer(folder)
    return load_weights(folder, cfg, dtype, device, linear), tokenizer, cfg
