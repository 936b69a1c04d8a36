"""Engine settings, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from autellix.scheduling import SchedulingConfig


@dataclass
class EngineConfig:
    model: str | None = None  # a Hugging Face folder; None: the embedded default (SmolLM2)
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "cpu"
    policy: str = "plas"  # fcfs | mlfq | plas | atlas | gittins | srpt
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)

    block_size: int = 16  # tokens per KV block
    num_kv_blocks: int | None = None  # the KV pool; None: from kv_cache_bytes
    kv_cache_bytes: int = 1 << 30
    swap_blocks: int | None = None  # the host swap pool; None: as many as the KV pool
    preemption: Literal["swap", "recompute"] = "swap"
    keep_preempted: bool = True  # a call preempted by priority keeps its KV until needed
    prefix_caching: bool = True

    max_running: int = 32  # calls in one batch
    # A call's service for a step: the whole step time ("step", as the paper charges), or
    # its share by the tokens it computed ("share"), which does not grow with the batch.
    service_accounting: Literal["step", "share"] = "step"
    max_prefill_tokens: int = 512  # prompt tokens per step (decodes are not counted)
    chunked_prefill: bool = True  # split prompts longer than what is left of the budget
    schedule_every: int = 1  # multi-step: a scheduling round every N decode steps
    max_model_len: int | None = None  # None: the model's context length
    max_waiting: int | None = None  # None: unbounded; the server answers 429 beyond it

    def __post_init__(self) -> None:
        for name in ("block_size", "max_running", "max_prefill_tokens", "schedule_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError("num_kv_blocks must be at least 1")
        if self.service_accounting not in ("step", "share"):
            raise ValueError("service_accounting must be 'step' or 'share'")
        if self.preemption not in ("swap", "recompute"):
            raise ValueError("preemption must be 'swap' or 'recompute'")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be 'float32' or 'bfloat16'")
