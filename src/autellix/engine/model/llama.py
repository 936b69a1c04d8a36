"""A Llama-family decoder (Llama, SmolLM2, Qwen2) over the paged KV cache.

Parameter names match Hugging Face's ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` so a
checkpoint's state dict loads as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autellix.engine.model.attention import AttentionMetadata, paged_attention

# Architecture -> (bias on q/k/v, bias on o); None means "from attention_bias".
ARCHITECTURES: dict[str, tuple[bool | None, bool | None]] = {
    "LlamaForCausalLM": (None, None),
    "Qwen2ForCausalLM": (True, False),
}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: dict[str, Any]  # rope_type, rope_theta and the type's own parameters
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    hf_config: dict[str, Any] = field(repr=False)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Read a Hugging Face config.json (transformers 4 or 5 layout)."""
        try:
            return cls._from_hf(hf)
        except KeyError as e:
            raise ValueError(f"config.json lacks the entry {e}") from None

    @classmethod
    def _from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        archs = hf.get("architectures") or []
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            raise ValueError(
                f"unsupported architecture {archs or hf.get('model_type')!r}; "
                f"supported: {', '.join(ARCHITECTURES)}"
            )
        if hf.get("use_sliding_window"):
            raise ValueError("sliding-window attention is not supported")
        num_heads = hf["num_attention_heads"]
        qkv_bias, o_bias = ARCHITECTURES[arch]
        attention_bias = bool(hf.get("attention_bias", False))
        eos = hf.get("eos_token_id")
        eos_ids = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        return cls(
            architecture=arch,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope=_rope_params(hf),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
            o_bias=attention_bias if o_bias is None else o_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            eos_token_ids=eos_ids,
            bos_token_id=hf.get("bos_token_id"),
            hf_config=hf,
        )


def _rope_params(hf: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 writes "rope_parameters"; 4.x wrote "rope_theta" plus "rope_scaling".
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if params["rope_type"] not in ROPE_TYPES:
        raise ValueError(
            f"unsupported rope_type {params['rope_type']!r}; supported: {', '.join(ROPE_TYPES)}"
        )
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embeddings are not supported")
    return params


def rope_inv_freq(rope: dict[str, Any], head_dim: int) -> torch.Tensor:
    """Inverse frequencies as transformers computes them (fp32, on the CPU)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (rope["rope_theta"] ** exponents)
    kind = rope["rope_type"]
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / rope["factor"]
    if kind == "llama3":
        factor, old_len = rope["factor"], rope["original_max_position_embeddings"]
        low, high = rope["low_freq_factor"], rope["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"unsupported rope_type {kind!r}; supported: {', '.join(ROPE_TYPES)}")


class RotaryEmbedding:
    """cos/sin per position, computed once per forward and shared by all layers.

    Not a module: ``inv_freq`` stays fp32 whatever dtype or device the weights get.
    """

    def __init__(self, rope: dict[str, Any], head_dim: int) -> None:
        self.inv_freq = rope_inv_freq(rope, head_dim)

    def __call__(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x ``[T, heads, D]`` rotated by cos and sin ``[T, D]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat((-x2, x1), dim=-1) * sin[:, None]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, scale in the weights' dtype: the order transformers uses.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def add_forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, kernels: ModuleType | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The skip connection, then the norm: ``residual + x`` and its norm (``x``'s norm
        and ``x`` itself for the first layer). The C++ kernels work in place."""
        if kernels is None:
            residual = x if residual is None else residual + x
            return self(residual), residual
        if residual is None:
            return kernels.rms_norm(x, self.weight, self.eps), x
        kernels.add_rms_norm(x, residual, self.weight, self.eps)
        return x, residual


class Attention(nn.Module):
    """q, k and v come from one matrix (``qkv_proj``: the checkpoint's three stacked at
    load), read in one pass."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.q_size, self.kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(
            cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias
        )
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.o_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        kernels: ModuleType | None,
    ) -> torch.Tensor:
        t = x.shape[0]
        qkv = self.qkv_proj(x)
        if kernels is not None:  # q and k rotated in place
            kernels.rotary(qkv, *rope, self.num_heads + self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        if kernels is None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        return self.o_proj(paged_attention(q, k, v, kv_cache, self.layer, meta))


class MLP(nn.Module):
    """gate and up come from one matrix (``gate_up_proj``, stacked at load)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, kernels: ModuleType | None) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if kernels is not None:
            return self.down_proj(kernels.silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        kernels: ModuleType | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output before its skip connection, and the residual stream: their
        sum is the layer's output (added by the next layer's norm, or the final one)."""
        x, residual = self.input_layernorm.add_forward(x, residual, kernels)
        x = self.self_attn(x, rope, kv_cache, meta, kernels)
        x, residual = self.post_attention_layernorm.add_forward(x, residual, kernels)
        return self.mlp(x, kernels), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg.rope, cfg.head_dim)
        # the C++ layer ops (csrc/layer_ops.cpp, `paged_kernel.load()`); None: torch's
        self.kernels: ModuleType | None = None
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """Hidden states ``[T, hidden]`` (after the final norm) of one step's new tokens."""
        x = self.model.embed_tokens(input_ids)
        rope = self.rotary(positions, x.dtype)
        residual = None
        for layer in self.model.layers:
            x, residual = layer(x, residual, rope, kv_cache, meta, self.kernels)
        return self.model.norm.add_forward(x, residual, self.kernels)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, hidden]`` (one row per sequence, usually its last token) -> ``[B, vocab]``."""
        return self.lm_head(hidden)
