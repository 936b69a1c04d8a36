"""Linear layers on oneDNN's packed weights, for CPUs.

torch's ``F.linear`` on CPU calls MKL's GEMM, which at decode shapes (a few rows against
a weight matrix) reads the weights at a fraction of the memory bandwidth. oneDNN's
inner-product primitive on a weight reordered once into its blocked layout is 2-4x
faster there and at prefill shapes (``benchmarks/decode_throughput.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from autellix.engine.memory import return_freed_memory

LinearKernel = Literal["auto", "onednn", "torch"]


def why_not_onednn(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why oneDNN's linear layers cannot run here; None where they can."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return "it needs a CPU and a torch built with oneDNN"
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "its bfloat16 path needs a CPU with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT"
    return None


def resolve_kernel(
    kernel: str, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> Literal["onednn", "torch"]:
    """``auto`` is oneDNN wherever it runs (a CPU, bfloat16 only where the CPU converts it),
    else torch's own."""
    if kernel not in ("auto", "onednn", "torch"):
        raise ValueError(f"linear kernel must be auto, onednn or torch, not {kernel!r}")
    if kernel == "torch":
        return "torch"
    why = why_not_onednn(device, dtype)
    if why is None:
        return "onednn"
    if kernel == "onednn":
        raise ValueError(f"the onednn linear kernel cannot run here: {why}")
    return "torch"


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight in oneDNN's layout; inference only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: nn.Module) -> None:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`PackedLinear` (in place).
    Each original weight is freed once packed, unless the caller still holds it, and its
    memory goes back to the OS at the end."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, PackedLinear(child))
    return_freed_memory()
