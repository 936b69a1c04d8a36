"""Fast-forward: stretches of decode steps that nothing can change, run at once, give
exactly what the step-by-step run gives, and the simulator takes them wherever it can."""

from __future__ import annotations

import dataclasses

import pytest

from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams
from autellix.scheduling import SchedulingConfig
from autellix.scheduling.retention import RetentionConfig
from autellix.sim.cluster import ClusterConfig, Simulation
from autellix.sim.hardware import GPUS, MODELS
from autellix.sim.latency import Roofline
from autellix.sim.sweep import Target, simulate
from autellix.workloads import build_workload
from autellix.workloads.spec import CallSpec, ProgramSpec, Stage

ROOFLINE = Roofline(GPUS["a100"], MODELS["llama-3.1-8b"])


def target(num_kv_blocks: int) -> Target:
    swap = ROOFLINE.swap_time_per_block(16)
    return Target(ROOFLINE, num_kv_blocks, swap, 1 << 20, "A100 roofline")


GPU_DEFAULTS = {"max_running": 256, "max_prefill_tokens": 2048}
MIXED = ("mixed", 3)  # workload, seed
CASES = {
    "atlas, 2 replicas": (dict(policy="atlas", **GPU_DEFAULTS), 50_000, 2, MIXED),
    "plas, share of the step": (
        dict(policy="plas", service_accounting="share", **GPU_DEFAULTS),
        50_000,
        1,
        MIXED,
    ),
    "fcfs, a round every 8 steps": (
        dict(policy="fcfs", schedule_every=8, **GPU_DEFAULTS),
        50_000,
        1,
        MIXED,
    ),
    "gittins": (dict(policy="gittins", **GPU_DEFAULTS), 50_000, 1, MIXED),
    "srpt, no prefix caching": (
        dict(policy="srpt", prefix_caching=False, **GPU_DEFAULTS),
        50_000,
        1,
        MIXED,
    ),
    # programs end while other calls decode, and their blocks go first (end_program)
    "plas, react, the prefix cache full": (
        dict(policy="plas", **GPU_DEFAULTS),
        800,
        1,
        ("react", 1),
    ),
    "plas, KV retention, the prefix cache full": (
        dict(policy="plas", retention=RetentionConfig(enabled=True), **GPU_DEFAULTS),
        800,
        1,
        ("react", 1),
    ),
    # finished calls' blocks written to host memory while memory is short
    "plas, KV retention, KV pressure (host copies)": (
        dict(policy="plas", retention=RetentionConfig(enabled=True), **GPU_DEFAULTS),
        400,
        1,
        ("react", 1),
    ),
    "plas --preempt, KV pressure (swap)": (
        dict(policy="plas", max_running=32, scheduling=SchedulingConfig(preempt=True)),
        700,
        1,
        MIXED,
    ),
    "mlfq, KV pressure, recompute": (
        dict(policy="mlfq", max_running=32, preemption="recompute"),
        500,
        1,
        MIXED,
    ),
}


def outcome(fast_forward: bool, case: str, monkeypatch):
    engine, blocks, replicas, (workload, seed) = CASES[case]
    stepped = [0]
    step = LLMEngine.step

    def counted(self, **kwargs):
        stepped[0] += 1
        return step(self, **kwargs)

    monkeypatch.setattr(LLMEngine, "step", counted)
    specs = build_workload(workload, 30, rate=1.5, seed=seed)
    records, sim = simulate(
        specs, EngineConfig(**engine), target(blocks), replicas, fast_forward=fast_forward
    )
    timeline = [
        (r.program_id, r.error, r.end, [(c.start, c.first_token, c.end) for c in r.calls])
        for r in records
    ]
    stats = [
        {k: v for k, v in r.engine.stats().items() if k != "queue_lengths"} for r in sim.replicas
    ]
    for replica in sim.replicas:
        replica.engine.check_idle()  # nothing leaked
    steps = sum(r.steps for r in sim.replicas)
    return timeline, stats, steps, stepped[0]


@pytest.mark.parametrize("case", CASES)
def test_fast_forward_gives_the_step_by_step_results(case: str, monkeypatch) -> None:
    slow = outcome(False, case, monkeypatch)
    fast = outcome(True, case, monkeypatch)
    assert fast[0] == slow[0]  # every call's start, first token and end, to the bit
    assert fast[1] == slow[1]  # preemptions, evictions, swaps, prefix hits, tokens computed
    assert fast[2] == slow[2]  # the same engine steps
    assert slow[3] == slow[2]
    if "pressure" not in case:  # calls wait most of the time there
        assert fast[3] < slow[3] / 2  # most steps ran in stretches


def make_engine(num_blocks: int = 64, eos: tuple[int, ...] = (), **config) -> LLMEngine:
    # small quanta, so calls change queues inside a stretch
    scheduling = SchedulingConfig(
        boundaries=(0.05, 0.1, 0.2), quanta=(0.05, 0.05, 0.1, 0.1), preempt=True
    )
    executor = SimulatedExecutor(
        lambda shape: 0.01 + 1e-6 * shape.context_tokens, 4, num_blocks, 64
    )
    config = {"policy": "plas", "scheduling": scheduling, "block_size": 4, **config}
    return LLMEngine(EngineConfig(**config), executor, eos_token_ids=eos)


def state(engine: LLMEngine) -> list:
    calls = sorted(engine.calls.values(), key=lambda c: c.call_id)
    fields = ("token_ids", "num_computed", "service", "level", "quantum_used", "num_hashed_blocks")
    return [
        [c.call_id, c.status, len(c.block_table), *(getattr(c, f) for f in fields)] for c in calls
    ] + [
        engine.blocks.num_free,
        engine.executor.clock(),
        engine.policy.demotions,
        engine.scheduler.computed_tokens,
        len(engine.blocks.by_hash),
    ]


def started(lengths: list[int], ignore_eos: bool = True, **config) -> LLMEngine:
    engine = make_engine(**config)
    for i, n in enumerate(lengths):
        params = SamplingParams(max_tokens=n, ignore_eos=ignore_eos)
        engine.add_call([5 + i] * 9, params, f"c{i}")
    engine.step()  # the prefills
    return engine


def test_repeat_steps_equals_that_many_steps() -> None:
    slow, fast = started([30, 12, 40]), started([30, 12, 40])
    elapsed = fast.repeatable_step_times()
    assert len(elapsed) == 11  # the shortest call has 11 tokens to go: it ends the stretch
    outputs = [slow.step() for _ in elapsed][-1]
    assert fast.repeat_steps(elapsed) == [o for o in outputs if o.finished]
    assert [o.call_id for o in outputs if o.finished] == ["c1"]
    assert state(fast) == state(slow)
    assert slow.policy.demotions > 0  # the stretch crossed quanta


def staggered(c0_tokens: int = 100, **config) -> LLMEngine:
    """c0, then (three steps later) c1 and c2, stepped until all three decode together;
    c0 has had more service by then, so PLAS ranks it last."""
    engine = make_engine(**config)
    engine.add_call([5] * 9, SamplingParams(max_tokens=c0_tokens, ignore_eos=True), "c0")
    for _ in range(3):
        engine.step()
    for i in (1, 2):
        engine.add_call([5 + i] * 9, SamplingParams(max_tokens=20, ignore_eos=True), f"c{i}")
    while not engine.repeatable_step_times():
        engine.step()
    return engine


@pytest.mark.parametrize("split", [False, True], ids=["one stretch", "5 steps, then the rest"])
@pytest.mark.parametrize("every", [1, 4, 30], ids=lambda n: f"a round every {n}")
def test_calls_that_end_together_end_in_the_step_by_step_order(every: int, split: bool) -> None:
    probe = staggered(schedule_every=every).calls
    left = 20 - probe["c1"].num_output_tokens
    assert probe["c2"].num_output_tokens == probe["c1"].num_output_tokens
    c0_tokens = probe["c0"].num_output_tokens + left  # all three end in the same step
    slow, fast = (staggered(c0_tokens, schedule_every=every) for _ in range(2))
    elapsed = fast.repeatable_step_times()
    assert len(elapsed) == left
    if split:  # the second stretch has no round in it where rounds are 30 steps apart
        slow_part = [slow.step() for _ in elapsed[:5]]
        fast.repeat_steps(elapsed[:5])
        assert slow_part and state(fast) == state(slow)
        assert order(fast) == order(slow)
        elapsed = fast.repeatable_step_times()
        assert len(elapsed) == left - 5
    outputs = [slow.step() for _ in elapsed][-1]
    ended = [o.call_id for o in outputs if o.finished]
    assert [o.call_id for o in fast.repeat_steps(elapsed)] == ended
    assert len(ended) == 3 and (every > 1 or ended[-1] == "c0")  # ranked by service
    assert state(fast) == state(slow) and order(fast) == order(slow)
    assert fast.scheduler._steps_since_round == slow.scheduler._steps_since_round


def order(engine: LLMEngine) -> list[str]:
    """The last batch's calls, in its order (the next stretch's, where it has no round)."""
    last = engine.scheduler._last
    return [] if last is None else [c.call_id for c in last.calls]


def test_a_stretch_cut_short_equals_its_steps() -> None:
    slow, fast = started([30, 12, 40]), started([30, 12, 40])
    elapsed = fast.repeatable_step_times()[:4]
    for _ in elapsed:
        slow.step()
    fast.repeat_steps(elapsed)
    assert state(fast) == state(slow)
    assert fast.repeatable_step_times() == fast.repeatable_step_times()[:7] != []


def test_a_stretch_stops_where_the_free_blocks_end() -> None:
    engine = started([30, 30], num_blocks=12)  # 3 blocks each for the prompts, 6 free
    elapsed = engine.repeatable_step_times()
    # 3 more blocks each hold 24 tokens: 15 steps past the 9 computed
    assert len(elapsed) == 15
    engine.repeat_steps(elapsed)
    assert engine.blocks.num_free == 0
    assert engine.repeatable_step_times() == []  # the next step needs a round


@pytest.mark.parametrize("num_blocks", [12, 13, 14, 24])
def test_a_stretch_is_as_long_as_the_free_blocks_and_the_first_end_allow(num_blocks: int) -> None:
    """`repeatable_steps` exactly: the steps until the first call ends, cut where the free
    blocks end; the step-by-step run goes that far without a change, and no further."""
    engine = started([20, 30], num_blocks=num_blocks)  # 9 tokens computed in 3 blocks each
    free = engine.blocks.num_free
    assert free == num_blocks - 6
    left = 20 - 1  # c0's tokens to go
    # k steps fit while 9 + k tokens fit in 3 + b blocks of 4 each, b = free // 2
    expected = min(left, 3 + 4 * (free // 2))
    assert engine.scheduler.repeatable_steps() == expected
    one = make_engine(num_blocks)  # a prompt of one token decodes from its first output on
    one.add_call([5], SamplingParams(max_tokens=left + 1, ignore_eos=True), "one")
    one.step()
    assert one.scheduler.repeatable_steps() == left
    for _ in range(expected):
        engine.step()
    scheduler = engine.scheduler
    assert scheduler.num_evictions == scheduler.num_preemptions == 0
    engine.step()
    if expected < left:  # the next step found no block for a call
        assert scheduler.num_evictions == 1
    else:  # c0 ended
        assert "c0" not in engine.calls and scheduler.num_evictions == 0


def test_no_stretch_while_anything_could_change() -> None:
    engine = started([30, 30])
    assert engine.repeatable_step_times()
    # an end-of-sequence token could end a call that does not ignore it (the simulated
    # executor's tokens are 0s)
    assert started([30, 30], ignore_eos=False, eos=(7,)).repeatable_step_times() == []
    assert started([30, 30], ignore_eos=False).repeatable_step_times()  # the model has none
    assert started([30, 30], eos=(7,)).repeatable_step_times()
    # the batch cut may leave a call out of any round
    cut = SchedulingConfig(boundaries=(0.05, 0.1), quanta=(0.05,) * 3, preempt=True, batch_cut=True)
    assert started([30, 30], scheduling=cut).scheduler.repeatable_steps() == 0
    engine.add_call([1] * 9, SamplingParams(max_tokens=5, ignore_eos=True), "waiting")
    assert engine.repeatable_step_times() == []  # a call waits: rounds must run
    stops = make_engine()
    stops.add_call([3] * 9, SamplingParams(max_tokens=30, stop_token_ids=[7]), "stops")
    stops.step()
    assert stops.calls and stops.repeatable_step_times() == []  # a token could end it
    first = make_engine(max_prefill_tokens=8)
    first.add_call([3] * 9, SamplingParams(max_tokens=30, ignore_eos=True), "chunked")
    first.step()  # 8 of 9 prompt tokens: the next step gives its first token
    assert first.calls["chunked"].is_decode and first.repeatable_step_times() == []


def test_a_stretch_ends_before_host_copies_expire_and_waits_for_host_writes() -> None:
    """A round at a host copy's expiry frees its swap block (room that decides whether a
    later pin or preempted call goes to host), and a finished call's blocks written to
    host are copied at the next step: neither may fall inside a stretch."""
    engine = started([30, 30])
    full = engine.repeatable_step_times()
    now = engine.executor.clock()
    expires = now + sum(full[:3])
    engine.blocks.host.add("gone", [(123, engine.blocks.free_swap_ids.pop())], expires)
    times = engine.repeatable_step_times()
    assert len(times) == 3 and now + sum(times[:-1]) < expires
    engine.scheduler._host_writes.append((0, 0))
    assert engine.repeatable_step_times() == []
    engine.scheduler._host_writes.clear()
    # once due, they are ended as the next step's round would end them first, and the
    # stretch runs on from there
    engine.executor.now = expires
    assert engine.repeatable_step_times() == full and not engine.blocks.host


def test_shape_after_decode_steps() -> None:
    shape = StepShape(3, 3, 100, 100.0)
    assert shape.decoded(2) == dataclasses.replace(shape, context_tokens=106, attention_pairs=106.0)


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("num_seqs", [1, 7, 256])  # memory-bound, then compute-bound
def test_the_rooflines_decode_times_are_its_step_times(tp: int, num_seqs: int) -> None:
    roofline = Roofline(GPUS["a100"], MODELS["llama-3.1-8b"], tp=tp)
    shape = StepShape(num_seqs, num_seqs, 700 * num_seqs, 700.0 * num_seqs)
    times = roofline.decode_times(shape, 300)
    assert times == [roofline(shape.decoded(i)) for i in range(300)]  # to the bit
    assert times[-1] > times[0]


def test_a_simulators_step_reports_only_first_tokens_and_ends() -> None:
    engines = make_engine(), make_engine()
    for engine in engines:
        for i, n in enumerate([1, 3, 5]):
            engine.add_call([5 + i] * 9, SamplingParams(max_tokens=n, ignore_eos=True), f"c{i}")
    reported, tokens = [], []
    for _ in range(4):
        news, every = engines[0].step(every_token=False), engines[1].step()
        assert [o for o in every if o.finished or o.num_output_tokens == 1] == news
        reported.append([(o.call_id, o.num_output_tokens, o.finished) for o in news])
        tokens.append(len(every))
    first = [("c0", 1, True), ("c1", 1, False), ("c2", 1, False)]
    assert reported == [first, [], [("c1", 3, True)], []]
    assert tokens == [3, 2, 2, 1]
    assert state(engines[0]) == state(engines[1])


def chain(name: str, arrival: float, stages: list[tuple[str, int, int, float]]) -> ProgramSpec:
    """A program of one call a stage; each stage's prompt carries the previous answer."""
    built = []
    for s, (text, prompt, out, delay) in enumerate(stages):
        messages: list[dict] = [{"role": "user", "content": text}]
        if s:
            messages += [
                {"role": "assistant", "ref": [s - 1, 0]},
                {"role": "user", "content": "next"},
            ]
        built.append(Stage([CallSpec(messages, out, prompt, tool_delay=delay)]))
    return ProgramSpec(name, "react", arrival, built)


def test_a_program_ending_during_a_stretch_frees_its_blocks_after_the_steps_begun() -> None:
    # Found by a search of random small runs (times off any grid, so no two events tie):
    # programs end on one replica while the other is in a stretch whose allocations come
    # from the prefix cache; the ended program's blocks must go to the front of eviction
    # only after the steps begun by then have taken theirs.
    specs = [
        chain("x0", 0.07548999724204766, [("p0 s0 " * 4, 8, 29, 0.0), ("p0 s1 ", 70, 4, 0.0)]),
        chain(
            "x1",
            0.06487610869577441,
            [
                ("p1 s0 ", 33, 3, 0.050947565439163345),
                ("p1 s1 " * 3, 76, 27, 0.16298414354683508),
                ("p1 s2 " * 5, 107, 5, 0.06298493682708482),
            ],
        ),
        chain("x2", 0.029035419620975313, [("p2 s0 " * 4, 32, 27, 0.0)]),
        chain(
            "x3",
            0.06915942823031866,
            [("p3 s0 " * 2, 9, 4, 0.0), ("p3 s1 " * 3, 69, 1, 0.026949240350647698)],
        ),
        chain("x4", 0.0655093724023372, [("p4 s0 " * 5, 21, 10, 0.0)]),
    ]

    def run(fast_forward: bool) -> tuple[list, list[int]]:
        engine = EngineConfig(policy="plas", max_running=8, block_size=4)
        config = ClusterConfig(
            engine=engine,
            num_kv_blocks=33,
            fast_forward=fast_forward,
            replicas=2,
            balancer="round-robin",
        )
        sim = Simulation(config, lambda s: 0.01 + 1e-6 * s.context_tokens + 1e-5 * s.new_tokens)
        records = sim.run(specs)
        calls = [(c.start, c.first_token, c.end) for r in records for c in r.calls]
        return calls, [r.engine.blocks.hit_tokens for r in sim.replicas]

    assert run(True) == run(False)
