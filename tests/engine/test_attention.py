"""Paged attention against a dense reference, on random tensors."""

from __future__ import annotations

import pytest
import torch

from autellix.engine.model import attention, paged_kernel
from autellix.engine.model.attention import (
    MAX_DECODE_GROUPS,
    SPLIT_SAVES_TOKENS,
    AttentionMetadata,
    allocate_kv_cache,
    decode_groups,
    paged_attention,
    write_kv,
)

LAYERS, HEADS, KV_HEADS, DIM = 2, 6, 2, 8


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: int) -> torch.Tensor:
    """q [Lq, H, D] at positions ctx.., over k/v [ctx + Lq, Hkv, D]; returns [Lq, H * D]."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    q_pos = torch.arange(ctx, ctx + q.shape[0])[:, None]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > q_pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(q.shape[0], -1)


def check_step(
    meta: AttentionMetadata,
    kv_cache: torch.Tensor,
    layer: int,
    full_k: list[torch.Tensor],
    full_v: list[torch.Tensor],
    g: torch.Generator,
) -> None:
    """One step's paged attention of random queries over each sequence's new K/V (its
    context already cached) equals dense attention over the whole sequence."""
    context_lens, query_lens = meta.context_lens, meta.query_lens
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
    check_step(meta, kv_cache, layer, full_k, full_v, g)
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
    assert meta.decodes == [] and len(meta.prefills) == 2


def test_decode_groups_split_only_where_padding_costs() -> None:
    # Alike lengths: one group, in step order (no reordering of the output).
    assert decode_groups([500, 510, 505, 498], block_size=16) == [[0, 1, 2, 3]]
    # Short and long sequences: split by length, each group sorted, every one once.
    lens = [1200, 40, 1100, 60, 1150, 50, 30, 1190] * 4
    groups = decode_groups(lens, block_size=16)
    assert len(groups) > 1
    assert sorted(i for g in groups for i in g) == list(range(len(lens)))
    assert max(lens[i] for i in groups[0]) < min(lens[i] for i in groups[-1])
    assert len(decode_groups(list(range(1, 4000, 13)), block_size=1)) == MAX_DECODE_GROUPS
    # A split that saves fewer padded tokens than it costs is not made.
    assert len(decode_groups([1000, 1000 - SPLIT_SAVES_TOKENS // 2], block_size=1)) == 1


@pytest.mark.parametrize("prefill", [7, 1], ids=["around-a-prefill", "decodes-only"])
def test_grouped_decodes_over_layers_match_dense(
    monkeypatch: pytest.MonkeyPatch, prefill: int
) -> None:
    """Decodes of spread lengths in several groups, alone or around a prefill in the same
    step, in two layers (the second reuses the first's gather buffers)."""
    monkeypatch.setattr(attention, "SPLIT_SAVES_TOKENS", 8)
    g = torch.Generator().manual_seed(1)
    block_size = 4
    context_lens = [3, 40, 5, 25, 2, 33]
    query_lens = [1, 1, prefill, 1, 1, 1]
    lens = [c + q for c, q in zip(context_lens, query_lens, strict=True)]
    need = [-(-n // block_size) for n in lens]
    perm = torch.randperm(sum(need), generator=g).tolist()
    tables = [perm[sum(need[:i]) : sum(need[: i + 1])] for i in range(len(need))]
    kv_cache = allocate_kv_cache(LAYERS, sum(need), block_size, KV_HEADS, DIM)
    meta = AttentionMetadata.build(tables, context_lens, query_lens, block_size)
    assert len(meta.decodes) > 1
    for layer in range(LAYERS):
        full_k = [torch.randn(n, KV_HEADS, DIM, generator=g) for n in lens]
        full_v = [torch.randn(n, KV_HEADS, DIM, generator=g) for n in lens]
        for i, c in enumerate(context_lens):  # the context, as earlier steps wrote it
            if c:
                slots = AttentionMetadata.build([tables[i]], [0], [c], block_size).slot_mapping
                write_kv(kv_cache, layer, full_k[i][:c], full_v[i][:c], slots)
        check_step(meta, kv_cache, layer, full_k, full_v, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kernels_kv_writes_equal_torchs(dtype: torch.dtype) -> None:
    """K and V as the model has them (views of one qkv product), at scattered slots."""
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, (HEADS + 2 * KV_HEADS) * DIM, generator=g).to(dtype)
    _, k, v = qkv.split([HEADS * DIM, KV_HEADS * DIM, KV_HEADS * DIM], dim=-1)
    k, v = k.view(5, KV_HEADS, DIM), v.view(5, KV_HEADS, DIM)
    slots = torch.tensor([7, 0, 12, 3, 13])
    ours, theirs = (allocate_kv_cache(LAYERS, 4, 4, KV_HEADS, DIM, dtype) for _ in range(2))
    paged_kernel.load().write_kv(ours, 1, k, v, slots)
    write_kv(theirs, 1, k, v, slots)
    assert torch.equal(ours, theirs) and ours[:, 1].count_nonzero() == 2 * k.numel()
    with pytest.raises(RuntimeError, match="slot 16 out of range"):
        paged_kernel.load().write_kv(ours, 1, k, v, torch.tensor([7, 0, 12, 3, 16]))
    with pytest.raises(RuntimeError, match="a layer"):
        paged_kernel.load().write_kv(ours, LAYERS, k, v, slots)


@pytest.mark.parametrize("mixed", [True, False], ids=["with-a-prefill", "decodes-only"])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim", "dtype"),
    [
        (9, 3, 64, torch.float32),  # SmolLM2-135M
        (32, 8, 128, torch.float32),  # Llama-3.1-8B
        (4, 4, 64, torch.float32),  # no GQA
        (9, 3, 64, torch.bfloat16),
    ],
)
def test_paged_kernel_decodes_match_dense(
    heads: int, kv_heads: int, dim: int, dtype: torch.dtype, mixed: bool
) -> None:
    """The C++ kernel's decodes (blocks scattered over the pool, lengths that end mid-block,
    around a prefill with context in the same step, or alone) equal dense attention."""
    g = torch.Generator().manual_seed(2)
    block_size = 16
    context_lens = [0, 40, 300, 15, 16, 90]
    query_lens = [1, 1, 1, 20 if mixed else 1, 1, 1]
    lens = [c + q for c, q in zip(context_lens, query_lens, strict=True)]
    need = [-(-n // block_size) for n in lens]
    perm = torch.randperm(sum(need) + 1, generator=g).tolist()
    tables = [perm[sum(need[:i]) : sum(need[: i + 1])] for i in range(len(need))]
    kv_cache = allocate_kv_cache(1, sum(need) + 1, block_size, kv_heads, dim, dtype)
    full_k = [torch.randn(n, kv_heads, dim, generator=g).to(dtype) for n in lens]
    full_v = [torch.randn(n, kv_heads, dim, generator=g).to(dtype) for n in lens]
    for i, c in enumerate(context_lens):  # the context, as earlier steps wrote it
        if c:
            slots = AttentionMetadata.build([tables[i]], [0], [c], block_size).slot_mapping
            write_kv(kv_cache, 0, full_k[i][:c], full_v[i][:c], slots)
    qs = [torch.randn(n, heads, dim, generator=g).to(dtype) for n in query_lens]
    meta = AttentionMetadata.build(tables, context_lens, query_lens, block_size, decode_kernel=True)
    assert len(meta.decodes) == 1 and meta.decodes[0].kv_lens is not None
    new = [slice(c, None) for c in context_lens]
    out = paged_attention(
        torch.cat(qs),
        torch.cat([k[s] for k, s in zip(full_k, new, strict=True)]),
        torch.cat([v[s] for v, s in zip(full_v, new, strict=True)]),
        kv_cache,
        0,
        meta,
    )
    expected = torch.cat(
        [
            dense_attention(q.float(), k.float(), v.float(), c)
            for q, k, v, c in zip(qs, full_k, full_v, context_lens, strict=True)
        ]
    )
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, atol=tolerance, rtol=tolerance)


def test_attention_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = paged_kernel.resolve_attention
    assert resolve("auto", "cpu", torch.float32, 64, 3) == "paged"
    assert resolve("torch", "cpu", torch.float32, 64, 3) == "torch"
    assert resolve("auto", "cpu", torch.float32, 80, 3) == "torch"  # no instance for it
    assert resolve("auto", "cpu", torch.float16, 64, 3) == "torch"
    with pytest.raises(ValueError, match="head size 80"):
        resolve("paged", "cpu", torch.float32, 80, 3)
    with pytest.raises(ValueError, match="CPUs only"):
        resolve("paged", "cuda", torch.float32, 64, 3)
    with pytest.raises(ValueError, match="auto, paged or torch"):
        resolve("flash", "cpu", torch.float32, 64, 3)

    def no_compiler() -> None:
        raise RuntimeError("the paged attention kernel did not build (no c++)")

    monkeypatch.setattr(paged_kernel, "load", no_compiler)
    assert resolve("auto", "cpu", torch.float32, 64, 3) == "torch"
    with pytest.raises(ValueError, match="did not build"):
        resolve("paged", "cpu", torch.float32, 64, 3)


def test_a_build_lock_left_by_a_killed_build_does_not_hang_the_next_one() -> None:
    """torch's build waits on a lock file in the build folder for as long as it exists;
    a build killed midway (Ctrl-C, a timeout) leaves it behind, and every later start used
    to wait forever. A fresh process loads the kernel built here, past such a lock."""
    import subprocess
    import sys

    from autellix.engine.model.default_model import cache_dir

    paged_kernel.load()  # built, as every test here needs
    (cache_dir() / "kernels" / paged_kernel.build_name() / "lock").touch()
    code = "from autellix.engine.model import paged_kernel; print(paged_kernel.load().write_kv)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "write_kv" in done.stdout, done.stderr
