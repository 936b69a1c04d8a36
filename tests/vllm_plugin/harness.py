"""vLLM's real V1 scheduler, built without a model runner: calls are vLLM `Request`s, each
step's output is made up (one token per call that finished its prompt), time is a fake
clock. Runs in the vLLM environment only (`make test-vllm`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from vllm import SamplingParams
from vllm.config import (
    CacheConfig,
    DeviceConfig,
    ModelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
)
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from autellix.vllm_scheduler import PROGRAM_ARG, AutellixScheduler

BLOCK = 16
TOKEN = 100  # what every made-up step samples: not an end-of-sequence token
HASH = get_hash_fn_by_name("sha256")
init_none_hash(HASH)
BLOCK_HASHER = get_request_block_hasher(BLOCK, HASH)
MODEL = os.environ.get("AUTELLIX_VLLM_MODEL") or os.path.expanduser(
    "~/.cache/autellix/models/SmolLM2-135M-Instruct"
)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Engine:
    """A scheduler and the clock it runs on; `step` is one schedule/update round."""

    scheduler: Scheduler
    clock: Clock
    step_seconds: float = 0.1
    served: list[list[str]] = field(default_factory=list)  # request ids per step
    _ids: int = 0

    def add(
        self, program: str | None = None, prompt: int = 20, tokens: int = 10, priority: int = 0
    ) -> str:
        self._ids += 1
        request_id = f"r{self._ids}"
        extra = {PROGRAM_ARG: program} if program is not None else None
        params = SamplingParams(max_tokens=tokens, ignore_eos=True, extra_args=extra)
        request = Request(
            request_id,
            [1 + (i + self._ids) % 50 for i in range(prompt)],
            params,
            None,
            arrival_time=self.clock.now,
            priority=priority,
            block_hasher=BLOCK_HASHER,
        )
        self.scheduler.add_request(request)
        return request_id

    def step(self) -> list[str]:
        out = self.scheduler.schedule()
        ids = list(out.num_scheduled_tokens)
        sampled = []
        for request_id in ids:
            request = self.scheduler.requests[request_id]
            prefilling = request.num_computed_tokens < request.num_tokens
            sampled.append([] if prefilling else [TOKEN])
        runner = ModelRunnerOutput(ids, {r: i for i, r in enumerate(ids)}, sampled)
        self.clock.now += self.step_seconds
        self.scheduler.update_from_output(out, runner)
        self.served.append(ids)
        return ids

    def run(self, until: Callable[[], bool], limit: int = 500) -> None:
        for _ in range(limit):
            if until():
                return
            self.step()
        raise AssertionError("did not happen within the step limit")

    def done(self, request_id: str) -> bool:
        return request_id not in self.scheduler.requests

    def running(self) -> set[str]:
        return {r.request_id for r in self.scheduler.running}


def build(
    cls: type[Scheduler], max_num_seqs: int = 1, num_blocks: int = 256, autellix: dict | None = None
) -> Engine:
    model = ModelConfig(model=MODEL, dtype="float32", max_model_len=2048, skip_tokenizer_init=True)
    sched = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=2048,
        max_model_len=2048,
        is_encoder_decoder=False,
    )
    cache = CacheConfig(block_size=BLOCK, cache_dtype="auto", enable_prefix_caching=True)
    cache.num_gpu_blocks = num_blocks
    config = VllmConfig(
        model_config=model,
        scheduler_config=sched,
        cache_config=cache,
        device_config=DeviceConfig("cpu"),
        additional_config={"autellix": autellix or {}},
    )
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=16, dtype=torch.float32)
    kv = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)],
    )
    clock = Clock()
    if issubclass(cls, AutellixScheduler):
        cls = type("TimedScheduler", (cls,), {"clock": staticmethod(clock)})
    scheduler = cls(config, kv, StructuredOutputManager(config), block_size=BLOCK)
    return Engine(scheduler, clock)
