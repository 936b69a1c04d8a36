"""A step's batch, and how one scheduling round fits calls into it.

The policy's scan (`select_batch`) asks `BatchFitter.fits` for each call in priority
order; `fits` gives the call its token budget and KV blocks. When blocks run out it
evicts the lowest-ranked call holding device blocks that the scan has not reached
(never for a waiting call under a non-preemptive policy), and a running call that
finds no memory to grow into is marked short (the scheduler evicts it). Evicted
blocks are swapped to host memory (one batched copy per round, done by the executor
before the step) or dropped for recompute.

Retention pins (see kv_cache) give way before any call's blocks do: a call may end the
pin of a program that ranks below it, and any pin rather than lose a call's KV (its own
or another's); the first call a round takes may end any pin, so pins never leave the
engine idle while calls wait. An ended pin's blocks may first be copied to host memory,
where a later call finds them and copies them back (`fits` matches the device, then the
host). A waiting call that takes its blocks claims its program's pin (`BlockManager.claim`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from autellix.engine.call import Call, Status
from autellix.engine.config import EngineConfig
from autellix.engine.kv_cache import BlockManager


@dataclass
class ScheduledBatch:
    calls: list[Call] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)  # tokens to compute, per call
    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (device, host) blocks
    swap_in: list[tuple[int, int]] = field(default_factory=list)  # (host, device) blocks
    evicted: list[Call] = field(default_factory=list)  # KV blocks left the device

    @property
    def is_decode_only(self) -> bool:
        return all(n == 1 and c.is_decode for c, n in zip(self.calls, self.num_new, strict=True))


@dataclass(frozen=True)
class StepShape:
    """What a step asks of the executor: tokens to compute, sequences in the batch, and
    context tokens attended (every sequence reads its whole KV so far). A simulated
    executor's step time is a function of it (sim/latency.py)."""

    new_tokens: int  # tokens computed this step (prefill chunks + one per decode)
    num_seqs: int
    context_tokens: int  # KV tokens attended, summed over sequences (incl. new ones)
    attention_pairs: float  # query-key pairs, summed over sequences

    @classmethod
    def of(cls, batch: ScheduledBatch) -> StepShape:
        """Before the batch's tokens are marked computed."""
        new = ctx = 0
        pairs = 0.0
        for seq, n in zip(batch.calls, batch.num_new, strict=True):
            end = seq.num_computed + n
            new += n
            ctx += end
            pairs += n * (seq.num_computed + (n + 1) / 2)
        return cls(new, len(batch.calls), ctx, pairs)

    def decoded(self, steps: int) -> StepShape:
        """The same decode-only batch `steps` steps later: one more token of context per
        sequence per step."""
        grown = steps * self.num_seqs
        return StepShape(
            self.new_tokens,
            self.num_seqs,
            self.context_tokens + grown,
            self.attention_pairs + grown,
        )


class BatchFitter:
    """One round's budget: tokens to prefill and KV blocks, handed out call by call."""

    def __init__(
        self,
        config: EngineConfig,
        blocks: BlockManager,
        holders: Sequence[Mapping[str, Call]],
        rank_key: Callable[[Call], tuple],
        preemptive: bool,
    ) -> None:
        self.config = config
        self.blocks = blocks
        self.holders = holders  # calls holding device blocks by id: eviction candidates
        self.rank_key = rank_key
        self.preemptive = preemptive
        self.batch = ScheduledBatch()
        self.prefill_left = config.max_prefill_tokens
        self.planned: dict[str, int] = {}  # tokens to compute, per call taken
        self.scanned: set[str] = set()
        self.evicted: set[str] = set()
        self.short: set[str] = set()  # running calls that found no memory to grow into
        self.swap_freed: list[int] = []
        self.blocked_by_pins: set[str] = set()  # calls that would have fit without pins

    def fits(self, call: Call) -> bool:
        if call.call_id in self.evicted:
            return False
        self.scanned.add(call.call_id)
        room = len(call.block_table) * self.blocks.block_size > call.num_computed
        if room and call.status is Status.RUNNING and call.is_decode:
            self.planned[call.call_id] = 1  # the common case: a decode that fits its last block
            return True
        lookup = call.status is Status.WAITING and call.params.prompt_logprobs is None
        matched, host = [], []
        if lookup:
            matched = self.blocks.match_prefix(call.token_ids, call.block_hashes)
            host = self.blocks.match_host(call.token_ids, len(matched), call.block_hashes)
        found = len(matched) + len(host)
        computed = found * self.blocks.block_size if found else call.num_computed
        n_new = self._tokens(call, call.num_tokens - computed)
        # swapped blocks (a call's, or host copies) come back into fresh device blocks
        need = self.blocks.blocks_for(computed + n_new) - len(call.block_table) - len(matched)
        if n_new == 0 or not self._make_room(call, need):
            self.blocks.free(matched)
            return False
        self._take(call, matched, host, computed, n_new, self.blocks.allocate(need))
        return True

    def evict(self, call: Call) -> None:
        """Free a call's device blocks: swap them to host memory, or drop them."""
        self.evicted.add(call.call_id)
        swap_ids = None
        if self.config.preemption == "swap":
            swap_ids = self.blocks.allocate_swap(len(call.block_table))
        if swap_ids is not None:
            self.batch.swap_out += zip(call.block_table, swap_ids, strict=True)
            call.swap_table = swap_ids
            call.status = Status.SWAPPED
        else:  # recompute (or the swap pool is full)
            call.num_computed = 0
            call.num_hashed_blocks = 0
            call.status = Status.WAITING
        self.blocks.free(call.block_table, call.program_id)
        call.block_table = []
        self.batch.evicted.append(call)

    def finish(self, chosen: list[Call]) -> ScheduledBatch:
        # only now: this round's swap-outs may not reuse the blocks swapped in
        self.blocks.free_swap(self.swap_freed)
        self.batch.calls = chosen
        self.batch.num_new = [self.planned[c.call_id] for c in chosen]
        return self.batch

    def _tokens(self, call: Call, n_new: int) -> int:
        """Tokens the call may compute this round (0: none; decodes are not budgeted)."""
        if call.is_decode:
            return n_new
        left = self.prefill_left
        untouched = left == self.config.max_prefill_tokens
        if left == 0 or (n_new > left and not (self.config.chunked_prefill or untouched)):
            return 0
        return min(n_new, left) if self.config.chunked_prefill else n_new

    def _make_room(self, call: Call, need: int) -> bool:
        while self.blocks.num_free < need:
            copies = self._end_a_pin(call)
            if copies is not None:
                self.batch.swap_out += copies
                continue
            victim = self._victim(call)
            if victim is None:
                if self.blocks.num_free + self.blocks.num_pinned >= need:
                    self.blocked_by_pins.add(call.call_id)
                self.short.add(call.call_id)
                return False
            self.evict(victim)
        return True

    def _end_a_pin(self, call: Call) -> list[tuple[int, int]] | None:
        """End a pin to make room for `call`: one of a lower-ranked program or its own; any
        if the round has taken no call yet (else pins could leave the engine idle), or if
        the alternative loses a call's KV, which is certain to be needed where a pin's only
        may be: `call` holds device blocks (it would be evicted), or the room would come
        from evicting another call. Returns the pin's copies to host memory
        (kv_cache.evict_pin); None: no pin ended."""
        if not self.blocks.pins:
            return None
        anyone = bool(call.block_table) or not self.planned or self._victim(call) is not None
        rank = self.rank_key(call)
        return self.blocks.evict_pin(
            lambda pin: anyone or pin.program_id == call.program_id or pin.rank > rank
        )

    def _victim(self, call: Call) -> Call | None:
        """The lowest-ranked call holding device blocks that the scan has not reached,
        if `call` may evict."""
        if not (self.preemptive or call.running):
            return None
        candidates = [
            c
            for held in self.holders
            for c in held.values()
            if c.call_id not in self.scanned and c.call_id not in self.evicted and c is not call
        ]
        return max(candidates, key=self.rank_key, default=None)

    def _take(
        self,
        call: Call,
        matched: list[int],
        host: list[tuple[int, int]],
        computed: int,
        n_new: int,
        new_blocks: list[int],
    ) -> None:
        if not call.is_decode:
            self.prefill_left -= n_new
        if call.status is Status.SWAPPED:
            k = len(call.swap_table)
            self.batch.swap_in += zip(call.swap_table, new_blocks[:k], strict=True)
            self.swap_freed.extend(call.swap_table)
            call.swap_table = []
        elif call.status is Status.WAITING:
            copied = self.blocks.take_host(host)
            self.batch.swap_in += zip(copied, new_blocks, strict=False)
            for (h, _), block_id in zip(host, new_blocks, strict=False):
                self.blocks.register(block_id, h)
            # freed after the round: this round's copies may still read or write them
            self.swap_freed += copied + self.blocks.claim(call.program_id)
            call.num_computed = computed
            call.num_hashed_blocks = len(matched) + len(host)
            self.blocks.count_lookup(call.num_tokens, computed, call.program.kind)
            if call.service == 0:
                call.num_cached_prompt_tokens = computed
        call.block_table = matched + call.block_table + new_blocks
        call.status = Status.RUNNING
        self.planned[call.call_id] = n_new
