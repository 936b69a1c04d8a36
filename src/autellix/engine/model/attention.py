"""Paged attention in plain torch.

The KV cache of the whole model is one tensor of shape
``[2, num_layers, num_kv_heads, num_blocks, block_size, head_dim]`` (K then V), so the
engine can move every block of a set of calls, for all layers at once, with one index op
``kv_cache[:, :, :, block_ids]``. A slot is ``block_id * block_size + offset``. Heads come
before blocks so that gathering a batch's blocks gives each head's keys as one contiguous
``[batch, tokens, head_dim]`` matrix, which the decode attention multiplies as it is.

One step's tokens are flattened (varlen): sequence after sequence, the new tokens of each
(a whole prompt, a prompt chunk, or one decode token). Sequences with one new token (decodes)
go through the C++ kernel that reads the blocks in place (`paged_kernel`, the default on a
CPU), or else through batched attention over gathered, length-masked blocks (two batched
matrix products and a softmax: SDPA's CPU kernel was slower for one-token queries,
docs/benchmarks.md), in a few groups of similar length so that short sequences are not
padded to the longest; sequences with more than one new token go one by one through SDPA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from autellix.engine.model import paged_kernel


def allocate_kv_cache(
    num_layers: int,
    num_blocks: int,
    block_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The whole model's KV cache; ``dtype`` must be the model's."""
    shape = (2, num_layers, num_kv_heads, num_blocks, block_size, head_dim)
    # Zeros, not empty: the batched decode reads padding slots too (masked out, but a NaN
    # from uninitialised memory would still poison the weighted sum).
    return torch.zeros(shape, dtype=dtype, device=device)


# Splitting a group of decodes in two must save this many padded tokens to pay for the
# second group's own gathers and products in every layer (benchmarks/decode_attention.py
# times one group against several).
SPLIT_SAVES_TOKENS = 4096
MAX_DECODE_GROUPS = 4


def decode_groups(kv_lens: list[int], block_size: int) -> list[list[int]]:
    """The decodes' indices in groups of similar length (each group is padded to its longest):
    the group whose split saves the most padded blocks is split while that saves enough."""
    order = sorted(range(len(kv_lens)), key=kv_lens.__getitem__)
    blocks = [-(-kv_lens[i] // block_size) for i in order]
    bounds = [(0, len(order))]
    while len(bounds) < MAX_DECODE_GROUPS:
        best = (0, 0, 0)  # blocks saved, group, cut
        for g, (a, b) in enumerate(bounds):
            for cut in range(a + 1, b):
                saved = (cut - a) * (blocks[b - 1] - blocks[cut - 1])
                if saved > best[0]:
                    best = (saved, g, cut)
        saved, g, cut = best
        if saved * block_size < SPLIT_SAVES_TOKENS:
            break
        a, b = bounds[g]
        bounds[g : g + 1] = [(a, cut), (cut, b)]
    if len(bounds) == 1:
        return [list(range(len(kv_lens)))]  # in step order: no reordering of the output
    return [order[a:b] for a, b in bounds]


@dataclass
class DecodeBatch:
    """A group of the sequences of a step that have exactly one new token."""

    token_idx: torch.Tensor | None  # [Bd] rows in the flattened tokens; None when all are decodes
    block_tables: torch.Tensor  # [Bd, max_blocks], padded with block 0 (masked out)
    # The torch path's mask, [Bd, 1, max_blocks * block_size] fp32: 0 attend, -inf not.
    bias: torch.Tensor | None
    kv_lens: torch.Tensor | None = None  # [Bd] int64: the C++ kernel's, which needs no mask
    # The rows of a layer's cache that hold the batch's blocks (`cache_rows`): the same in
    # every layer, so found by the first.
    rows: torch.Tensor | None = None
    # Where each layer gathers its K and V (`[rows, block_size * D]`): allocated by the first
    # layer and reused by the others. Above 32 MiB glibc takes a fresh tensor from the OS
    # and gives it back when freed, so every layer would fault its pages in again.
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None


@dataclass
class PrefillSeq:
    """A sequence of a step with several new tokens (a prompt or a prompt chunk)."""

    start: int  # first row in the flattened tokens
    query_len: int
    context_len: int
    blocks: torch.Tensor  # [num_blocks covering context_len + query_len]
    mask: torch.Tensor | None  # [query_len, context_len + query_len]; None: plain causal


@dataclass
class AttentionMetadata:
    """One step's batch. ``block_tables[i]`` may be longer than sequence i needs."""

    block_tables: list[list[int]]
    context_lens: list[int]  # tokens of each sequence already in the cache before this step
    query_lens: list[int]  # new tokens of each sequence this step
    slot_mapping: torch.Tensor  # [T] int64, cache slot of each new token
    block_size: int
    decode_kernel: bool = False  # decodes through the C++ kernel, all in one batch
    decodes: list[DecodeBatch] = field(init=False, default_factory=list)
    prefills: list[PrefillSeq] = field(init=False, default_factory=list)
    last_token_idx: torch.Tensor = field(init=False)  # [B] row of each sequence's last token

    def __post_init__(self) -> None:
        n = len(self.block_tables)
        if not (len(self.context_lens) == len(self.query_lens) == n):
            raise ValueError("block_tables, context_lens and query_lens differ in length")
        if any(q < 1 for q in self.query_lens):
            raise ValueError("every sequence needs at least one new token")
        if self.slot_mapping.numel() != sum(self.query_lens):
            raise ValueError("slot_mapping needs one slot per new token")
        device = self.slot_mapping.device
        starts, total = [], 0
        for q in self.query_lens:
            starts.append(total)
            total += q
        self.last_token_idx = torch.tensor(
            [s + q - 1 for s, q in zip(starts, self.query_lens, strict=True)], device=device
        )
        decodes = [i for i in range(n) if self.query_lens[i] == 1]
        kv_lens = [self.context_lens[i] + 1 for i in decodes]
        if self.decode_kernel:  # no padding to save: one batch in step order
            groups = [list(range(len(decodes)))] if decodes else []
        else:
            groups = decode_groups(kv_lens, self.block_size) if decodes else []
        for group in groups:
            seqs = [decodes[j] for j in group]
            self.decodes.append(self._decode_batch(seqs, starts, n, device))
        for i in range(n):
            if self.query_lens[i] > 1:
                self.prefills.append(self._prefill_seq(i, starts[i], device))

    def _decode_batch(
        self, seqs: list[int], starts: list[int], n: int, device: torch.device
    ) -> DecodeBatch:
        kv_lens = [self.context_lens[i] + 1 for i in seqs]
        max_blocks = -(-max(kv_lens) // self.block_size)
        tables = [self.block_tables[i][:max_blocks] for i in seqs]
        padded = [t + [0] * (max_blocks - len(t)) for t in tables]
        lens = torch.tensor(kv_lens, device=device)
        token_idx = torch.tensor([starts[i] for i in seqs], device=device)
        bias = None
        if not self.decode_kernel:
            span = torch.arange(max_blocks * self.block_size, device=device)
            bias = torch.where(span[None, :] < lens[:, None], 0.0, -math.inf)[:, None, :]
        return DecodeBatch(
            token_idx=None if len(seqs) == n else token_idx,
            block_tables=torch.tensor(padded, dtype=torch.long, device=device),
            bias=bias,
            kv_lens=lens if self.decode_kernel else None,
        )

    def _prefill_seq(self, i: int, start: int, device: torch.device) -> PrefillSeq:
        q, ctx = self.query_lens[i], self.context_lens[i]
        kv_len = ctx + q
        blocks = self.block_tables[i][: -(-kv_len // self.block_size)]
        # Without context the new K/V are the whole sequence: plain causal, no mask needed.
        mask = None
        if ctx:
            mask = torch.ones(q, kv_len, dtype=torch.bool, device=device).tril(diagonal=ctx)
        return PrefillSeq(
            start=start,
            query_len=q,
            context_len=ctx,
            blocks=torch.tensor(blocks, dtype=torch.long, device=device),
            mask=mask,
        )

    @classmethod
    def build(
        cls,
        block_tables: list[list[int]],
        context_lens: list[int],
        query_lens: list[int],
        block_size: int,
        device: torch.device | str = "cpu",
        decode_kernel: bool = False,
    ) -> AttentionMetadata:
        """Metadata with the slot mapping derived from the block tables."""
        slots: list[int] = []
        for table, ctx, q in zip(block_tables, context_lens, query_lens, strict=True):
            if len(table) * block_size < ctx + q:
                raise ValueError(f"{len(table)} blocks are too few for {ctx + q} tokens")
            slots.extend(
                table[p // block_size] * block_size + p % block_size for p in range(ctx, ctx + q)
            )
        return cls(
            block_tables=block_tables,
            context_lens=context_lens,
            query_lens=query_lens,
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
            block_size=block_size,
            decode_kernel=decode_kernel,
        )


def write_kv(
    kv_cache: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
) -> None:
    """Store the new tokens' K/V ``[T, num_kv_heads, head_dim]`` at their slots."""
    _, _, num_kv_heads, num_blocks, block_size, head_dim = kv_cache.shape
    flat = kv_cache[:, layer].view(2, num_kv_heads, num_blocks * block_size, head_dim)
    flat[0].index_copy_(1, slots, k.transpose(0, 1))
    flat[1].index_copy_(1, slots, v.transpose(0, 1))


def cache_rows(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The rows of a layer's ``[Hkv, num_blocks, block_size, D]`` cache, flattened over
    (head, block), that hold ``blocks``: head 0's blocks, then head 1's, ..."""
    heads, num_blocks = cache.shape[:2]
    offsets = torch.arange(heads, device=blocks.device)[:, None] * num_blocks
    return (offsets + blocks.flatten()).flatten()


def gather(
    cache: torch.Tensor, rows: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``[len(rows), block_size * D]``: one index_select over the leading axis of the
    (head, block) flattened cache, each block one row. On CPU selecting from the
    ``[rows, block_size, D]`` view is up to 3x slower, advanced indexing 4x, and an
    index_select on the block axis 7x."""
    _, _, block_size, head_dim = cache.shape
    return torch.index_select(cache.view(-1, block_size * head_dim), 0, rows, out=out)


def gathered_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, d: DecodeBatch
) -> torch.Tensor:
    """The torch path of decode attention, ``[Bd, H, D]``: gather the batch's blocks (into
    buffers the step's layers share), then two batched matrix products."""
    bsz, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[0]
    # Each KV head's query group takes the place of the query-length axis, so GQA
    # needs no repeated K/V: [Hkv, Bd, group, D] against [Hkv, Bd, S, D].
    q = q.view(bsz, num_kv_heads, num_heads // num_kv_heads, head_dim).transpose(0, 1)
    if d.rows is None:
        d.rows = cache_rows(k_cache, d.block_tables)
    d.keys = gather(k_cache, d.rows, out=d.keys)
    d.values = gather(v_cache, d.rows, out=d.values)
    keys = d.keys.view(num_kv_heads, bsz, -1, head_dim)
    values = d.values.view(num_kv_heads, bsz, -1, head_dim)
    assert d.bias is not None
    scores = (q @ keys.transpose(-1, -2)).float() * head_dim**-0.5 + d.bias
    out = scores.softmax(dim=-1).to(values.dtype) @ values  # [Hkv, Bd, group, D]
    return out.transpose(0, 1).reshape(bsz, num_heads, head_dim)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    layer: int,
    meta: AttentionMetadata,
) -> torch.Tensor:
    """Causal attention of each new token over its own sequence; returns ``[T, H * D]``.

    q is ``[T, num_heads, head_dim]``; k and v ``[T, num_kv_heads, head_dim]``. The new
    K/V are written into the cache first.
    """
    if meta.decode_kernel:
        paged_kernel.load().write_kv(kv_cache, layer, k, v, meta.slot_mapping)
    else:
        write_kv(kv_cache, layer, k, v, meta.slot_mapping)
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    k_cache, v_cache = kv_cache[0, layer], kv_cache[1, layer]
    out = torch.empty(num_tokens, num_heads * head_dim, dtype=q.dtype, device=q.device)

    for d in meta.decodes:
        qd = q if d.token_idx is None else q[d.token_idx]
        if d.kv_lens is None:
            od = gathered_decode(qd, k_cache, v_cache, d)
        else:
            qd = qd.contiguous()
            # where every token is a decode the kernel writes the step's output in place
            od = out.view(q.shape) if d.token_idx is None else torch.empty_like(qd)
            paged_kernel.load().decode_attention(
                qd, k_cache, v_cache, d.block_tables, d.kv_lens, od, head_dim**-0.5
            )
            if d.token_idx is None:
                continue
        od = od.reshape(len(od), num_heads * head_dim)
        if d.token_idx is None:
            out.copy_(od)
        else:
            out[d.token_idx] = od

    gqa = num_kv_heads != num_heads
    for p in meta.prefills:
        rows = slice(p.start, p.start + p.query_len)
        # SDPA's fast CPU kernels want 4-D inputs: [1, heads, len, D].
        qp = q[rows].transpose(0, 1)[None]
        if p.mask is None:
            kp, vp = k[rows].transpose(0, 1), v[rows].transpose(0, 1)
        else:
            kv_len = p.context_len + p.query_len
            held = cache_rows(k_cache, p.blocks)
            kp = gather(k_cache, held).view(num_kv_heads, -1, head_dim)[:, :kv_len]
            vp = gather(v_cache, held).view(num_kv_heads, -1, head_dim)[:, :kv_len]
        kp, vp = kp[None], vp[None]
        op = F.scaled_dot_product_attention(
            qp, kp, vp, attn_mask=p.mask, is_causal=p.mask is None, enable_gqa=gqa
        )
        out[rows] = op[0].transpose(0, 1).reshape(p.query_len, num_heads * head_dim)
    return out
