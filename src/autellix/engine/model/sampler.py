"""Per-call sampling parameters and the sampler that turns logits into next tokens.

Stop strings, ``min_tokens`` and end-of-sequence handling are the engine's business; only
the logit masking that ``min_tokens`` needs lives here (:func:`suppress_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    """How one call samples. ``temperature == 0`` is greedy; ``top_k`` 0 or -1 is off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        self.stop_token_ids = tuple(self.stop_token_ids)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {p!r}")
        if not _is_int(self.top_k) or self.top_k < -1:
            raise ValueError(f"top_k must be an integer >= 1 (0 or -1: off), got {self.top_k!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"min_tokens must be an integer in [0, max_tokens={self.max_tokens}], "
                f"got {self.min_tokens!r}"
            )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if not all(_is_int(i) and i >= 0 for i in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be integers >= 0, got {self.stop_token_ids!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """The call's own random stream when seeded (create once per call, reuse each step)."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def suppress_tokens(logits: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Set ``logits[i, rows[i]]`` to -inf in place (e.g. EOS / stop ids before min_tokens)."""
    for i, ids in enumerate(rows):
        if ids:
            logits[i, list(ids)] = -math.inf
    return logits


class Sampler:
    """Next token per row: greedy, or temperature then top-k then top-p sampling.

    A seeded row draws only from its own generator, one fixed-size draw per step, so its
    tokens do not depend on which other calls share the batch.
    """

    def __call__(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        batch, vocab = logits.shape
        if len(params) != batch:
            raise ValueError(f"{batch} rows of logits but {len(params)} sampling params")
        generators = generators or [None] * batch
        tokens = logits.argmax(dim=-1)
        rows = [i for i, p in enumerate(params) if not p.greedy]
        if not rows:
            return tokens
        device = logits.device
        sel = [params[i] for i in rows]
        temperature = torch.tensor([p.temperature for p in sel], device=device)
        x = logits[rows].float() / temperature[:, None]
        if any(p.top_k > 0 or p.top_p < 1 for p in sel):
            top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in sel], device=device)
            top_p = torch.tensor([p.top_p for p in sel], device=device)
            x = _top_k_top_p(x, top_k, top_p)
        probs = x.softmax(dim=-1)
        # Exponential race: argmax(p / E) with E ~ Exp(1) is a draw from p.
        noise = torch.empty_like(probs)
        unseeded = [j for j, i in enumerate(rows) if generators[i] is None]
        if unseeded:
            noise[unseeded] = torch.empty(len(unseeded), vocab, device=device).exponential_()
        for j, i in enumerate(rows):
            if generators[i] is not None:
                noise[j].exponential_(generator=generators[i])
        tokens[rows] = (probs / noise).argmax(dim=-1)
        return tokens


def _top_k_top_p(x: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask to -inf all but each row's top_k logits, then all outside its top_p mass."""
    sorted_x, order = x.sort(dim=-1, descending=True)
    ranks = torch.arange(x.shape[-1], device=x.device)
    drop = ranks[None, :] >= top_k[:, None]
    sorted_x = sorted_x.masked_fill(drop, -math.inf)
    probs = sorted_x.softmax(dim=-1)
    # Drop a token when the tokens ranked above it already reach top_p (the first never).
    drop |= (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
    sorted_x = sorted_x.masked_fill(drop, -math.inf)
    return torch.full_like(x, -math.inf).scatter(-1, order, sorted_x)
