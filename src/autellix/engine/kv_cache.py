"""The paged KV cache's bookkeeping: blocks, ref counts, prefix caching, swap space.

Only ids live here; the executor owns the tensors. A full block whose tokens are
computed is keyed by a hash chained over the blocks before it, so a later call with
the same prefix reuses it. Freed blocks keep their hash and stay findable until the
allocator needs them, least recently freed first.

KV retention pins a live program's blocks after its call finishes: a pinned block with
no user is in neither free list, so the allocator cannot take it, until the pin ends:
its TTL passes (`expire`), its program's next call is scheduled (`returned` marks the pin
back when that call arrives and keeps only the blocks its prompt begins with, `claim`
ends it when the call takes its blocks), the program ends (`end_program`), or the memory
is needed (`evict_pin`, which the batch fitter calls once the free lists are empty, for a
higher-ranked call or one that would lose KV).
With host retention an evicted pin's idle blocks are first copied to the swap pool,
where a later call finds them by hash (engine/host_copies.py), and so are a finished
call's blocks that would be pinned while memory is short (`write_to_host`). Every block
is in exactly one state: free, cached and free (LRU), pinned and idle, or held by calls
(`check_states`).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autellix.engine.host_copies import HostCopies

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
    freed_at: int = 0  # when its last user let it go, counted in frees


@dataclass
class Pin:
    """A live program's cached blocks, kept from eviction until `expires`."""

    program_id: str
    block_ids: set[int]
    expires: float
    back_at: float  # when the program is expected back (-inf: it is, and waits to run)
    rank: tuple  # the policy's rank of the call that left them (larger: lower priority)
    back: bool = False  # its program's next call arrived; the pin holds until it runs


@dataclass
class PinStats:
    made: int = 0
    expired: int = 0
    evicted: int = 0  # ended early for a higher-ranked call's memory
    ended: int = 0  # their program ended
    hit: int = 0  # its program's next call arrived while the pin held
    hit_blocks: int = 0  # pinned blocks that call's prompt begins with
    to_host: int = 0  # blocks of evicted pins copied to host memory
    from_host: int = 0  # of those, blocks a later call copied back instead of recomputing


class BlockManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        num_swap_blocks: int,
        prefix_caching: bool = True,
        host_retention: bool = False,
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
        self.pins: dict[str, Pin] = {}  # by program
        self.pin_of: dict[int, str] = {}  # block -> the program whose pin holds it
        self.pinned: set[int] = set()  # pinned blocks no call holds (neither free nor used)
        self.pin_stats = PinStats()
        self.host_retention = host_retention  # evicted pins are copied to the swap pool
        self.host = HostCopies()
        self.queried_by_kind: dict[str | None, list[int]] = {}  # kind -> [queried, hit]
        self._frees = itertools.count()

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

    def match_prefix(self, tokens: Seq[int], hashes: list[int] | None = None) -> list[int]:
        """Cached blocks holding the leading full blocks of `tokens`, taken (ref counted).
        At least one token is always left to compute, so the last block of an exactly
        block-aligned prompt is not matched. `hashes`: the chained hashes of `tokens`'
        leading blocks known so far (a call's `block_hashes`), extended in place."""
        matched: list[int] = []
        if not self.prefix_caching:
            return matched
        for h in self.lookup_hashes(tokens, [] if hashes is None else hashes):
            block_id = self.by_hash.get(h)
            if block_id is None:
                break
            self._take(block_id)
            matched.append(block_id)
        return matched

    def lookup_hashes(self, tokens: Seq[int], hashes: list[int]) -> Iterator[int]:
        """The chained hashes of the full blocks of `tokens` a lookup may match (all but
        a last token), lazily: lookups stop at the first miss. Those not in `hashes` yet
        are computed and appended: a call's are computed once in its life, for lookups
        and for caching its blocks."""
        size = self.block_size
        for i in range((len(tokens) - 1) // size):
            if i == len(hashes):
                parent = hashes[-1] if hashes else None
                hashes.append(block_hash(parent, tokens[i * size : (i + 1) * size]))
            yield hashes[i]

    def count_lookup(self, num_tokens: int, num_hit: int, kind: str | None = None) -> None:
        self.queried_tokens += num_tokens
        self.hit_tokens += num_hit
        if kind not in self.queried_by_kind and len(self.queried_by_kind) >= MAX_KINDS:
            kind = "other"  # classes come from clients: keep the label set bounded
        counts = self.queried_by_kind.setdefault(kind, [0, 0])
        counts[0] += num_tokens
        counts[1] += num_hit

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
                    held = self.program_blocks[program_id]
                    held.discard(block_id)
                    if not held:  # a program that never ends (one anonymous call) leaves none
                        del self.program_blocks[program_id]
                block.users.clear()
            self.blocks[block_id].ref_count = 1
            out.append(block_id)
        return out

    def free(self, block_ids: Seq[int], program_id: str | None = None) -> None:
        blocks, pin_of = self.blocks, self.pin_of
        if program_id is not None:  # the program has held its cached blocks
            cached = [b for b in block_ids if blocks[b].hash is not None]
            if cached:
                self.program_blocks.setdefault(program_id, set()).update(cached)
                for block_id in cached:
                    blocks[block_id].users.add(program_id)
        # tail blocks first, so eviction takes the ends of prefixes before their heads
        for block_id in reversed(block_ids):
            block = blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                block.freed_at = next(self._frees)
                if block_id in pin_of:
                    self.pinned.add(block_id)
                elif block.hash is None:
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
        if full <= call.num_hashed_blocks:  # no block filled since
            return
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
        """A program ended: its pin goes, and the cached blocks no live program has held go
        to the front of eviction, ahead of every block a live program may come back for, in
        the order they were freed (by content and time, never by block id)."""
        if self.unpin(program_id, front=True):
            self.pin_stats.ended += 1
        self.free_swap(self.host.drop(program_id))
        held = self.program_blocks.pop(program_id, ())
        for block_id in sorted(held, key=lambda b: self.blocks[b].freed_at, reverse=True):
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
            if block_id in self.pinned:
                self.pinned.remove(block_id)
            else:
                del self.cached_free[block_id]
        block.ref_count += 1

    # --- retention pins ---------------------------------------------------------------

    @property
    def num_pinned(self) -> int:
        """Pinned blocks no call holds: what evicting every pin would free."""
        return len(self.pinned)

    def pin(
        self, program_id: str, block_ids: Seq[int], expires: float, back_at: float, rank: tuple
    ) -> None:
        """Keep the program's cached blocks from eviction until `expires` (a second call of
        the same program joins its pin). Blocks another program's pin holds stay there."""
        pin = self.pins.get(program_id)
        if pin is None:
            pin = self.pins[program_id] = Pin(program_id, set(), expires, back_at, rank)
            self.pin_stats.made += 1
        else:
            pin.expires = max(pin.expires, expires)
            pin.back_at = min(pin.back_at, back_at)
            pin.rank = min(pin.rank, rank)
        for block_id in block_ids:
            block = self.blocks[block_id]
            if block.hash is None or block_id in self.pin_of:
                continue
            self.pin_of[block_id] = program_id
            pin.block_ids.add(block_id)
            if block.ref_count == 0:
                del self.cached_free[block_id]
                self.pinned.add(block_id)

    def unpin(self, program_id: str, front: bool = False) -> bool:
        """End the program's pin: its idle blocks become cached and free, at the front of
        eviction or (default) as the most recently used, tails of prefixes to go before
        their heads (in the order they were freed, never by block id). False: it had none."""
        pin = self.pins.pop(program_id, None)
        if pin is None:
            return False
        self._release(pin.block_ids, front)
        return True

    def _release(self, block_ids: set[int], front: bool) -> None:
        freed_at = lambda b: self.blocks[b].freed_at  # noqa: E731
        for block_id in sorted(block_ids, key=freed_at, reverse=front):
            del self.pin_of[block_id]
            if block_id in self.pinned:
                self.pinned.remove(block_id)
                self.cached_free[block_id] = None
                self.cached_free.move_to_end(block_id, last=not front)

    def returned(self, program_id: str, prompt_hashes: Iterable[int]) -> None:
        """The program's next call arrived, its prompt's full blocks named by
        `prompt_hashes` (lazily): the pinned blocks its prompt begins with are held, with no
        time limit and last in line for `evict_pin`, until that call takes them (`claim`);
        the rest become the most recently used. Released at arrival instead, the blocks
        were LRU's while the call queued, and under memory pressure they were gone before
        it ran (docs/benchmarks.md, "KV retention")."""
        pin = self.pins.get(program_id)
        if pin is None or pin.back:
            return
        by_hash = {self.blocks[b].hash: b for b in pin.block_ids}
        used = {by_hash[h] for h in itertools.takewhile(by_hash.__contains__, prompt_hashes)}
        self._release(pin.block_ids - used, front=False)
        pin.block_ids = used
        self.pin_stats.hit += 1
        self.pin_stats.hit_blocks += len(used)
        pin.back, pin.expires, pin.back_at = True, math.inf, -math.inf

    def claim(self, program_id: str) -> list[int]:
        """The program's returned call took its blocks (or left without running): the pin
        has done its work; its blocks no call holds become the most recently used, and its
        host copies go. Returns their swap ids, for the caller to free once no copy of this
        round can still read or write them."""
        pin = self.pins.get(program_id)
        if pin is not None and pin.back:
            self.unpin(program_id)
        return self.host.drop(program_id)

    def expire(self, now: float) -> None:
        """End the pins and host copies whose time has passed (between rounds)."""
        for pin in [p for p in self.pins.values() if p.expires <= now]:
            self.unpin(pin.program_id)
            self.pin_stats.expired += 1
        for program_id in self.host.expired(now):
            self.free_swap(self.host.drop(program_id))

    def evict_pin(self, may_evict: Callable[[Pin], bool]) -> list[tuple[int, int]] | None:
        """End the pin that is first to evict among those `may_evict` allows and that
        hold idle blocks: the program expected back latest (Belady: the block needed
        furthest ahead goes first), then the lowest ranked. Its blocks go to the front of
        eviction; with host retention, copied first to the swap pool (`to_host`). Returns
        the (device, host) copies to make before the blocks are reused; None: no such pin."""
        candidates = [
            p
            for p in self.pins.values()
            if may_evict(p) and not self.pinned.isdisjoint(p.block_ids)
        ]
        if not candidates:
            return None
        victim = max(candidates, key=lambda p: (p.back_at, p.rank))
        copies = self.to_host(victim) if self.host_retention else []
        self.unpin(victim.program_id, front=True)
        self.pin_stats.evicted += 1
        return copies

    @property
    def host_room(self) -> int:
        """Swap blocks retention may still fill: half the pool, the rest kept for
        preempted calls."""
        return min(len(self.free_swap_ids), self.num_swap_blocks // 2 - len(self.host))

    def to_host(self, pin: Pin) -> list[tuple[int, int]]:
        """Index the pin's idle blocks as host copies, prefix heads first (a block's tail
        is freed before its head), while retention's half of the swap pool has room."""
        idle = [
            (self.blocks[b].freed_at, b, h)
            for b in pin.block_ids
            if b in self.pinned and (h := self.blocks[b].hash) is not None
            if h not in self.host.by_hash
        ]
        heads_first = sorted(idle, reverse=True)[: max(self.host_room, 0)]
        return self._index_on_host(pin.program_id, [(b, h) for _, b, h in heads_first], pin.expires)

    def write_to_host(
        self, program_id: str, block_ids: Seq[int], expires: float
    ) -> list[tuple[int, int]] | None:
        """Index a finished call's cached blocks (left cached and free, in LRU order) as
        host copies of its program until `expires`; None, indexing nothing, if
        retention's half of the swap pool cannot take them all. Returns the (device, host)
        copies, to make before any of the blocks is reused."""
        blocks = [
            (b, h)
            for b in block_ids
            if (h := self.blocks[b].hash) is not None and h not in self.host.by_hash
        ]
        if len(blocks) > self.host_room:
            return None
        return self._index_on_host(program_id, blocks, expires)

    def _index_on_host(
        self, program_id: str, blocks: Seq[tuple[int, int]], expires: float
    ) -> list[tuple[int, int]]:
        """(block id, hash) pairs get swap ids and go into the host index."""
        swap_ids = [self.free_swap_ids.pop() for _ in blocks]
        pairs = list(zip(blocks, swap_ids, strict=True))
        self.host.add(program_id, [(h, s) for (_, h), s in pairs], expires)
        self.pin_stats.to_host += len(pairs)
        return [(b, s) for (b, _), s in pairs]

    def match_host(
        self, tokens: Seq[int], skip: int, hashes: list[int] | None = None
    ) -> list[tuple[int, int]]:
        """Host copies of the full blocks of `tokens` that follow its first `skip` (found
        on the device), as (hash, swap id), up to the first block not there. Like
        `match_prefix`, one token is always left to compute."""
        found: list[tuple[int, int]] = []
        if not self.host.by_hash:
            return found
        hashes = [] if hashes is None else hashes
        for h in itertools.islice(self.lookup_hashes(tokens, hashes), skip, None):
            swap_id = self.host.by_hash.get(h)
            if swap_id is None:
                break
            found.append((h, swap_id))
        return found

    def take_host(self, found: Seq[tuple[int, int]]) -> list[int]:
        """A call copies these host copies back: out of the index; their swap ids, to free
        after this round's copies."""
        self.pin_stats.from_host += len(found)
        return self.host.take([h for h, _ in found])

    def check_idle(self) -> None:
        """Raise unless every block and swap block is free or pinned (no call holds any)."""
        held = [b.block_id for b in self.blocks if b.ref_count]
        if held or self.num_free + self.num_pinned != self.num_blocks:
            raise AssertionError(f"KV blocks still held: {held[:10]}")
        if len(self.free_swap_ids) + len(self.host) != self.num_swap_blocks:
            raise AssertionError("swap blocks still held")

    def check_states(self) -> None:
        """Raise unless every block is in exactly one state (free, cached and free, pinned
        and idle, held by calls) and the pins and hashes agree with the blocks."""
        states = [
            set(self.free_ids),
            set(self.cached_free),
            self.pinned,
            {b.block_id for b in self.blocks if b.ref_count > 0},
        ]
        if sum(len(s) for s in states) != self.num_blocks or len(self.free_ids) != len(states[0]):
            raise AssertionError("a block is in two states, or in none")
        if any(b.ref_count < 0 for b in self.blocks):
            raise AssertionError("a negative ref count")
        if not self.pinned <= set(self.pin_of):
            raise AssertionError("an idle pinned block belongs to no pin")
        for program_id, pin in self.pins.items():
            if any(self.pin_of.get(b) != program_id for b in pin.block_ids):
                raise AssertionError(f"pin of {program_id} disagrees with pin_of")
        if sum(len(p.block_ids) for p in self.pins.values()) != len(self.pin_of):
            raise AssertionError("pin_of holds a block of no pin")
        if any(self.blocks[b].hash != h for h, b in self.by_hash.items()):
            raise AssertionError("the hash index disagrees with the blocks")
        if any(self.blocks[b].hash is not None for b in self.free_ids):
            raise AssertionError("a free block keeps a hash")
        if not set(self.free_swap_ids).isdisjoint(self.host.by_hash.values()):
            raise AssertionError("a host copy's swap block is free")


MAX_KINDS = 64  # program classes counted apart in prefix-cache statistics
