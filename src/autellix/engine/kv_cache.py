"""The paged KV cache's bookkeeping: blocks, ref counts, prefix caching, swap space.

Only ids live here; the executor owns the tensors. A full block whose tokens are
computed is keyed by a hash chained over the blocks before it, so a later call with
the same prefix reuses it. Freed blocks keep their hash and stay findable until the
allocator needs them, least recently freed first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autellix.engine.call import Call


class CacheFull(RuntimeError):
    pass


def block_hash(parent: int | None, tokens: Seq[int]) -> int:
    return hash((parent, tuple(tokens)))


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    users: set[str] = field(default_factory=set)  # live programs whose calls held it


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, num_swap_blocks: int, prefix_caching: bool = True
    ) -> None:
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives 0 first
        self.cached_free: OrderedDict[int, None] = OrderedDict()  # free, hashed; LRU order
        self.by_hash: dict[int, int] = {}
        self.free_swap_ids: list[int] = list(range(num_swap_blocks - 1, -1, -1))
        self.num_swap_blocks = num_swap_blocks
        self.hit_tokens = 0  # prefix-cache statistics
        self.queried_tokens = 0
        self.program_blocks: dict[str, set[int]] = {}  # cached blocks each program has held
        self.released_blocks = 0  # cached blocks moved to the front of eviction by end_program

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free_ids) + len(self.cached_free)

    @property
    def num_free_swap(self) -> int:
        return len(self.free_swap_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def match_prefix(self, tokens: Seq[int]) -> list[int]:
        """Cached blocks holding the leading full blocks of `tokens`, taken (ref counted).
        At least one token is always left to compute, so the last block of an exactly
        block-aligned prompt is not matched."""
        matched: list[int] = []
        if not self.prefix_caching:
            return matched
        parent = None
        full = (len(tokens) - 1) // self.block_size
        for i in range(full):
            parent = block_hash(parent, tokens[i * self.block_size : (i + 1) * self.block_size])
            block_id = self.by_hash.get(parent)
            if block_id is None:
                break
            self._take(block_id)
            matched.append(block_id)
        return matched

    def count_lookup(self, num_tokens: int, num_hit: int) -> None:
        self.queried_tokens += num_tokens
        self.hit_tokens += num_hit

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise CacheFull(f"{n} blocks wanted, {self.num_free} free")
        out = []
        for _ in range(n):
            if self.free_ids:
                block_id = self.free_ids.pop()
            else:  # evict the cached block at the front: ended programs', then LRU
                block_id, _ = self.cached_free.popitem(last=False)
                block = self.blocks[block_id]
                if block.hash is not None:
                    del self.by_hash[block.hash]
                block.hash = None
                for program_id in block.users:
                    self.program_blocks[program_id].discard(block_id)
                block.users.clear()
            self.blocks[block_id].ref_count = 1
            out.append(block_id)
        return out

    def free(self, block_ids: Seq[int], program_id: str | None = None) -> None:
        # tail blocks first, so eviction takes the ends of prefixes before their heads
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            if program_id is not None and block.hash is not None:
                block.users.add(program_id)
                self.program_blocks.setdefault(program_id, set()).add(block_id)
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is None:
                    self.free_ids.append(block_id)
                else:
                    self.cached_free[block_id] = None
            elif block.ref_count < 0:
                raise RuntimeError(f"block {block_id} freed twice")

    def cache_full_blocks(self, call: Call) -> None:
        """Make the call's newly full and computed blocks findable by prefix."""
        if not self.prefix_caching:
            return
        size = self.block_size
        full = call.num_computed // size
        hashes = call.block_hashes
        while len(hashes) < full:
            i = len(hashes)
            hashes.append(
                block_hash(
                    hashes[-1] if hashes else None, call.token_ids[i * size : (i + 1) * size]
                )
            )
        for i in range(call.num_hashed_blocks, full):
            self.register(call.block_table[i], hashes[i])
        call.num_hashed_blocks = max(call.num_hashed_blocks, full)

    def register(self, block_id: int, h: int) -> None:
        """Block `block_id` is full and computed: make it findable by its chained hash."""
        if not self.prefix_caching or self.blocks[block_id].hash is not None:
            return
        if h in self.by_hash:  # same content computed twice; keep the first
            return
        self.blocks[block_id].hash = h
        self.by_hash[h] = block_id

    def end_program(self, program_id: str) -> None:
        """A program ended: the cached blocks no live program has held go to the front of
        eviction, ahead of every block a live program may come back for."""
        for block_id in self.program_blocks.pop(program_id, ()):
            block = self.blocks[block_id]
            block.users.discard(program_id)
            if not block.users and block_id in self.cached_free:
                self.cached_free.move_to_end(block_id, last=False)
                self.released_blocks += 1

    def allocate_swap(self, n: int) -> list[int] | None:
        if n > len(self.free_swap_ids):
            return None
        return [self.free_swap_ids.pop() for _ in range(n)]

    def free_swap(self, swap_ids: Seq[int]) -> None:
        self.free_swap_ids.extend(swap_ids)

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.cached_free[block_id]
        block.ref_count += 1

    def check_idle(self) -> None:
        """Raise unless every block and swap block is free (no call holds any)."""
        held = [b.block_id for b in self.blocks if b.ref_count]
        if held or self.num_free != self.num_blocks:
            raise AssertionError(f"KV blocks still held: {held[:10]}")
        if len(self.free_swap_ids) != self.num_swap_blocks:
            raise AssertionError("swap blocks still held")
