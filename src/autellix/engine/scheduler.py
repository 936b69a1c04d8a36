"""One scheduling round of the engine: the policy orders, this fits the batch in memory.

The policy's scan (`select_batch`) asks `fits` for each call in priority order;
`fits` gives the call its token budget and KV blocks. Running calls that fall out of
the batch by priority are preempted but keep their KV blocks on the device
("resident"): resuming them costs nothing, and most priority preemptions never need
the memory back. When blocks run out, `fits` evicts the lowest-ranked running or
resident call the scan has not reached (never for a waiting call under a
non-preemptive policy), and a running call that finds no memory to grow into is
evicted itself: their blocks are swapped to host memory (one batched copy per round,
done by the executor before the step) or dropped for recompute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autellix.engine.config import EngineConfig
from autellix.engine.kv_cache import BlockManager
from autellix.engine.sequence import Sequence, Status
from autellix.scheduling import Policy, select_batch


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)  # tokens to compute, per sequence
    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (device, host) blocks
    swap_in: list[tuple[int, int]] = field(default_factory=list)  # (host, device) blocks
    evicted: list[Sequence] = field(default_factory=list)  # KV blocks left the device

    @property
    def is_decode_only(self) -> bool:
        return all(n == 1 and s.is_decode for s, n in zip(self.seqs, self.num_new, strict=True))


class Scheduler:
    def __init__(self, config: EngineConfig, policy: Policy, blocks: BlockManager) -> None:
        self.config = config
        self.policy = policy
        self.blocks = blocks
        self.num_preemptions = 0  # running calls that fell out of a batch
        self.num_evictions = 0  # calls whose KV blocks left the device (swap or drop)
        self.computed_tokens = 0  # tokens run through the model so far (prompts and outputs)
        self.resident: dict[str, Sequence] = {}  # preempted, KV still on the device
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self._last: ScheduledBatch | None = None
        self._steps_since_round = 0

    def remove(self, seq: Sequence, now: float) -> None:
        """A call finished or was aborted: release everything it holds."""
        self.policy.remove(seq, now)
        self.resident.pop(seq.call_id, None)
        self.blocks.free(seq.block_table)
        self.blocks.free_swap(seq.swap_table)
        seq.block_table, seq.swap_table = [], []
        self._last = None

    def schedule(self, now: float) -> ScheduledBatch:
        reuse = self._last is not None and self._steps_since_round < self.config.schedule_every
        if reuse and (batch := self._continue_decodes()) is not None:
            self._steps_since_round += 1
        else:
            batch = self._round(now)
            self._last = batch if batch.seqs and batch.is_decode_only else None
            self._steps_since_round = 1
        self.computed_tokens += sum(batch.num_new)
        return batch

    def _continue_decodes(self) -> ScheduledBatch | None:
        """Multi-step: run the last decode batch again without a round, if it can grow."""
        last = self._last
        assert last is not None
        if any(s.status is not Status.RUNNING or not s.is_decode for s in last.seqs):
            return None
        growth = [
            self.blocks.blocks_for(s.num_computed + 1) - len(s.block_table) for s in last.seqs
        ]
        if sum(growth) > self.blocks.num_free:
            return None
        for seq, n in zip(last.seqs, growth, strict=True):
            seq.block_table += self.blocks.allocate(n)
        return ScheduledBatch(list(last.seqs), [1] * len(last.seqs))

    def _round(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = [self.config.max_prefill_tokens]
        planned: dict[str, int] = {}
        scanned: set[str] = set()
        evicted: set[str] = set()
        short: set[str] = set()  # running calls that found no memory to grow into
        swap_freed: list[int] = []

        def fits(seq: Sequence) -> bool:
            if seq.call_id in evicted:
                return False
            scanned.add(seq.call_id)
            matched: list[int] = []
            if seq.status is Status.WAITING:
                matched = self.blocks.match_prefix(seq.token_ids)
            computed = len(matched) * self.blocks.block_size if matched else seq.num_computed
            n_new = seq.num_tokens - computed
            prefill = not seq.is_decode
            if prefill:
                left = budget[0]
                untouched = left == self.config.max_prefill_tokens
                if left == 0 or (n_new > left and not (self.config.chunked_prefill or untouched)):
                    self.blocks.free(matched)
                    return False
                if self.config.chunked_prefill:
                    n_new = min(n_new, left)
            # a swapped call's blocks come back into fresh device blocks, so count them
            need = self.blocks.blocks_for(computed + n_new) - len(seq.block_table) - len(matched)
            while self.blocks.num_free < need:
                victim = self._victim(seq, scanned, evicted)
                if victim is None:
                    self.blocks.free(matched)
                    short.add(seq.call_id)
                    return False
                evicted.add(victim.call_id)
                self._evict(victim, batch)
            new_blocks = self.blocks.allocate(need)
            if seq.status is Status.SWAPPED:
                k = len(seq.swap_table)
                batch.swap_in += zip(seq.swap_table, new_blocks[:k], strict=True)
                self.swapped_in_blocks += k
                swap_freed.extend(seq.swap_table)
                seq.swap_table = []
            elif seq.status is Status.WAITING:
                seq.num_computed = computed
                seq.num_hashed_blocks = len(matched)
                self.blocks.count_lookup(seq.num_tokens, computed)
                if seq.service == 0:
                    seq.num_cached_prompt_tokens = computed
            if prefill:
                budget[0] -= n_new
            seq.block_table = matched + seq.block_table + new_blocks
            seq.status = Status.RUNNING
            planned[seq.call_id] = n_new
            return True

        chosen, preempted = select_batch(self.policy, now, self.config.max_running, fits)
        self.num_preemptions += len(preempted)
        if self.resident:
            for seq in chosen:
                self.resident.pop(seq.call_id, None)
        for seq in preempted:
            if seq.call_id in short or not self.config.keep_preempted:
                evicted.add(seq.call_id)
                self._evict(seq, batch)  # type: ignore[arg-type]
            elif seq.call_id not in evicted:
                self.resident[seq.call_id] = seq  # type: ignore[index]
        self.blocks.free_swap(swap_freed)  # only now: this round's swap-outs may not reuse them
        batch.seqs = chosen  # type: ignore[assignment]
        batch.num_new = [planned[s.call_id] for s in chosen]
        return batch

    def _victim(self, seq: Sequence, scanned: set[str], evicted: set[str]) -> Sequence | None:
        """The lowest-ranked call holding device blocks (running or resident) that the
        scan has not reached, if `seq` may evict."""
        if not (self.policy.preemptive or seq.running):
            return None
        candidates = [
            c
            for c in [*self.policy.running.values(), *self.resident.values()]
            if c.call_id not in scanned and c.call_id not in evicted and c is not seq
        ]
        return max(candidates, key=self.policy.rank_key, default=None)  # type: ignore[return-value]

    def _evict(self, seq: Sequence, batch: ScheduledBatch) -> None:
        """Free a call's device blocks: swap them to host memory, or drop them."""
        self.num_evictions += 1
        self.resident.pop(seq.call_id, None)
        swap_ids = None
        if self.config.preemption == "swap":
            swap_ids = self.blocks.allocate_swap(len(seq.block_table))
        if swap_ids is not None:
            batch.swap_out += zip(seq.block_table, swap_ids, strict=True)
            self.swapped_out_blocks += len(swap_ids)
            seq.swap_table = swap_ids
            seq.status = Status.SWAPPED
        else:  # recompute (or the swap pool is full)
            seq.num_computed = 0
            seq.num_hashed_blocks = 0
            seq.status = Status.WAITING
        self.blocks.free(seq.block_table)
        seq.block_table = []
        batch.evicted.append(seq)
