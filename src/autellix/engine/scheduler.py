"""The scheduler owns a call's lifecycle in the engine: `add`, then each step
`schedule()` (a batch) and `update_from_output()` (service, computed tokens, prefix
cache, new tokens, finishing), until `finish`. It alone drives the policy and the
block manager.

Running calls that fall out of the batch by priority are preempted but keep their KV
blocks on the device ("resident"): resuming them costs nothing, and most priority
preemptions never need the memory back. A running call that finds no memory to grow
into is evicted (see `BatchFitter`). While a round leaves a call out for want of
blocks, the next one serves the programs whose KV is on the device first
(`programs_first`, the working-set rule): in pure rank order the programs take the
memory from each other in turn and each comes back to a cold cache.

With KV retention on, a finished call of a live program may leave its cached blocks
pinned for its program's return: the pure policy in `scheduling.retention` decides,
from the gaps its program (or class) paused before and the prefill time this engine
measures. The pin holds until the program's next call runs; under memory pressure a
pinned program is served after the programs with calls in flight and before those that
would start cold.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from autellix.engine.batch import BatchFitter, ScheduledBatch
from autellix.engine.call import Call, Status, TokenLogprobs
from autellix.engine.config import EngineConfig
from autellix.engine.kv_cache import BlockManager
from autellix.engine.step_cost import StepCost
from autellix.scheduling import Policy, select_batch
from autellix.scheduling.cut import BatchCut
from autellix.scheduling.retention import HeadReuse, RetentionCost, ReturnOutlook, decide


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        policy: Policy[Call],
        blocks: BlockManager,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.config = config
        self.policy = policy
        self.blocks = blocks
        self.eos_token_ids = tuple(eos_token_ids)
        self.calls: dict[str, Call] = {}  # every call not finished
        self.resident: dict[str, Call] = {}  # preempted, KV still on the device
        self.num_preemptions = 0  # running calls that fell out of a batch
        self.num_evictions = 0  # calls whose KV blocks left the device (swap or drop)
        self.computed_tokens = 0  # tokens run through the model so far (prompts and outputs)
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self._last: ScheduledBatch | None = None
        self._steps_since_round = 0
        self.seconds_per_token: float | None = None  # prefill cost, measured on steps
        self.step_cost = StepCost()  # learned only for the batch cut
        self.cuts = config.scheduling.batch_cut and policy.cuts_batch
        self.pin_blocked_seconds = 0.0  # calls' time refused blocks that pins held
        self._blocked_by_pins = 0
        self._last_round_at: float | None = None
        self._memory_short = False  # the last round left a call out for want of KV blocks
        # blocks of finished calls written to host memory, copied before the next step
        self._host_writes: list[tuple[int, int]] = []
        self.head_reuse = HeadReuse()  # how much of a call's context its program's next uses

    def add(self, call: Call, now: float) -> None:
        self.calls[call.call_id] = call
        self.policy.add(call, now)
        hashes = self.blocks.lookup_hashes  # the prompt's, computed once, as far as read
        self.blocks.returned(call.program_id, hashes(call.token_ids, call.block_hashes))
        self.head_reuse.arrived(call.program_id, hashes(call.token_ids, call.block_hashes))

    def finish(self, call: Call, reason: str, now: float) -> None:
        """A call ended (stop, length or abort): release everything it holds."""
        call.finish_reason = reason
        if call.status is Status.WAITING:  # left before it ran: its program's pin is done
            self.blocks.free_swap(self.blocks.claim(call.program_id))
        call.status = Status.FINISHED
        del self.calls[call.call_id]
        self.policy.remove(call, now)
        self.resident.pop(call.call_id, None)
        self.blocks.free(call.block_table, call.program_id)
        if self.config.retention.enabled and reason != "abort":
            self._retain(call, now)
        self.blocks.free_swap(call.swap_table)
        call.block_table, call.swap_table = [], []
        self._last = None

    def _retain(self, call: Call, now: float) -> None:
        """Keep the head of the call's cached blocks that its program's next call is
        expected to begin with (`HeadReuse`), if that is worth it: pinned on the device for
        the TTL, or, while memory is short, written to host memory at once: a pin would
        keep from the calls waiting now the memory they wait for, where a host copy costs
        only the copies out and back (and the blocks stay cached on the device until LRU
        takes them)."""
        outlook = ReturnOutlook(call.program.return_gaps, call.program.expect_return)
        if not (outlook.gaps or outlook.hint is not None):  # it cannot come back
            return
        program_id, kind, num_hashed = call.program_id, call.program.kind, call.num_hashed_blocks
        head = self.head_reuse.head(program_id, kind, num_hashed)
        self.head_reuse.left(program_id, kind, call.block_hashes[:num_hashed])
        cached = call.block_table[:head]
        in_use = self.blocks.num_blocks - self.blocks.num_free - self.blocks.num_pinned
        cost = RetentionCost(
            num_blocks=len(cached),
            num_tokens=len(cached) * self.blocks.block_size,
            seconds_per_token=self.seconds_per_token or 0.0,
            batch_blocks=in_use,
        )
        retention = decide(outlook, cost, self.config.retention)
        if not retention.hold:
            return
        if self._memory_short and self.blocks.host_retention:
            # kept until the program's next call takes them, it ends, or the longest TTL:
            # host memory is the only cost, and the host pool bounds it
            expires = now + self.config.retention.max_ttl
            written = self.blocks.write_to_host(call.program_id, cached, expires)
            if written is not None:
                self._host_writes += written
                return
        rank = self.policy.rank_key(call)
        expected = now + retention.expected_return
        self.blocks.pin(call.program_id, cached, now + retention.ttl, expected, rank)

    @property
    def num_waiting(self) -> int:
        return len(self.policy) - len(self.policy.running)

    # --- schedule ---------------------------------------------------------------------

    def schedule(self, now: float) -> ScheduledBatch:
        reuse = self._last is not None and self._steps_since_round < self.config.schedule_every
        if reuse and (batch := self._continue_decodes()) is not None:
            self._steps_since_round += 1
        else:
            batch = self._round(now)
            self._last = batch if batch.calls and batch.is_decode_only else None
            self._steps_since_round = 1
        self.computed_tokens += sum(batch.num_new)
        if self._host_writes:  # before the step: it may write into those blocks
            batch.swap_out[:0] = self._host_writes
            self.swapped_out_blocks += len(self._host_writes)
            self._host_writes = []
        return batch

    def _continue_decodes(self) -> ScheduledBatch | None:
        """Multi-step: run the last decode batch again without a round, if it can grow."""
        last = self._last
        assert last is not None
        if any(c.status is not Status.RUNNING or not c.is_decode for c in last.calls):
            return None
        growth = [
            self.blocks.blocks_for(c.num_computed + 1) - len(c.block_table) for c in last.calls
        ]
        if sum(growth) > self.blocks.num_free:
            return None
        for call, n in zip(last.calls, growth, strict=True):
            call.block_table += self.blocks.allocate(n)
        return ScheduledBatch(list(last.calls), [1] * len(last.calls))

    def _round(self, now: float) -> ScheduledBatch:
        self.blocks.expire(now)
        if self._last_round_at is not None:
            self.pin_blocked_seconds += self._blocked_by_pins * (now - self._last_round_at)
        holders = (self.policy.running, self.resident)  # read only when memory runs out
        fitter = BatchFitter(
            self.config, self.blocks, holders, self.policy.rank_key, self.policy.preemptive
        )
        first = self._resident_programs() if self._memory_short else ()
        chosen, preempted = select_batch(
            self.policy, now, self.config.max_running, fitter.fits, self._cut(), first
        )
        self._memory_short = bool(fitter.short)
        self.num_preemptions += len(preempted)
        for call in preempted:
            if call.call_id in fitter.evicted:  # already evicted to make room
                continue
            if call.call_id in fitter.short or not self.config.keep_preempted:
                fitter.evict(call)
            else:
                self.resident[call.call_id] = call
        batch = fitter.finish(chosen)
        for call in [*chosen, *batch.evicted]:
            self.resident.pop(call.call_id, None)
        self.num_evictions += len(batch.evicted)
        self.swapped_out_blocks += len(batch.swap_out)
        self.swapped_in_blocks += len(batch.swap_in)
        self._blocked_by_pins = len(fitter.blocked_by_pins)
        self._last_round_at = now
        return batch

    def _resident_programs(self) -> tuple[set[str], set[str]]:
        """Programs with KV on the device: a call running or preempted in place; a pin."""
        running = itertools.chain(self.policy.running.values(), self.resident.values())
        return {c.program_id for c in running}, set(self.blocks.pins)

    def _cut(self) -> BatchCut[Call] | None:
        """The batch cut, once the step cost is learned: only decoding calls are ever
        left out (a prefill chunk's progress is worth its cost)."""
        cost = self.step_cost
        if not self.cuts or cost.coefficients is None:
            return None
        chunk = self.config.max_prefill_tokens

        def call_cost(call: Call) -> float:
            return cost.of(call, 1 if call.is_decode else min(call.num_uncomputed, chunk))

        def exempt(call: Call) -> bool:
            return not call.is_decode or self.policy.cut_exempt(call)

        return BatchCut(self.policy.urgency, cost.fixed, call_cost, exempt)

    # --- fast-forward (a simulator's) ------------------------------------------------

    def expire_before_round(self, now: float) -> None:
        """If the next step is a round, end now the pins and host copies that round would
        end first (`_round`), so that a stretch of steps need not stop for them."""
        if self._last is None or self._steps_since_round >= self.config.schedule_every:
            self.blocks.expire(now)

    def repeatable_steps(self) -> int:
        """How many steps from now would each be one decode of every call the engine holds
        and change nothing else: none waits (so every round takes them all), no batch cut,
        each call stops only at its length (stop strings are the engine's to check), none
        is yet to give its first token, and the free blocks cover their growth. The last
        step counted is the first that finishes a call; retention pins end by time, which
        the caller checks. 0: schedule the next step."""
        calls = self.policy.running.values()
        last = self._last
        if (
            not calls
            or self._host_writes
            or len(calls) != len(self.policy)
            or (last is not None and len(last.calls) != len(calls))
            or self.cuts
        ):
            return 0
        steps = None
        eos = self.eos_token_ids
        for call in calls:
            params = call.params
            num_tokens = len(call.token_ids)
            outputs = num_tokens - call.num_prompt_tokens
            stops_by_length = not params.stop_token_ids and (params.ignore_eos or not eos)
            # a call yet to give its first token steps alone: that token is news
            decode = call.num_computed == num_tokens - 1 > 0  # call.is_decode, inlined
            if not (outputs and decode and stops_by_length and call.matcher is None):
                return 0
            left = params.max_tokens - outputs
            steps = left if steps is None or left < steps else steps
        assert steps is not None
        free, blocks_for = self.blocks.num_free, self.blocks.blocks_for
        if len(calls) * blocks_for(steps) <= free:  # each call grows by at most that many
            return steps

        def growth(k: int) -> int:
            return sum(max(0, blocks_for(c.num_computed + k) - len(c.block_table)) for c in calls)

        if growth(steps) <= free:
            return steps
        low, high = 0, steps  # growth(low) fits, growth(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if growth(mid) <= free else (low, mid)
        return low

    def repeat(
        self,
        elapsed: Sequence[float],
        tokens: Callable[[Call, int], list[int]],
        start: float,
    ) -> list[Call]:
        """What `len(elapsed)` schedule / update_from_output pairs would do, where
        `repeatable_steps` allows that many, the steps taking `elapsed` seconds from
        `start` and each call getting its next `tokens(call, k)`. Block ids may differ from
        the step-by-step run's; nothing else does. Returns the calls that finished, in the
        last step's order."""
        calls = list(self.policy.running.values())
        k, n = len(elapsed), len(calls)
        last_round, since = self._last_round_in(k)
        for call in calls:
            grow = self.blocks.blocks_for(call.num_computed + k) - len(call.block_table)
            if grow > 0:
                call.block_table += self.blocks.allocate(grow)
        share = self.config.service_accounting == "share"
        charges = [seconds / n for seconds in elapsed] if share else elapsed
        order = self._last.calls if self._last is not None else calls
        split = max(last_round, 0)  # the steps before the last round
        now = start
        for seconds in elapsed[:split]:
            now += seconds
        ending = [c for c in calls if c.num_output_tokens + k >= c.params.max_tokens]
        # the batch's order, as the last round ranked it, matters only to the order in
        # which calls that finish together finish, and to the rounds a multi-step skips
        if last_round >= 0 and (len(ending) > 1 or self.config.schedule_every > 1):
            for call in calls:
                self.policy.add_services(call, charges[:split])
            order = list(self.policy.order(now))  # every call runs: resident first is moot
            for call in calls:
                self.policy.add_services(call, charges[split:])
        else:
            for call in calls:
                self.policy.add_services(call, charges)
            if last_round >= 0:
                order = calls
        if last_round >= 0:
            self._last_round_at = now
            self._memory_short = False  # every call fit
        for seconds in elapsed[split:]:
            now += seconds
        for call in calls:
            call.token_ids += tokens(call, k)
            call.num_computed += k
            self.blocks.cache_full_blocks(call)
        self.computed_tokens += k * n
        self._steps_since_round = since
        self._last = ScheduledBatch(order, [1] * n)
        finished = [c for c in order if c in ending] if len(ending) > 1 else ending
        for call in finished:
            self.finish(call, "length", now)
        return finished

    def _last_round_in(self, steps: int) -> tuple[int, int]:
        """Of the next `steps` steps, the last that `schedule()` makes a round (-1: none,
        with schedule_every > 1), and the steps since a round after them."""
        since, has_last, last_round = self._steps_since_round, self._last is not None, -1
        for i in range(steps):
            if has_last and since < self.config.schedule_every:
                since += 1
            else:
                since, has_last, last_round = 1, True, i
        return last_round, since

    # --- update -----------------------------------------------------------------------

    def update_from_output(
        self,
        batch: ScheduledBatch,
        tokens: Sequence[int | None],
        elapsed: float,
        now: float,
        logprobs: Sequence[TokenLogprobs | None] | None = None,
        prompt_logprobs: dict[int, list[TokenLogprobs]] | None = None,
    ) -> list[Call]:
        """Charge the step, advance the calls, append their new tokens and finish those
        that hit a stop token or their length. Returns the calls that got a token."""
        self._measure_prefill(batch, elapsed)
        if self.cuts:
            self.step_cost.observe(batch.calls, batch.num_new, elapsed)
        share = self.config.service_accounting == "share"
        per_token = elapsed / max(1, sum(batch.num_new)) if share else 0.0
        advanced = []
        for i, (call, n) in enumerate(zip(batch.calls, batch.num_new, strict=True)):
            token = tokens[i]
            self.policy.add_service(call, per_token * n if share else elapsed)
            call.num_computed += n
            self.blocks.cache_full_blocks(call)
            if logprobs is not None and (lp := logprobs[i]) is not None:
                call.logprobs.append(lp)
            if prompt_logprobs and i in prompt_logprobs:
                call.prompt_logprobs += prompt_logprobs[i]
            if token is not None:
                self._append(call, token, now)
                advanced.append(call)
        return advanced

    def _measure_prefill(self, batch: ScheduledBatch, elapsed: float) -> None:
        """Seconds per computed token over steps that prefill (a moving average): what a
        dropped block's recompute would cost."""
        tokens = sum(batch.num_new)
        if batch.is_decode_only or tokens == 0 or elapsed <= 0:
            return
        sample = elapsed / tokens
        old = self.seconds_per_token
        self.seconds_per_token = sample if old is None else 0.9 * old + 0.1 * sample

    def _append(self, call: Call, token: int, now: float) -> None:
        params = call.params
        call.token_ids.append(token)
        grammar_done = False
        if call.matcher is not None:
            if not call.matcher.accept_token(token):  # the mask makes this unreachable
                self.finish(call, "abort", now)
                return
            grammar_done = call.matcher.is_terminated()
        if token in params.stop_token_ids:
            call.stop_reason = token
            self.finish(call, "stop", now)
        elif (token in self.eos_token_ids and not params.ignore_eos) or grammar_done:
            self.finish(call, "stop", now)
        elif call.num_output_tokens >= params.max_tokens:
            self.finish(call, "length", now)
