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


def onednn_available(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available()


def resolve_kernel(kernel: str, device: torch.device | str) -> Literal["onednn", "torch"]:
    """``auto`` is oneDNN wherever it runs (the CPU), else torch's own."""
    if kernel not in ("auto", "onednn", "torch"):
        raise ValueError(f"linear kernel must be auto, onednn or torch, not {kernel!r}")
    if kernel == "torch":
        return "torch"
    if onednn_available(device):
        return "onednn"
    if kernel == "onednn":
        raise ValueError("the onednn linear kernel needs a CPU and a torch built with oneDNN")
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
