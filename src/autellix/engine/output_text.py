"""A call's output text: cut at its stop strings, and held back while it could still
become one, so that no part of a stop string is ever sent (vLLM's semantics).

Generation stops at the first token after which a stop string appears anywhere in the
text; the text is cut before that occurrence (or after it, with
``include_stop_str_in_output``). A stop string may span any number of tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HALF_CHARACTER = "\ufffd"  # a multi-byte character whose rest is in the next token
Decode = Callable[[Sequence[int]], str]


def decoder(tokenizer: Any) -> Decode:
    """Token ids to text without special tokens. A fast tokenizer's Rust backend is called
    directly: transformers' decode wraps it in type checks that cost 3x the decode itself
    per token (benchmarks/step_overhead.py)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def find_stop(text: str, stops: Sequence[str], start: int) -> tuple[int, str] | None:
    """The earliest stop string in `text` that ends after `text[:start]` (the shortest one
    where two begin at the same place): (where it begins, the string)."""
    hits = [(i, s) for s in stops if (i := text.find(s, max(0, start - len(s) + 1))) >= 0]
    return min(hits, key=lambda hit: (hit[0], len(hit[1])), default=None)


def partial_stop(text: str, stops: Sequence[str]) -> int:
    """How many of the last characters of `text` are the beginning of some stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


@dataclass
class OutputText:
    """What a call has said so far, and how much of it has been sent."""

    stops: tuple[str, ...] = ()
    include_stop: bool = False
    text: str = ""
    sent: int = 0  # characters of `text` already handed out
    decoded: str = ""  # the output decoded so far (whole characters only until final)
    prefix_offset: int = 0  # ids[prefix_offset:read_offset] decode to the last piece
    read_offset: int = 0  # (both start where the call's output starts)

    def decode(self, decode: Decode, ids: Sequence[int], end: int, final: bool) -> str:
        """The text of the output in `ids[:end]`, decoding only what is new, as vLLM does:
        the last piece is decoded again with the new tokens, so that a token whose text
        depends on the one before it (a leading space, half a character) comes out as the
        whole decode would give it. Linear in the output's length, not quadratic."""
        p, r = self.prefix_offset, self.read_offset
        before, after = decode(ids[p:r]), decode(ids[p:end])
        if len(after) > len(before) and (final or not after.endswith(HALF_CHARACTER)):
            self.decoded += after[len(before) :]
            self.prefix_offset, self.read_offset = r, end
        return self.decoded

    def update(self, text: str, check_stops: bool, final: bool) -> tuple[str, str | None]:
        """Take the call's whole text after a new token; return the text to send now and
        the stop string it reached, if any (the call's text is then cut there)."""
        if text.endswith(HALF_CHARACTER) and not final:
            return "", None
        if not self.stops:  # nothing to find or hold back
            self.text = text
            new, self.sent = text[self.sent :], max(self.sent, len(text))
            return new, None
        start, self.text = len(self.text), text
        stop = None
        if check_stops and (hit := find_stop(text, self.stops, start)) is not None:
            at, stop = hit
            self.text = text[: at + len(stop) if self.include_stop else at]
        end = len(self.text)
        if stop is None and not final and not self.include_stop:
            end -= partial_stop(self.text, self.stops)
        new = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return new, stop
