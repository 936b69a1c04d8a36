"""Executors run one scheduled step: the real model, or a latency model in virtual time."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autellix.engine.batch import ScheduledBatch, StepShape
from autellix.engine.call import Call, TokenLogprobs
from autellix.engine.memory import keep_freed_memory
from autellix.engine.model.attention import AttentionMetadata, allocate_kv_cache
from autellix.engine.model.llama import LlamaForCausalLM
from autellix.engine.model.sampler import Sampler, penalize, suppress_tokens
from autellix.engine.structured_output import mask_logits


@dataclass
class StepOutput:
    """A step's result per call of the batch: its next token (None for a prefill chunk that
    does not reach the end of its tokens) and, where asked, that token's log-probabilities;
    and the step's executor time in seconds (each call in the batch is charged all of it)."""

    tokens: list[int | None]
    elapsed: float
    logprobs: list[TokenLogprobs | None] | None = None
    prompt_logprobs: dict[int, list[TokenLogprobs]] | None = None  # by row, where asked


class Executor(ABC):
    block_size: int
    num_blocks: int
    num_swap_blocks: int
    bytes_per_block: int = 0
    vocab_size: int = 0  # logits per row (0: this executor samples no real tokens)

    @abstractmethod
    def execute(self, batch: ScheduledBatch) -> StepOutput:
        """Swap blocks, then run the step."""

    def clock(self) -> float:
        return time.monotonic()


def tokens_to_sample(batch: ScheduledBatch) -> list[bool]:
    return [
        seq.num_computed + n == seq.num_tokens
        for seq, n in zip(batch.calls, batch.num_new, strict=True)
    ]


def swap_blocks(
    kv_cache: torch.Tensor,
    swap_cache: torch.Tensor,
    swap_out: list[tuple[int, int]],
    swap_in: list[tuple[int, int]],
    batched: bool,
) -> None:
    """Move a round's blocks (device, host) out and (host, device) in, all layers at once.

    Batched: one gather, one transfer and one scatter per direction, so the host link
    sees one large copy instead of one small copy per block; what an accelerator wants.
    On a CPU both pools are the same memory and the gather's extra pass costs more than
    it saves (benchmarks/swap.py), so there each block is copied straight to its place.
    """
    device = kv_cache.device
    if batched:
        if swap_out:
            dev, host = (torch.tensor(ids) for ids in zip(*swap_out, strict=True))
            swap_cache.index_copy_(3, host, kv_cache.index_select(3, dev.to(device)).cpu())
        if swap_in:
            host, dev = (torch.tensor(ids) for ids in zip(*swap_in, strict=True))
            kv_cache.index_copy_(3, dev.to(device), swap_cache.index_select(3, host).to(device))
        return
    for dev_id, host_id in swap_out:
        swap_cache[:, :, :, host_id].copy_(kv_cache[:, :, :, dev_id])
    for host_id, dev_id in swap_in:
        kv_cache[:, :, :, dev_id].copy_(swap_cache[:, :, :, host_id])


def token_logprobs(row: torch.Tensor, token: int | torch.Tensor, top: int) -> TokenLogprobs:
    """A token's log-probability in `row`, its rank, and the `top` likeliest tokens'."""
    values, ids = row.topk(top) if top else (row[:0], row[:0].long())
    alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    logprob = row[token]
    rank = int((row > logprob).sum()) + 1
    return TokenLogprobs(int(token), float(logprob), alternatives, rank)


class ModelExecutor(Executor):
    def __init__(
        self,
        model: LlamaForCausalLM,
        block_size: int,
        num_blocks: int,
        num_swap_blocks: int,
        eos_token_ids: tuple[int, ...],
    ) -> None:
        cfg = model.config
        dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.model = model
        self.vocab_size = cfg.vocab_size
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.num_swap_blocks = num_swap_blocks
        self.eos_token_ids = eos_token_ids
        self.paged_decode = model.kernels is not None  # decode attention in C++ too
        self.batched_swap = self.device.type != "cpu"
        if self.device.type == "cpu":
            keep_freed_memory()
        self.kv_cache = allocate_kv_cache(
            cfg.num_layers,
            num_blocks,
            block_size,
            cfg.num_kv_heads,
            cfg.head_dim,
            dtype,
            self.device,
        )
        self.bytes_per_block = self.kv_cache[:, :, :, 0].numel() * self.kv_cache.element_size()
        # Host swap pool: empty, not zeroed, so its pages cost memory only once used. Only
        # blocks copied out of the KV cache are ever read back, so no garbage is seen.
        self.swap_cache = torch.empty(
            (*self.kv_cache.shape[:3], max(num_swap_blocks, 1), *self.kv_cache.shape[4:]),
            dtype=dtype,
        )
        self.sampler = Sampler()

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        swap_blocks(self.kv_cache, self.swap_cache, swap_out, swap_in, self.batched_swap)

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> StepOutput:
        start = time.perf_counter()
        self.swap(batch.swap_out, batch.swap_in)
        if not batch.calls:
            return StepOutput([], time.perf_counter() - start)
        ids: list[int] = []
        positions: list[int] = []
        for seq, n in zip(batch.calls, batch.num_new, strict=True):
            ids += seq.token_ids[seq.num_computed : seq.num_computed + n]
            positions += range(seq.num_computed, seq.num_computed + n)
        meta = AttentionMetadata.build(
            [s.block_table for s in batch.calls],
            [s.num_computed for s in batch.calls],
            batch.num_new,
            self.block_size,
            self.device,
            self.paged_decode,
        )
        hidden = self.model(
            torch.tensor(ids, device=self.device),
            torch.tensor(positions, device=self.device),
            self.kv_cache,
            meta,
        )
        sample = tokens_to_sample(batch)
        rows = [i for i, s in enumerate(sample) if s]
        out = StepOutput([None] * len(batch.calls), 0.0)
        if rows:
            logits = self.model.compute_logits(hidden[meta.last_token_idx[rows]]).float()
            seqs = [batch.calls[i] for i in rows]
            asked = [j for j, s in enumerate(seqs) if s.params.logprobs is not None]
            raw = logits[asked].log_softmax(dim=-1) if asked else None  # before any mask
            penalize(logits, [(s.params, s.token_ids, s.num_prompt_tokens) for s in seqs])
            suppress_tokens(logits, [self._banned(s) for s in seqs])
            mask_logits(logits, [s.matcher for s in seqs])
            tokens = self.sampler(logits, [s.params for s in seqs], [s.generator for s in seqs])
            for i, token in zip(rows, tokens.tolist(), strict=True):
                out.tokens[i] = token
            if raw is not None:
                out.logprobs = [None] * len(batch.calls)
                for j, row in zip(asked, raw, strict=True):
                    i, top = rows[j], seqs[j].params.logprobs or 0
                    out.logprobs[i] = token_logprobs(row, tokens[j], top)
        out.prompt_logprobs = self._prompt_logprobs(batch, hidden, meta)
        out.elapsed = time.perf_counter() - start
        return out

    def _prompt_logprobs(
        self, batch: ScheduledBatch, hidden: torch.Tensor, meta: AttentionMetadata
    ) -> dict[int, list[TokenLogprobs]] | None:
        """For calls that asked: each prompt token's log-probability given the tokens before
        it, over the positions this step computed and no earlier step recorded."""
        found = {}
        for i, (call, n) in enumerate(zip(batch.calls, batch.num_new, strict=True)):
            top = call.params.prompt_logprobs
            if top is None:
                continue
            first = max(call.num_computed, len(call.prompt_logprobs))
            last = min(call.num_computed + n, call.num_prompt_tokens - 1)
            if first >= last:
                continue
            end = int(meta.last_token_idx[i]) + 1  # this call's rows are end - n .. end - 1
            rows = hidden[end - n + first - call.num_computed : end - n + last - call.num_computed]
            logprobs = self.model.compute_logits(rows).float().log_softmax(dim=-1)
            targets = call.token_ids[first + 1 : last + 1]
            found[i] = [
                token_logprobs(row, t, top) for row, t in zip(logprobs, targets, strict=True)
            ]
        return found or None

    def _banned(self, seq: Call) -> list[int]:
        """Before min_tokens, the end-of-sequence and stop tokens may not be sampled."""
        if seq.num_output_tokens >= seq.params.min_tokens:
            return []
        return [*self.eos_token_ids, *seq.params.stop_token_ids]


class SimulatedExecutor(Executor):
    """Step time from a latency model of the step's shape, on a virtual clock. Emits the
    call's planned output (`planned[call_id]`, set by whoever adds the call) or else
    `token_id`; calls end by max_tokens, so simulated calls should set ignore_eos."""

    def __init__(
        self,
        step_time: Callable[[StepShape], float],
        block_size: int,
        num_blocks: int,
        num_swap_blocks: int,
        swap_time_per_block: float = 0.0,
        token_id: int = 0,
    ) -> None:
        self.step_time = step_time
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.num_swap_blocks = num_swap_blocks
        self.swap_time_per_block = swap_time_per_block
        self.token_id = token_id
        self.planned: dict[str, list[int]] = {}
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def execute(self, batch: ScheduledBatch) -> StepOutput:
        swapped = len(batch.swap_out) + len(batch.swap_in)
        elapsed = swapped * self.swap_time_per_block + (
            self.step_time(StepShape.of(batch)) if batch.calls else 0.0
        )
        self.now += elapsed
        out: list[int | None] = []
        for seq, sample in zip(batch.calls, tokens_to_sample(batch), strict=True):
            planned = self.planned.get(seq.call_id, ())
            n = seq.num_output_tokens
            out.append((planned[n] if n < len(planned) else self.token_id) if sample else None)
        return StepOutput(out, elapsed)

    def tokens(self, call: Call, count: int) -> list[int]:
        """The call's next `count` output tokens."""
        n = call.num_output_tokens
        found = list(self.planned.get(call.call_id, ())[n : n + count])
        return found + [self.token_id] * (count - len(found))

    def decode_times(self, calls: list[Call], steps: int) -> list[float]:
        """The times of `steps` decode steps of `calls` from where they are now."""
        shape = StepShape.of(ScheduledBatch(calls, [1] * len(calls)))
        at_once = getattr(self.step_time, "decode_times", None)  # a model may do them all
        if at_once is not None:
            return at_once(shape, steps)
        return [self.step_time(shape.decoded(i)) for i in range(steps)]
