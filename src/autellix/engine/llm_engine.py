"""The engine: add_request / step / abort over a scheduler, a block manager and an executor."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from autellix.engine.config import EngineConfig
from autellix.engine.executor import Executor, ModelExecutor
from autellix.engine.kv_cache import BlockManager, block_hash
from autellix.engine.model.sampler import SamplingParams
from autellix.engine.output_text import OutputText
from autellix.engine.scheduler import Scheduler
from autellix.engine.sequence import Sequence, Status
from autellix.programs import ProgramSnapshot
from autellix.scheduling import make_policy


class RequestError(ValueError):
    """A call the engine cannot take (too long, too large for the pool, bad input)."""


class QueueFull(RuntimeError):
    """The waiting queue is at its bound; try again later."""


@dataclass(frozen=True)
class EngineInfo:
    """An engine's limits: what decides whether a call can ever be served."""

    max_model_len: int
    num_kv_blocks: int
    block_size: int

    def check(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        if num_prompt_tokens == 0:
            raise RequestError("the prompt is empty")
        total = num_prompt_tokens + params.max_tokens
        if total > self.max_model_len:
            raise RequestError(
                f"prompt ({num_prompt_tokens} tokens) + max_tokens ({params.max_tokens}) = "
                f"{total} exceeds the model's context of {self.max_model_len} tokens"
            )
        blocks = -(-total // self.block_size)
        if blocks > self.num_kv_blocks:
            raise RequestError(
                f"a call of {total} tokens needs {blocks} KV blocks; "
                f"the pool has {self.num_kv_blocks}"
            )


@dataclass
class RequestOutput:
    call_id: str
    program_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool = False
    finish_reason: str | None = None  # stop | length | abort
    stop_reason: int | str | None = None  # the stop token id or stop string, as vLLM says
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    waiting: float = 0.0  # the call's own waiting and service, final when finished
    service: float = 0.0


class LLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        executor: Executor,
        tokenizer: Any = None,
        eos_token_ids: tuple[int, ...] = (),
        max_model_len: int | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = config.max_model_len or max_model_len or 1 << 30
        self.blocks = BlockManager(
            executor.num_blocks,
            executor.block_size,
            executor.num_swap_blocks,
            config.prefix_caching,
        )
        self.policy = make_policy(config.policy, config.scheduling)
        self.scheduler = Scheduler(config, self.policy, self.blocks)
        self.seqs: dict[str, Sequence] = {}
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        """Load the model (the embedded default when `config.model` is None)."""
        from autellix.engine.model import default_model_path, load_model

        folder = config.model or default_model_path()
        dtype = getattr(torch, config.dtype)
        model, tokenizer, cfg = load_model(folder, dtype, config.device)
        bytes_per_block = (
            2
            * cfg.num_layers
            * config.block_size
            * cfg.num_kv_heads
            * cfg.head_dim
            * torch.finfo(dtype).bits
            // 8
        )
        num_blocks = config.num_kv_blocks or max(1, config.kv_cache_bytes // bytes_per_block)
        swap = num_blocks if config.swap_blocks is None else config.swap_blocks
        eos = cfg.eos_token_ids or ((tokenizer.eos_token_id,) if tokenizer.eos_token_id else ())
        executor = ModelExecutor(model, config.block_size, num_blocks, swap, eos)
        return cls(config, executor, tokenizer, eos, cfg.max_position_embeddings)

    # --- requests -----------------------------------------------------------------

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        call_id: str | None = None,
        program_id: str | None = None,
        program: ProgramSnapshot | None = None,
        remaining_work: float = math.inf,
    ) -> Sequence:
        params = params or SamplingParams()
        token_ids = self.encode(prompt)
        call_id = call_id or f"call-{next(self._ids)}"
        self.validate(len(token_ids), params)
        if call_id in self.seqs:
            raise RequestError(f"call {call_id!r} is already in the engine")
        if self.config.max_waiting is not None and self.num_waiting >= self.config.max_waiting:
            raise QueueFull(f"{self.num_waiting} calls are waiting (the bound)")
        now = self.executor.clock()
        seq = Sequence(
            call_id,
            program_id or call_id,
            now,
            program or ProgramSnapshot(),
            prompt_tokens=len(token_ids),
            remaining_work=remaining_work,
            token_ids=list(token_ids),
            num_prompt_tokens=len(token_ids),
            params=params,
            generator=params.make_generator(),
            output=OutputText(params.stop, params.include_stop_str_in_output),
        )
        self.seqs[call_id] = seq
        self.policy.add(seq, now)
        return seq

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise RequestError("this engine has no tokenizer: send token ids")
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        return list(prompt)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.max_model_len, self.blocks.num_blocks, self.blocks.block_size)

    def validate(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        self.info.check(num_prompt_tokens, params)

    def abort(self, call_id: str) -> RequestOutput | None:
        seq = self.seqs.get(call_id)
        if seq is None:
            return None
        seq.finish_reason = "abort"
        return self._finish(seq, [], "")

    # --- the step -------------------------------------------------------------------

    def has_unfinished(self) -> bool:
        return bool(self.seqs)

    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule(self.executor.clock())
        if not batch.seqs and not batch.swap_out:
            return []
        tokens, elapsed = self.executor.execute(batch)
        share = self.config.service_accounting == "share"
        per_token = elapsed / max(1, sum(batch.num_new)) if share else 0.0
        outputs = []
        for seq, n, token in zip(batch.seqs, batch.num_new, tokens, strict=True):
            self.policy.add_service(seq, per_token * n if share else elapsed)
            seq.num_computed += n
            self._register_blocks(seq)
            if token is not None:
                outputs.append(self._append_token(seq, token))
        return outputs

    def generate(
        self, prompts: list[str | list[int]], params: SamplingParams | None = None
    ) -> list[Sequence]:
        """Run prompts to completion (offline use and tests)."""
        seqs = [self.add_request(p, params) for p in prompts]
        while self.has_unfinished():
            self.step()
        return seqs

    # --- stats ------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self.policy) - len(self.policy.running)

    @property
    def num_swapped(self) -> int:
        return sum(1 for s in self.seqs.values() if s.status is Status.SWAPPED)

    def kv_usage(self) -> float:
        return 1 - self.blocks.num_free / self.blocks.num_blocks

    def stats(self) -> dict[str, Any]:
        """What /metrics shows of this engine."""
        return {
            "queue_lengths": self.policy.queue_lengths(),
            "running": len(self.policy.running),
            "waiting": self.num_waiting,
            "swapped": self.num_swapped,
            "preemptions": self.scheduler.num_preemptions,
            "evictions": self.scheduler.num_evictions,
            "swap_out_bytes": self.scheduler.swapped_out_blocks * self.executor.bytes_per_block,
            "swap_in_bytes": self.scheduler.swapped_in_blocks * self.executor.bytes_per_block,
            "kv_usage": self.kv_usage(),
            "num_kv_blocks": self.blocks.num_blocks,
            "prefix_queried_tokens": self.blocks.queried_tokens,
            "prefix_hit_tokens": self.blocks.hit_tokens,
            "computed_tokens": self.scheduler.computed_tokens,
        }

    def check_idle(self) -> None:
        """Raise unless the engine holds no call, no KV block and no swap block."""
        if self.seqs or len(self.policy):
            raise AssertionError(f"calls left: {list(self.seqs)[:5]}")
        self.blocks.check_idle()

    # --- internals --------------------------------------------------------------------

    def _register_blocks(self, seq: Sequence) -> None:
        """Make the call's newly full and computed blocks findable by prefix."""
        if not self.config.prefix_caching:
            return
        size = self.blocks.block_size
        full = seq.num_computed // size
        while len(seq.block_hashes) < full:
            i = len(seq.block_hashes)
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            seq.block_hashes.append(block_hash(parent, seq.token_ids[i * size : (i + 1) * size]))
        for i in range(seq.num_hashed_blocks, full):
            self.blocks.register(seq.block_table[i], seq.block_hashes[i])
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)

    def _append_token(self, seq: Sequence, token: int) -> RequestOutput:
        params = seq.params
        seq.token_ids.append(token)
        reason = None
        if token in params.stop_token_ids or (
            not params.ignore_eos and token in self.eos_token_ids
        ):
            reason = "stop"
            seq.stop_reason = token if token in params.stop_token_ids else None
        elif seq.num_output_tokens >= params.max_tokens:
            reason = "length"
        new_text = ""
        if self.tokenizer is not None:
            drop_last = reason == "stop" and not params.include_stop_str_in_output
            ids = seq.output_ids[:-1] if drop_last else seq.output_ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            check_stops = seq.num_output_tokens >= params.min_tokens
            new_text, stop = seq.output.update(text, check_stops, final=reason is not None)
            if stop is not None:
                reason, seq.stop_reason = "stop", stop
        if reason:
            seq.finish_reason = reason
            return self._finish(seq, [token], new_text)
        return self._output(seq, [token], new_text)

    def _finish(self, seq: Sequence, new_ids: list[int], new_text: str) -> RequestOutput:
        self.scheduler.remove(seq, self.executor.clock())
        seq.status = Status.FINISHED
        del self.seqs[seq.call_id]
        return self._output(seq, new_ids, new_text)

    def _output(self, seq: Sequence, new_ids: list[int], new_text: str) -> RequestOutput:
        return RequestOutput(
            seq.call_id,
            seq.program_id,
            new_ids,
            new_text,
            finished=seq.status is Status.FINISHED,
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=seq.num_cached_prompt_tokens,
            waiting=seq.waited(self.executor.clock()),
            service=seq.service,
        )
