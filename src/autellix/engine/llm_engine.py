"""The engine: add_call / step / abort. A step is schedule -> execute -> update ->
detokenize: the scheduler owns the calls, the executor runs the model, and the engine
turns new tokens into text (stop strings end a call here)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from autellix.engine.call import Call, Status, TokenLogprobs
from autellix.engine.config import EngineConfig
from autellix.engine.executor import Executor, ModelExecutor, SimulatedExecutor
from autellix.engine.kv_cache import BlockManager
from autellix.engine.model.sampler import make_generator
from autellix.engine.output_text import OutputText, decoder
from autellix.engine.sampling_params import SamplingParams
from autellix.engine.scheduler import Scheduler
from autellix.engine.structured_output import GrammarError, StructuredOutputs
from autellix.programs import ProgramSnapshot
from autellix.scheduling import make_policy


class CallError(ValueError):
    """A call the engine cannot take (too long, too large for the pool, bad input)."""

    def __init__(self, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.code = code  # OpenAI's error code for it


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
            raise CallError("the prompt is empty")
        total = num_prompt_tokens + params.max_tokens
        if total > self.max_model_len:
            raise CallError(
                f"prompt ({num_prompt_tokens} tokens) + max_tokens ({params.max_tokens}) = "
                f"{total} exceeds the model's context of {self.max_model_len} tokens",
                code="context_length_exceeded",
            )
        blocks = -(-total // self.block_size)
        if blocks > self.num_kv_blocks:
            raise CallError(
                f"a call of {total} tokens needs {blocks} KV blocks; "
                f"the pool has {self.num_kv_blocks}"
            )


@dataclass
class CallOutput:
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
    logprobs: list[TokenLogprobs] | None = None  # of new_token_ids, when the call asked
    prompt_logprobs: list[TokenLogprobs] | None = None  # in the call's first output, if asked


def check_engine(config: EngineConfig) -> None:
    """Raise ValueError, before anything loads, where the engine could not serve: a kernel
    asked for by name (or a dtype) that cannot run on this machine (`auto` always
    resolves), a context longer than the model's, or a KV pool that cannot hold one call
    of the whole context (as vLLM refuses to start)."""
    from autellix.engine.model import default_model_path, load_config
    from autellix.engine.model.linear import resolve_kernel
    from autellix.engine.model.paged_kernel import resolve_attention

    cfg = load_config(config.model or default_model_path())
    dtype = getattr(torch, config.dtype)
    resolve_kernel(config.linear_kernel, config.device, dtype)
    group = cfg.num_heads // cfg.num_kv_heads
    resolve_attention(config.attention_kernel, config.device, dtype, cfg.head_dim, group)
    context = config.max_model_len or cfg.max_position_embeddings
    if context > cfg.max_position_embeddings:
        raise ValueError(
            f"--max-model-len {context} is longer than the model's context"
            f" ({cfg.max_position_embeddings} tokens)"
        )
    blocks = pool_blocks(config, cfg)
    if blocks * config.block_size < context:
        raise ValueError(
            f"the KV pool holds {blocks * config.block_size} tokens, fewer than one call of the"
            f" whole context ({context} tokens): raise --kv-cache-gib (or --num-kv-blocks), or"
            " lower --max-model-len"
        )


def pool_blocks(config: EngineConfig, cfg: Any) -> int:
    """The KV pool's blocks: --num-kv-blocks, or as many as --kv-cache-gib holds of model
    `cfg` (a LlamaConfig)."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    dtype = getattr(torch, config.dtype)
    bytes_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype.itemsize
    return max(1, config.kv_cache_bytes // (bytes_per_token * config.block_size))


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
        self._decode = decoder(tokenizer)
        self.max_model_len = config.max_model_len or max_model_len or 1 << 30
        self.blocks = BlockManager(
            executor.num_blocks,
            executor.block_size,
            executor.num_swap_blocks,
            config.prefix_caching,
            config.retention.enabled and config.retention.host,
        )
        self.policy = make_policy(config.policy, config.scheduling)
        self.scheduler = Scheduler(config, self.policy, self.blocks, eos_token_ids)
        self.structured = StructuredOutputs(tokenizer, executor.vocab_size, eos_token_ids)
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        """Load the model (the embedded default when `config.model` is None)."""
        from autellix.engine.model import default_model_path, load_model, paged_kernel

        folder = config.model or default_model_path()
        dtype = getattr(torch, config.dtype)
        model, tokenizer, cfg = load_model(folder, dtype, config.device, config.linear_kernel)
        num_blocks = pool_blocks(config, cfg)
        swap = config.swap_pool(num_blocks)
        eos = cfg.eos_token_ids or ((tokenizer.eos_token_id,) if tokenizer.eos_token_id else ())
        attention = paged_kernel.resolve_attention(
            config.attention_kernel,
            config.device,
            dtype,
            cfg.head_dim,
            cfg.num_heads // cfg.num_kv_heads,
        )
        if attention == "paged":  # decode attention and the layers' ops: one library
            model.kernels = paged_kernel.load()
        executor = ModelExecutor(model, config.block_size, num_blocks, swap, eos)
        return cls(config, executor, tokenizer, eos, cfg.max_position_embeddings)

    # --- calls --------------------------------------------------------------------

    def add_call(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        call_id: str | None = None,
        program_id: str | None = None,
        program: ProgramSnapshot | None = None,
        remaining_work: float = math.inf,
    ) -> Call:
        params = params or SamplingParams()
        token_ids = self.encode(prompt)
        call_id = call_id or f"call-{next(self._ids)}"
        self.validate(len(token_ids), params)
        if call_id in self.calls:
            raise CallError(f"call {call_id!r} is already in the engine")
        if self.config.max_waiting is not None and self.num_waiting >= self.config.max_waiting:
            raise QueueFull(f"{self.num_waiting} calls are waiting (the bound)")
        vocab = self.executor.vocab_size
        if vocab and any(t >= vocab for t, _ in params.logit_bias):
            raise CallError(f"logit_bias token ids must be in [0, {vocab})")
        matcher = self._matcher(params)
        now = self.executor.clock()
        call = Call(
            call_id,
            program_id or call_id,
            now,
            program or ProgramSnapshot(),
            prompt_tokens=len(token_ids),
            remaining_work=remaining_work,
            priority=params.priority,
            token_ids=list(token_ids),
            num_prompt_tokens=len(token_ids),
            params=params,
            generator=make_generator(params),
            output=OutputText(
                params.stop,
                params.include_stop_str_in_output,
                prefix_offset=len(token_ids),
                read_offset=len(token_ids),
            ),
            matcher=matcher,
        )
        self.scheduler.add(call, now)
        return call

    def _matcher(self, params: SamplingParams) -> Any:
        if params.structured is None:
            return None
        if self.tokenizer is None or not self.executor.vocab_size:
            raise CallError("structured output needs a model and its tokenizer")
        try:
            return self.structured.matcher(params.structured)
        except GrammarError as exc:
            raise CallError(str(exc)) from None

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise CallError("this engine has no tokenizer: send token ids")
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        return list(prompt)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.max_model_len, self.blocks.num_blocks, self.blocks.block_size)

    def validate(self, num_prompt_tokens: int, params: SamplingParams) -> None:
        self.info.check(num_prompt_tokens, params)

    @property
    def calls(self) -> dict[str, Call]:
        return self.scheduler.calls

    def abort(self, call_id: str) -> CallOutput | None:
        call = self.calls.get(call_id)
        if call is None:
            return None
        self.scheduler.finish(call, "abort", self.executor.clock())
        return self._output(call, [], "")

    def end_program(self, program_id: str) -> None:
        """The program will not come back: its cached KV blocks are evicted first."""
        self.blocks.end_program(program_id)
        self.scheduler.head_reuse.forget(program_id)

    # --- the step -------------------------------------------------------------------

    def has_unfinished(self) -> bool:
        return bool(self.calls)

    def step(self, every_token: bool = True) -> list[CallOutput]:
        """One step; the outputs of the calls that got a token (`every_token=False`, for a
        token-level engine: only of those that got their first or finished, which is all
        a simulator reads; with a tokenizer every call's text is checked for stop strings,
        so every output is returned)."""
        batch = self.scheduler.schedule(self.executor.clock())
        if not batch.calls and not batch.swap_out:
            return []
        out = self.executor.execute(batch)
        now = self.executor.clock()
        advanced = self.scheduler.update_from_output(
            batch, out.tokens, out.elapsed, now, out.logprobs, out.prompt_logprobs
        )
        if not every_token and self.tokenizer is None:
            advanced = [
                c for c in advanced if c.status is Status.FINISHED or c.num_output_tokens == 1
            ]
        return [self._detokenize(call, now) for call in advanced]

    def repeatable_step_times(self) -> list[float]:
        """Fast-forward, for a simulator: the times of the next steps while each would be
        one decode of every call held and change nothing else (`Scheduler.repeatable_steps`),
        the last of them the first to finish a call. Empty: run `step()`."""
        executor = self.executor
        if not isinstance(executor, SimulatedExecutor) or self.tokenizer is not None:
            return []  # only token-level engines in virtual time; stop strings need text
        self.scheduler.expire_before_round(executor.now)
        steps = self.scheduler.repeatable_steps()
        if not steps:
            return []
        times = executor.decode_times(list(self.policy.running.values()), steps)
        # a later round would end a pin or host copies once their time is up: stop before it
        ends = [pin.expires for pin in self.blocks.pins.values()]
        ends += self.blocks.host.expires.values()
        if ends:
            expires = min(ends)
            start, kept = executor.now, 0
            while kept < len(times) and start < expires:
                start += times[kept]
                kept += 1
            times = times[:kept]
        return times

    def repeat_steps(self, elapsed: list[float]) -> list[CallOutput]:
        """Run the first `len(elapsed)` steps `repeatable_step_times` gave at once, as that
        many `step()`s would; the outputs of the calls that finished (the others' outputs
        are their tokens, which a simulator does not read)."""
        executor = self.executor
        assert isinstance(executor, SimulatedExecutor)
        start = executor.now
        for seconds in elapsed:
            executor.advance(seconds)
        calls = self.scheduler.repeat(elapsed, executor.tokens, start)
        return [self._detokenize(call, executor.now) for call in calls]

    def generate(
        self, prompts: list[str | list[int]], params: SamplingParams | None = None
    ) -> list[Call]:
        """Run prompts to completion (offline use and tests)."""
        calls = [self.add_call(p, params) for p in prompts]
        while self.has_unfinished():
            self.step()
        return calls

    # --- stats ------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    @property
    def num_swapped(self) -> int:
        return sum(1 for c in self.calls.values() if c.status is Status.SWAPPED)

    def kv_usage(self) -> float:
        """The fraction of KV blocks calls hold: pinned blocks are counted apart."""
        return 1 - (self.blocks.num_free + self.blocks.num_pinned) / self.blocks.num_blocks

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
            "released_blocks": self.blocks.released_blocks,
            "computed_tokens": self.scheduler.computed_tokens,
            **self.retention_stats(),
        }

    def retention_stats(self) -> dict[str, Any]:
        """KV retention: pins now and so far, what they saved, what they cost others."""
        pins = self.blocks.pin_stats
        return {
            "pinned_blocks": self.blocks.num_pinned,
            "pins": len(self.blocks.pins),
            "pins_made": pins.made,
            "pins_expired": pins.expired,
            "pins_evicted": pins.evicted,
            "pins_ended": pins.ended,
            "pins_hit": pins.hit,
            "pin_hit_blocks": pins.hit_blocks,
            "retention_swap_out_bytes": pins.to_host * self.executor.bytes_per_block,
            "retention_swap_in_bytes": pins.from_host * self.executor.bytes_per_block,
            "host_copy_blocks": len(self.blocks.host),
            "pin_blocked_seconds": self.scheduler.pin_blocked_seconds,
            "prefix_by_kind": {
                kind or "": tuple(counts) for kind, counts in self.blocks.queried_by_kind.items()
            },
        }

    def check_idle(self) -> None:
        """Raise unless the engine holds no call, no KV block and no swap block."""
        if self.calls or len(self.policy):
            raise AssertionError(f"calls left: {list(self.calls)[:5]}")
        self.blocks.check_idle()

    # --- internals --------------------------------------------------------------------

    def _detokenize(self, call: Call, now: float) -> CallOutput:
        """The call's new token as text; a stop string found in it finishes the call."""
        params = call.params
        new_text = ""
        finished = call.status is Status.FINISHED
        if self.tokenizer is not None:
            drop_last = call.finish_reason == "stop" and not params.include_stop_str_in_output
            end = call.num_tokens - 1 if drop_last else call.num_tokens
            text = call.output.decode(self._decode, call.token_ids, end, final=finished)
            check_stops = call.num_output_tokens >= params.min_tokens
            new_text, stop = call.output.update(text, check_stops, final=finished)
            if stop is not None:
                call.stop_reason = stop
                if not finished:
                    self.scheduler.finish(call, "stop", now)
                else:
                    call.finish_reason = "stop"
        out = self._output(call, call.token_ids[-1:], new_text)
        if params.logprobs is not None:
            out.logprobs = call.logprobs[-1:]
        if params.prompt_logprobs is not None and call.num_output_tokens == 1:
            out.prompt_logprobs = call.prompt_logprobs
        return out

    def _output(self, call: Call, new_ids: list[int], new_text: str) -> CallOutput:
        return CallOutput(
            call.call_id,
            call.program_id,
            new_ids,
            new_text,
            finished=call.status is Status.FINISHED,
            finish_reason=call.finish_reason,
            stop_reason=call.stop_reason,
            num_prompt_tokens=call.num_prompt_tokens,
            num_output_tokens=call.num_output_tokens,
            num_cached_tokens=call.num_cached_prompt_tokens,
            waiting=call.waited(self.executor.clock()),
            service=call.service,
        )
