"""How one call samples: its settings and their validation. Torch-free, so the server
and the policies can use it without loading the model stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StructuredOutput:
    """A grammar the call's output must follow, enforced as a token mask: a JSON schema
    (`spec` is its JSON text), any JSON object, or an xgrammar structural tag (`spec` is
    its JSON text; tool calls use one)."""

    kind: Literal["json_schema", "json_object", "structural_tag"]
    spec: str = ""


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
    structured: StructuredOutput | None = None
    logprobs: int | None = None  # log-probabilities of the sampled token and this many others
    prompt_logprobs: int | None = None  # the same for each prompt token (no prefix cache then)
    priority: int | None = None  # the queue the call enters (lower first); None: the policy's
    # as vLLM and OpenAI define them: presence/frequency on the output so far, repetition on
    # prompt and output (divides positive logits, multiplies negative ones), bias per token
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()

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
        if self.priority is not None and not _is_int(self.priority):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not -2 <= v <= 2:
                raise ValueError(f"{name} must be in [-2, 2], got {v!r}")
        r = self.repetition_penalty
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r <= 10:
            raise ValueError(f"repetition_penalty must be in (0, 10], got {r!r}")
        self.logit_bias = tuple((int(t), float(b)) for t, b in self.logit_bias)
        if not all(t >= 0 and -100 <= b <= 100 for t, b in self.logit_bias):
            raise ValueError("logit_bias maps token ids >= 0 to biases in [-100, 100]")
        if self.structured is not None and self.min_tokens:
            raise ValueError("min_tokens cannot be combined with a structured output")
        for name in ("logprobs", "prompt_logprobs"):
            n = getattr(self, name)
            if n is not None and (not _is_int(n) or not 0 <= n <= 20):
                raise ValueError(f"{name} must be an integer in [0, 20], got {n!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if not all(_is_int(i) and i >= 0 for i in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be integers >= 0, got {self.stop_token_ids!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1
            or self.logit_bias
        )


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
