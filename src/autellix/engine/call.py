"""A call inside the engine: its tokens, KV blocks, progress and output text."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch

from autellix.engine.output_text import OutputText
from autellix.engine.sampling_params import SamplingParams
from autellix.scheduling import CallState


@dataclass(frozen=True)
class TokenLogprobs:
    """One output token's log-probability and the likeliest alternatives (id, logprob)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    rank: int = 1  # 1 + how many tokens were likelier


class Status(enum.Enum):
    WAITING = "waiting"  # not started, or preempted by recompute (no KV held)
    RUNNING = "running"  # KV on the device
    SWAPPED = "swapped"  # preempted; KV in the host swap pool
    FINISHED = "finished"


@dataclass(eq=False)
class Call(CallState):
    token_ids: list[int] = field(default_factory=list)  # prompt, then output
    num_prompt_tokens: int = 0
    params: SamplingParams = field(default_factory=SamplingParams)
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    swap_table: list[int] = field(default_factory=list)  # host blocks while swapped
    num_computed: int = 0  # tokens whose KV is in the cache
    num_hashed_blocks: int = 0  # leading blocks registered in the prefix cache
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of full blocks
    num_cached_prompt_tokens: int = 0  # prefix-cache hits at the first prefill
    generator: torch.Generator | None = None
    matcher: Any = None  # the grammar's state (xgrammar) when the output is structured
    logprobs: list[TokenLogprobs] = field(default_factory=list)  # when params.logprobs is set
    prompt_logprobs: list[TokenLogprobs] = field(default_factory=list)  # of prompt tokens 1..
    output: OutputText = field(default_factory=OutputText)
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string it ended on

    @property
    def text(self) -> str:
        return self.output.text

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_decode(self) -> bool:
        return self.num_computed > 0 and self.num_uncomputed == 1
