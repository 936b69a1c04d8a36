"""Products of a few rows read oneDNN's packed weights in place (csrc/few_rows.cpp)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from autellix.engine.model import load_model
from autellix.engine.model.linear import FEW_ROWS, PackedLinear, few_rows_kernels, packed_block

KERNELS = few_rows_kernels("auto", torch.float32)
pytestmark = pytest.mark.skipif(KERNELS is None, reason="the C++ kernels do not build here")
# the default model's matrices (qkv, o, gate_up, down, lm_head), 192 rows (oneDNN blocks
# them by 16, not 64), a Qwen2 matrix
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576), (192, 576), (896, 896)]


def packed(out: int, inp: int, bias: bool) -> tuple[torch.nn.Linear, PackedLinear]:
    linear = torch.nn.Linear(inp, out, bias=bias).requires_grad_(False)
    return linear, PackedLinear(linear, KERNELS)


class Counted:
    """The kernels, noting the rows of each product they are given."""

    def __init__(self, kernels: ModuleType, calls: list[int]) -> None:
        self.kernels, self.calls = kernels, calls

    def few_rows_linear(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        self.calls.append(len(x))
        return self.kernels.few_rows_linear(x, *args)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_few_rows_match_torch(shape: tuple[int, int], bias: bool) -> None:
    torch.manual_seed(0)
    linear, layer = packed(*shape, bias)
    if torch.backends.cpu.get_cpu_capability() == "AVX2":  # where oneDNN's layout was read
        assert layer.block is not None
    calls = []
    if layer.kernels is not None:
        layer.kernels = Counted(layer.kernels, calls)
    for rows in range(1, FEW_ROWS + 2):
        x = torch.randn(rows, 2 * shape[1])[:, ::2]  # not contiguous
        torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)
    assert calls == ([] if layer.block is None else list(range(1, FEW_ROWS + 1)))


def test_a_layout_it_cannot_read_is_left_to_onednn() -> None:
    weight = torch.randn(192, 64)
    stored = torch.ops.mkldnn._reorder_linear_weight(weight)
    assert packed_block(weight, stored) is not None
    assert packed_block(torch.randn(192, 64), stored) is None  # other values
    assert packed_block(weight.T.contiguous(), stored) is None  # the other shape
    assert packed_block(weight.bfloat16(), stored) is None
    linear, layer = packed(100, 64, bias=False)  # oneDNN pads 100 rows
    assert layer.block is None and layer.kernels is None
    x = torch.randn(1, 64)
    torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)


def test_only_auto_in_float32_uses_them(tiny_llama: Path) -> None:
    assert few_rows_kernels("onednn", torch.float32) is None
    assert few_rows_kernels("auto", torch.bfloat16) is None

    def readers(linear: str) -> int:
        model = load_model(tiny_llama, linear=linear)[0]
        return sum(isinstance(m, PackedLinear) and m.kernels is not None for m in model.modules())

    assert readers("onednn") == 0
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        assert readers("auto") == 4 * 2 + 1
