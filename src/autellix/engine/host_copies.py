"""Retained KV blocks copied to host memory: when their pin had to give way, or instead
of a pin while memory was short.

An evicted pin's idle blocks, or the blocks a finished call would have pinned, are
copied to the engine's host swap pool before the device reuses them; a later call whose
prompt continues into them (its program's next call, as a rule) finds them here by their
chained hash and copies them back instead of recomputing them (InferCept's "swap"
choice, KVFlow's host tier). The block manager owns the swap ids; this is only the
index. A program's copies go when its next call takes its blocks, when it ends, or when
they expire (at the pin's expiry, or the longest TTL for copies made instead of a pin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class HostCopies:
    by_hash: dict[int, int] = field(default_factory=dict)  # block hash -> swap id
    of_program: dict[str, set[int]] = field(default_factory=dict)  # program -> hashes
    program_of: dict[int, str] = field(default_factory=dict)  # hash -> program
    expires: dict[str, float] = field(default_factory=dict)  # program -> when its copies go

    def __len__(self) -> int:
        return len(self.by_hash)

    def add(self, program_id: str, copies: Sequence[tuple[int, int]], expires: float) -> None:
        """`copies`: (hash, swap id) of blocks not yet here."""
        if not copies:
            return
        hashes = self.of_program.setdefault(program_id, set())
        for h, swap_id in copies:
            self.by_hash[h] = swap_id
            self.program_of[h] = program_id
            hashes.add(h)
        self.expires[program_id] = max(self.expires.get(program_id, expires), expires)

    def take(self, hashes: Sequence[int]) -> list[int]:
        """Remove these copies from the index (a call copies them back): their swap ids."""
        ids = []
        for h in hashes:
            ids.append(self.by_hash.pop(h))
            program_id = self.program_of.pop(h)
            held = self.of_program[program_id]
            held.discard(h)
            if not held:
                del self.of_program[program_id], self.expires[program_id]
        return ids

    def drop(self, program_id: str) -> list[int]:
        """Remove all of the program's copies: their swap ids."""
        return self.take(list(self.of_program.get(program_id, ())))

    def expired(self, now: float) -> list[str]:
        return [p for p, at in self.expires.items() if at <= now]
