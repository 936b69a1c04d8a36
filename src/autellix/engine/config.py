"""Engine settings, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from autellix.flags import check_fields
from autellix.scheduling import SchedulingConfig, check_settings
from autellix.scheduling.retention import RetentionConfig


@dataclass
class EngineConfig:
    # Field metadata makes the command-line flags (autellix/flags.py): "help" is the flag's
    # help text, "flag" another name for it (None: no flag), "negate" a flag that says the
    # opposite of the field, "unit" a flag in units of that many of the field's, "group" the
    # help section, "min", "above" and "max" the bounds of a number.
    model: str | None = field(
        default=None,  # None: the embedded default (SmolLM2)
        metadata={
            "help": "Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)"
        },
    )
    dtype: Literal["float32", "bfloat16"] = field(
        default="float32", metadata={"help": "the model's weights and KV cache"}
    )
    device: str = field(default="cpu", metadata={"flag": None})
    linear_kernel: Literal["auto", "onednn", "torch"] = field(
        default="auto",
        metadata={
            "help": "the linear layers' kernel: oneDNN on packed weights, read by our C++"
            " kernel for products of 1-4 rows where it builds (auto, on a CPU), oneDNN"
            " alone (onednn) or torch's own (MKL on a CPU)"
        },
    )
    attention_kernel: Literal["auto", "paged", "torch"] = field(
        default="auto",
        metadata={
            "help": "decode attention and the layers' elementwise ops: C++ kernels built for"
            " this CPU on first use, attention reading the paged KV cache in place, norms,"
            " rotary embedding and activation fused (paged; auto where they build), or"
            " torch's gather, batched matrix products and ops (torch)"
        },
    )
    policy: str = field(
        default="gittins",  # fcfs | mlfq | plas | atlas | gittins | srpt
        metadata={
            "group": "scheduling",
            "help": "fcfs: first come, first served (as vLLM); mlfq: a call's own attained"
            " service (FastServe's multi-level feedback queue); gittins: a call's rank is its"
            " program's Gittins index given the service it"
            " has had, under the sizes learned per program kind (least attained service where"
            " sizes are heavy-tailed, nearly-done-first where they are alike); plas:"
            " program-level least attained service, a program's rank the sum of its calls'"
            " service; atlas ranks by the longest critical path instead (it favours fan-outs"
            " over chats)",
        },
    )
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)

    block_size: int = field(default=16, metadata={"help": "tokens per KV block", "min": 1})
    num_kv_blocks: int | None = field(
        default=None,  # None: from kv_cache_bytes
        metadata={
            "help": "KV pool size in blocks (default: as many as --kv-cache-gib holds)",
            "min": 1,
        },
    )
    kv_cache_bytes: int = field(
        default=1 << 30,
        metadata={
            "flag": "--kv-cache-gib",
            "unit": 1 << 30,
            "help": "KV pool size in GiB",
            "above": 0,
        },
    )
    swap_blocks: int | None = field(
        default=None,  # None: twice the KV pool, as SGLang's --hicache-ratio 2 sizes its host pool
        metadata={"help": "host swap pool in blocks (default: twice the KV pool)", "min": 0},
    )
    preemption: Literal["swap", "recompute"] = field(
        default="swap",
        metadata={"help": "what a preempted call's KV does when its memory is needed"},
    )
    keep_preempted: bool = field(
        default=True,  # a call preempted by priority keeps its KV until needed
        metadata={
            "flag": "--evict-preempted",
            "negate": True,
            "help": "swap out (or drop) a call's KV as soon as it is preempted, not when memory"
            " is needed",
        },
    )
    prefix_caching: bool = field(default=True, metadata={"help": "prefix caching"})
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    max_running: int = field(default=32, metadata={"help": "calls in a batch", "min": 1})
    # A call's service for a step: the whole step time ("step", as the paper charges), or
    # its share by the tokens it computed ("share"), which does not grow with the batch.
    service_accounting: Literal["step", "share"] = field(
        default="step",
        metadata={
            "help": "a call's service for a step: the whole step time (step) or its share by"
            " the tokens it computed (share)"
        },
    )
    max_prefill_tokens: int = field(
        default=512,  # decodes are not counted
        metadata={"help": "prompt tokens per step", "min": 1},
    )
    chunked_prefill: bool = field(
        default=True,  # split prompts longer than what is left of the budget
        metadata={"help": "split a prompt over steps (off: prefill whole prompts only)"},
    )
    schedule_every: int = field(
        default=1,
        metadata={"help": "multi-step: a scheduling round every N decode steps", "min": 1},
    )
    max_model_len: int | None = field(
        default=None,  # None: the model's context length
        metadata={"help": "context length (default: the model's)", "min": 1},
    )
    max_waiting: int | None = field(
        default=None,  # None: unbounded; the server answers 429 beyond it
        metadata={
            "flag": None,
            "help": "calls queued in this engine before it refuses more",
            "min": 1,
        },
    )

    def __post_init__(self) -> None:
        check_fields(self)
        kept, default = self.retention, RetentionConfig()
        if not kept.enabled and (kept.host, kept.max_ttl) != (default.host, default.max_ttl):
            raise ValueError(
                "--kv-retention-host and --kv-retention-max-ttl apply only with --kv-retention"
            )
        check_settings(self.policy, self.scheduling)

    def swap_pool(self, num_kv_blocks: int) -> int:
        """The host swap pool in blocks, for a KV pool of `num_kv_blocks`."""
        return 2 * num_kv_blocks if self.swap_blocks is None else self.swap_blocks
