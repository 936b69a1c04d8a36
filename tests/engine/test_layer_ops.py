"""The C++ layer ops (csrc/layer_ops.cpp) against the model's torch path, op by op: fp32
to within float rounding, bf16 bit for bit (each rounds where torch rounds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autellix.engine.model import paged_kernel
from autellix.engine.model.llama import RMSNorm, RotaryEmbedding, apply_rotary

DTYPES = [torch.float32, torch.bfloat16]


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    if actual.dtype == torch.bfloat16:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, atol=2e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def ops():
    return paged_kernel.load()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 37])
def test_norms_match_torch(ops, dtype: torch.dtype, rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    norm = RMSNorm(96, 1e-5).to(dtype)
    norm.weight.data = torch.randn(96, generator=g).to(dtype)
    x, residual = (torch.randn(rows, 96, generator=g).to(dtype) for _ in range(2))
    close(ops.rms_norm(x, norm.weight, norm.eps), norm(x))
    x2, residual2 = x.clone(), residual.clone()
    ops.add_rms_norm(x2, residual2, norm.weight, norm.eps)
    assert torch.equal(residual2, residual + x)
    close(x2, norm(residual + x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 37])
def test_rotary_rotates_q_and_k_in_place(ops, dtype: torch.dtype, rows: int) -> None:
    heads, kv_heads, dim = 4, 2, 32
    g = torch.Generator().manual_seed(rows)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=g).to(dtype)
    rope = RotaryEmbedding({"rope_type": "default", "rope_theta": 10000.0}, dim)
    cos, sin = rope(torch.arange(rows) + 3, dtype)
    expected = qkv.clone()
    for lo, hi in ((0, heads), (heads, heads + kv_heads)):  # q, then k; v untouched
        part = qkv[:, lo * dim : hi * dim].reshape(rows, hi - lo, dim)
        expected[:, lo * dim : hi * dim] = apply_rotary(part, cos, sin).reshape(rows, -1)
    ops.rotary(qkv, cos, sin, heads + kv_heads, dim)
    close(qkv, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_matches_torch(ops, dtype: torch.dtype) -> None:
    gate_up = torch.randn(5, 2 * 80, generator=torch.Generator().manual_seed(0)).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    close(ops.silu_mul(gate_up), F.silu(gate) * up)


def test_bad_inputs_are_refused(ops) -> None:
    with pytest.raises(RuntimeError, match="float32 or bfloat16 only"):
        ops.silu_mul(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.rms_norm(torch.zeros(4, 6).t(), torch.ones(4), 1e-5)
    with pytest.raises(RuntimeError, match="one weight per column"):
        ops.rms_norm(torch.zeros(2, 6), torch.ones(5), 1e-5)
