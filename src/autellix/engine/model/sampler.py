"""The sampler that turns logits into next tokens, and a call's random stream.

Stop strings, ``min_tokens`` and end-of-sequence handling are the engine's business; only
the logit masking that ``min_tokens`` needs lives here (:func:`suppress_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from autellix.engine.sampling_params import SamplingParams


def make_generator(
    params: SamplingParams, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    """The call's own random stream when seeded (create once per call, reuse each step)."""
    if params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def suppress_tokens(logits: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Set ``logits[i, rows[i]]`` to -inf in place (e.g. EOS / stop ids before min_tokens)."""
    for i, ids in enumerate(rows):
        if ids:
            logits[i, list(ids)] = -math.inf
    return logits


def penalize(
    logits: torch.Tensor, rows: Sequence[tuple[SamplingParams, Sequence[int], int]]
) -> torch.Tensor:
    """In place, as vLLM does: each row's logit bias, then its repetition penalty over the
    call's prompt and output tokens, then its frequency and presence penalties over its
    output. `rows` holds (params, token ids, prompt length) per row of `logits`."""
    for i, (params, token_ids, num_prompt) in enumerate(rows):
        if not params.penalized:
            continue
        row = logits[i]
        for token, bias in params.logit_bias:
            row[token] += bias
        if params.repetition_penalty != 1:
            seen = torch.tensor(sorted(set(token_ids)), device=row.device)
            values = row[seen]
            r = params.repetition_penalty
            row[seen] = torch.where(values > 0, values / r, values * r)
        if params.frequency_penalty or params.presence_penalty:
            output = torch.tensor(token_ids[num_prompt:], device=row.device, dtype=torch.long)
            counts = torch.bincount(output, minlength=row.shape[0])[: row.shape[0]].to(row.dtype)
            row -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
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
