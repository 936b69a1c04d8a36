"""Linear layers on oneDNN's packed weights, for CPUs.

torch's ``F.linear`` on CPU calls MKL's GEMM, which at decode shapes (a few rows against
a weight matrix) reads the weights at a fraction of the memory bandwidth. oneDNN's
inner-product primitive on a weight reordered once into its blocked layout is 2-4x
faster there and at prefill shapes (``benchmarks/decode_throughput.py``). At 1-4 rows (a
decode step of a few calls) oneDNN's fixed cost per call (~25 us) and its read speed leave
room: with ``auto``, our C++ kernel (csrc/few_rows.cpp) reads the packed weights in place
there, 1.0-1.9x faster per matrix at 1-2 rows (``benchmarks/one_row_products.py``), with no
second copy.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Literal

import torch
from torch import nn

from autellix.engine.memory import return_freed_memory
from autellix.engine.model import paged_kernel

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


FEW_ROWS = 4  # up to here the C++ kernel beat oneDNN on every matrix of the default model


def few_rows_kernels(kernel: str, dtype: torch.dtype) -> ModuleType | None:
    """The C++ kernels for products of a few rows where ``kernel`` may use them (``auto``,
    float32, and they build), else None."""
    if kernel != "auto" or dtype != torch.float32:
        return None
    try:
        return paged_kernel.load()
    except RuntimeError:
        return None


def packed_block(weight: torch.Tensor, packed: torch.Tensor) -> int | None:
    """B where oneDNN stored ``weight`` ([out, in], float32) as [out / B][in][B], the layout
    few_rows.cpp reads (what oneDNN chose on the CPUs measured); None for any other."""
    out, inp = weight.shape
    try:  # torch's private ops: a torch without them leaves every matrix to oneDNN
        size, address = torch.ops.mkldnn._nbytes(packed), torch.ops.mkldnn.data_ptr(packed)
    except (AttributeError, RuntimeError):
        return None
    if weight.dtype != torch.float32 or size != weight.numel() * 4:
        return None
    data = (ctypes.c_float * weight.numel()).from_address(address)
    stored = torch.frombuffer(data, dtype=torch.float32)
    for block in (64, 32, 16, 8):
        if out % block:
            continue
        blocks = out // block
        # compared as views, no copy of the weights; the first block rules out most layouts
        laid_out = weight.reshape(blocks, block, inp).transpose(1, 2)
        if torch.equal(stored[: block * inp].view(inp, block), laid_out[0]) and torch.equal(
            stored.view(blocks, inp, block), laid_out
        ):
            return block
    return None


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight in oneDNN's layout; inference only. Given the C++
    kernels, products of up to FEW_ROWS rows read that layout with them, where they can."""

    def __init__(self, linear: nn.Linear, kernels: ModuleType | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.bias = None if linear.bias is None else linear.bias.detach().contiguous()
        self.block = None if kernels is None else packed_block(weight, self.packed)
        self.kernels = kernels if self.block else None
        self.address = torch.ops.mkldnn.data_ptr(self.packed) if self.block else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels is not None and x.dim() == 2 and 0 < x.shape[0] <= FEW_ROWS:
            return self.kernels.few_rows_linear(
                x.contiguous(), self.address, self.out_features, self.block, self.bias
            )
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: nn.Module, kernels: ModuleType | None = None) -> None:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`PackedLinear` (in place), with
    ``kernels`` for its products of a few rows. Each original weight is freed once packed,
    unless the caller still holds it, and its memory goes back to the OS at the end."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, PackedLinear(child, kernels))
    return_freed_memory()
