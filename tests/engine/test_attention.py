"""Paged attention against a dense reference, on random tensors."""

from __future__ import annotations

import pytest
import torch

from autellix.engine.model.attention import AttentionMetadata, allocate_kv_cache, paged_attention

LAYERS, HEADS, KV_HEADS, DIM = 2, 6, 2, 8


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: int) -> torch.Tensor:
    """q [Lq, H, D] at positions ctx.., over k/v [ctx + Lq, Hkv, D]; returns [Lq, H * D]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    q_pos = torch.arange(ctx, ctx + q.shape[0])[:, None]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > q_pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(q.shape[0], -1)


@pytest.mark.parametrize(
    ("context_lens", "query_lens"),
    [
        ([0, 0, 0], [5, 1, 9]),  # prefills (and a one-token prompt)
        ([3, 10, 7], [1, 1, 1]),  # pure decode
        ([4, 0, 9, 2], [1, 6, 1, 3]),  # mixed: decodes, a prefill, a chunk with context
    ],
)
@pytest.mark.parametrize("block_size", [1, 4])
def test_paged_attention_matches_dense(
    context_lens: list[int], query_lens: list[int], block_size: int
) -> None:
    g = torch.Generator().manual_seed(0)
    lens = [c + q for c, q in zip(context_lens, query_lens, strict=True)]
    need = [-(-n // block_size) + 1 for n in lens]  # one spare block each
    num_blocks = sum(need) + 2
    perm = torch.randperm(num_blocks, generator=g).tolist()
    tables = [perm[sum(need[:i]) : sum(need[: i + 1])] for i in range(len(need))]
    kv_cache = allocate_kv_cache(LAYERS, num_blocks, block_size, KV_HEADS, DIM)
    layer = 1
    full_k = [torch.randn(n, KV_HEADS, DIM, generator=g) for n in lens]
    full_v = [torch.randn(n, KV_HEADS, DIM, generator=g) for n in lens]
    # The context is already cached, written as an earlier step would have.
    if any(context_lens):
        pre = AttentionMetadata.build(
            [t for t, c in zip(tables, context_lens, strict=True) if c],
            [0] * sum(1 for c in context_lens if c),
            [c for c in context_lens if c],
            block_size,
        )
        ks = torch.cat([k[:c] for k, c in zip(full_k, context_lens, strict=True)])
        vs = torch.cat([v[:c] for v, c in zip(full_v, context_lens, strict=True)])
        q = torch.randn(ks.shape[0], HEADS, DIM, generator=g)
        paged_attention(q, ks, vs, kv_cache, layer, pre)

    meta = AttentionMetadata.build(tables, context_lens, query_lens, block_size)
    qs = [torch.randn(n, HEADS, DIM, generator=g) for n in query_lens]
    out = paged_attention(
        torch.cat(qs),
        torch.cat([k[c:] for k, c in zip(full_k, context_lens, strict=True)]),
        torch.cat([v[c:] for v, c in zip(full_v, context_lens, strict=True)]),
        kv_cache,
        layer,
        meta,
    )
    expected = torch.cat(
        [
            dense_attention(q, k, v, c)
            for q, k, v, c in zip(qs, full_k, full_v, context_lens, strict=True)
        ]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert kv_cache[:, 0].abs().sum() == 0  # other layers untouched


def test_metadata_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="too few"):
        AttentionMetadata.build([[0]], [2], [3], block_size=4)
    with pytest.raises(ValueError, match="one slot per new token"):
        AttentionMetadata([[0]], [0], [2], torch.tensor([0]), block_size=4)
    with pytest.raises(ValueError, match="at least one new token"):
        AttentionMetadata([[0]], [0], [0], torch.tensor([], dtype=torch.long), block_size=4)


def test_metadata_slots_and_last_tokens() -> None:
    meta = AttentionMetadata.build([[7, 2], [5]], [3, 0], [2, 2], block_size=4)
    assert meta.slot_mapping.tolist() == [7 * 4 + 3, 2 * 4 + 0, 5 * 4 + 0, 5 * 4 + 1]
    assert meta.last_token_idx.tolist() == [1, 3]
    assert meta.decode is None and len(meta.prefills) == 2
