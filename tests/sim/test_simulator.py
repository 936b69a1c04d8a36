"""The simulator: real engines in virtual time behind the real process table and balancer."""

from __future__ import annotations

import gc

import pytest

from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.scheduling import SchedulingConfig
from autellix.scheduling.retention import RetentionConfig
from autellix.sim.cluster import ClusterConfig, Simulation
from autellix.sim.hardware import GPUS, MODELS
from autellix.sim.latency import Roofline
from autellix.workloads import build_workload
from autellix.workloads.spec import CallSpec, ProgramSpec, Stage
from autellix.workloads.tokens import prompt_tokens

STEP = 0.01


def constant(shape: StepShape) -> float:
    return STEP


def call(text: str, prompt: int, out: int, delay: float = 0.0, ref=None) -> CallSpec:
    messages = [{"role": "user", "content": text}]
    if ref is not None:
        messages += [{"role": "assistant", "ref": ref}, {"role": "user", "content": "next"}]
    return CallSpec(messages, out, prompt, tool_delay=delay)


def run(specs, step_time=constant, **config) -> tuple[list, Simulation]:
    engine = EngineConfig(**{"policy": "atlas", "max_running": 8, **config.pop("engine", {})})
    sim = Simulation(ClusterConfig(engine=engine, **config), step_time)
    records = sim.run(specs)
    for replica in sim.replicas:
        replica.engine.check_idle()  # no call, KV block or swap block left anywhere
        assert replica.in_flight == 0 and not replica.executor.planned
    assert len(sim.table) == 0  # every program ended and left the table
    return records, sim


def test_virtual_time_of_one_program() -> None:
    # stage 1: one call (prefill step + 4 decode steps = 5 steps), then a 2 s tool delay;
    # stage 2: two parallel calls of 3 tokens, batched together (3 steps)
    spec = ProgramSpec(
        "p",
        "react",
        1.0,
        [
            Stage([call("a", 40, 5, delay=2.0)]),
            Stage([call("b", 30, 3), call("c", 20, 3)]),
        ],
    )
    [record], _ = run([spec])
    assert record.error is None
    assert record.latency == pytest.approx(5 * STEP + 2.0 + 3 * STEP)
    first = record.calls[0]
    assert first.start == 1.0 and first.first_token == pytest.approx(1.0 + STEP)
    assert [c.output_tokens for c in record.calls] == [5, 3, 3]
    assert [c.prompt_tokens for c in record.calls] == [40, 30, 20]  # the spec's lengths


def test_steps_that_take_no_time_still_run_every_call_to_its_end() -> None:
    # a fitted profile may give a step 0 s (Profile clamps at 0): the replica must keep
    # stepping although the clock stands still and a step has no news to report
    specs = build_workload("mixed", 4, rate=4.0, seed=1, scale=0.1)
    # one running call at a time: the others wait, so steps go one by one, not in stretches
    records, _ = run(specs, step_time=lambda shape: 0.0, engine={"max_running": 1})
    assert all(r.error is None and r.latency is not None for r in records)
    assert sum(c.output_tokens for r in records for c in r.calls) == sum(
        c.max_tokens for spec in specs for c in spec.calls
    )


def test_runs_are_deterministic_and_policies_differ() -> None:
    specs = build_workload("mixed", 12, rate=4.0, seed=3, scale=0.2)

    def latencies(policy: str) -> list[float]:
        records, _ = run(specs, engine={"policy": policy, "max_running": 4})
        assert all(r.error is None for r in records)
        return [r.latency for r in records]

    atlas = latencies("atlas")
    assert atlas == latencies("atlas")
    assert atlas != latencies("fcfs")


def test_a_chat_meets_its_earlier_turn_in_the_prefix_cache() -> None:
    first = call("hello " * 40, 0, 20)
    second = call("hello " * 40, 0, 4, ref=[0, 0])
    first.prompt_tokens = prompt_tokens(first.messages)  # as the workloads count them
    second.prompt_tokens = prompt_tokens(second.messages, [[20]])
    spec = ProgramSpec("chat", "chatbot", 0.0, [Stage([first]), Stage([second])])
    _, sim = run([spec], engine={"block_size": 16})
    stats = sim.replicas[0].engine.stats()
    # the second prompt repeats the first prompt and the first call's 20 output tokens,
    # which the executor emitted with the same ids; all of them but the last output
    # token (its KV is never computed) are cached, in whole blocks
    assert stats["prefix_hit_tokens"] == (first.prompt_tokens + 19) // 16 * 16
    _, sim = run([spec], engine={"block_size": 16, "prefix_caching": False})
    assert sim.replicas[0].engine.stats()["prefix_hit_tokens"] == 0


def test_atlas_beats_fcfs_when_a_long_program_holds_the_engine() -> None:
    # one long program of many sequential calls, and short programs arriving behind it
    # (each long call is 2 s of service: past Q1's 1 s boundary after its first call); with
    # one running call only preemption lets a short call past a long one
    long = ProgramSpec("long", "react", 0.0, [Stage([call(f"l{i}", 32, 200)]) for i in range(5)])
    short = [
        ProgramSpec(f"s{i}", "react", 2.5 + i * 0.7, [Stage([call(f"s{i}", 32, 10)])])
        for i in range(6)
    ]
    mean = {}
    for policy in ("fcfs", "atlas"):
        engine = {"policy": policy, "max_running": 1, "scheduling": SchedulingConfig(preempt=True)}
        records, _ = run([long, *short], engine=engine)
        mean[policy] = sum(r.latency for r in records if r.program_id != "long") / 6
    assert mean["atlas"] < 0.6 * mean["fcfs"]


def test_locality_pins_long_prompt_programs_and_spreads_short_calls() -> None:
    long = ProgramSpec(
        "long", "lats", 0.0, [Stage([call("x" * 10, 300, 2) for _ in range(3)]) for _ in range(4)]
    )
    short = [
        ProgramSpec(f"s{i}", "chatbot", 0.0, [Stage([call(f"s{i}", 20, 2)])]) for i in range(8)
    ]
    records, sim = run(
        [long, *short],
        replicas=4,
        balancer="locality",
        long_prompt_tokens=256,
    )
    assert all(r.error is None for r in records)
    assert sum(r.steps > 0 for r in sim.replicas) >= 3  # short calls spread
    # every call of the long program ran on one replica: its prompts never left its cache
    cached = [r.engine.stats()["prefix_hit_tokens"] for r in sim.replicas]
    assert max(cached) >= 3 * 4 * 256 - 300


def test_only_a_balancer_that_reads_caches_gets_the_routed_prompts() -> None:
    specs = build_workload("mixed", 6, rate=4.0, seed=3, scale=0.2)
    _, cached = run(specs, replicas=2, balancer="cache-aware")
    assert all(r.routed is not None and r.routed.blocks for r in cached.replicas)
    _, local = run(specs, replicas=2, balancer="locality")
    assert all(r.routed is None for r in local.replicas)


def test_swaps_cost_host_link_time_and_memory_limits_hold() -> None:
    # a pool of 12 blocks for calls of up to 7 blocks each: preemption must happen
    specs = [
        ProgramSpec(f"p{i}", "react", i * 0.001, [Stage([call(f"p{i}", 64, 40)])]) for i in range(4)
    ]
    slow, sim = run(specs, num_kv_blocks=12, num_swap_blocks=64, swap_time_per_block=0.5)
    engine = sim.replicas[0].engine
    assert engine.scheduler.num_preemptions > 0 and engine.scheduler.swapped_out_blocks > 0
    fast, _ = run(specs, num_kv_blocks=12, num_swap_blocks=64, swap_time_per_block=0.0)
    assert max(r.end for r in slow) > max(r.end for r in fast) + 0.5


def test_roofline_matches_datasheet_arithmetic() -> None:
    model, gpu = MODELS["llama-3.1-8b"], GPUS["a100"]
    roofline = Roofline(gpu, model)
    # one decode token: memory-bound, all weights read once
    one = roofline(StepShape(1, 1, 100, 100.0))
    weights = model.weight_bytes / (gpu.bandwidth * roofline.bandwidth_efficiency)
    assert one == pytest.approx(weights + roofline.step_overhead, rel=0.01)
    # a 4096-token prefill: compute-bound
    big = roofline(StepShape(4096, 1, 4096, 4096 * 2048.5))
    assert big > 2 * model.params * 4096 / (gpu.flops * roofline.compute_efficiency)
    assert model.kv_bytes_per_token == 128 * 1024  # 32 layers x 8 heads x 128 x 2 x bf16
    # 72 GB usable - 16 GB of weights, in 16-token blocks of 2 MiB
    assert roofline.kv_blocks(16) == int((0.9 * 80 * 2**30 - 16.06e9) // (16 * 128 * 1024))
    # tensor parallelism: 4 GPUs are faster per step, and 70B needs them
    seventy = MODELS["llama-3.1-70b"]
    with pytest.raises(ValueError, match="does not fit"):
        Roofline(gpu, seventy, tp=1).kv_blocks(16)
    assert Roofline(gpu, seventy, tp=4)(StepShape(1, 1, 1, 1.0)) < Roofline(gpu, seventy, tp=2)(
        StepShape(1, 1, 1, 1.0)
    )


def react_under_pressure(retention: bool, hints: bool = False):
    specs = build_workload("react", 12, rate=4.0, seed=1, scale=0.3)
    return run(
        specs,
        step_time=Roofline(GPUS["a100"], MODELS["llama-3.1-8b"]),
        engine={"policy": "plas", "retention": RetentionConfig(enabled=retention)},
        num_kv_blocks=120,
        expect_return_hints=hints,
    )


def test_retention_runs_every_program_to_the_end_deterministically() -> None:
    records, sim = react_under_pressure(True)
    again, _ = react_under_pressure(True)
    assert all(r.error is None for r in records)
    assert [r.end for r in records] == [r.end for r in again]
    stats = sim.replicas[0].engine.stats()
    assert stats["pins_made"] > 0 and stats["pins_hit"] > 0
    assert stats["pinned_blocks"] == 0  # every program ended: no pin outlives it


def test_a_simulation_makes_no_reference_cycles() -> None:
    # the simulator runs with the cyclic collector off (sim.cluster.no_collections): what
    # a run leaves unreachable would stay in memory until it ends. Retention, swaps and
    # preemption under memory pressure, on the mixed workload:
    specs = build_workload("mixed", 16, rate=4.0, seed=2, scale=0.3)
    retention = RetentionConfig(enabled=True, host=True)
    gc.collect()
    gc.disable()
    try:
        _, sim = run(
            specs,
            step_time=Roofline(GPUS["a100"], MODELS["llama-3.1-8b"]),
            engine={"policy": "atlas", "retention": retention, "max_running": 16},
            num_kv_blocks=120,
            num_swap_blocks=64,
        )
        assert gc.collect() == 0
    finally:
        gc.enable()
    engine = sim.replicas[0].engine
    assert engine.scheduler.num_evictions > 0 and engine.retention_stats()["pins_made"] > 0


def test_client_hints_reach_the_engine_in_the_simulator() -> None:
    _, without = react_under_pressure(True)
    _, hinted = react_under_pressure(True, hints=True)
    made = [s.replicas[0].engine.stats()["pins_made"] for s in (without, hinted)]
    assert made[0] != made[1]


def test_the_simulator_ends_programs_on_their_replicas() -> None:
    _, sim = react_under_pressure(False)
    assert sim.replicas[0].engine.stats()["released_blocks"] > 0


def test_a_warm_simulation_ranks_its_first_programs_by_the_sizes_it_is_given() -> None:
    from autellix.programs import SizeModel
    from autellix.sim.sweep import Target, simulate

    target = Target(constant, 4096, 1e-4, 8192, "constant steps")
    specs = build_workload("agents", 6, rate=50.0, seed=1, searches=0.5)
    engine = EngineConfig(policy="gittins", max_running=2)
    cold_records, cold = simulate(specs, engine, target, named_kinds=True)
    sizes = SizeModel()
    for kind in ("chat", "fan-out", "search"):
        for i in range(8):  # programs all alike: nearly done ranks first, not least served
            sizes.observe(kind, f"past-{kind}-{i}", 5.0)
    warm_records, warm = simulate(specs, engine, target, sizes=sizes, named_kinds=True)
    assert warm.table.sizes is sizes and len(sizes.everyone()) == 24 + len(specs)
    assert cold.table.sizes.everyone() == ()  # fewer than 8 ended: nothing to rank by
    assert [r.latency for r in warm_records] != [r.latency for r in cold_records]


def test_programs_that_name_their_kind_are_sized_per_kind() -> None:
    from autellix.sim.sweep import Target, simulate

    target = Target(constant, 4096, 1e-4, 8192, "constant steps")
    specs = build_workload("agents", 24, rate=50.0, seed=2, searches=0.3)
    engine = EngineConfig(policy="gittins", max_running=4)
    _, named = simulate(specs, engine, target, named_kinds=True)
    _, hashed = simulate(specs, engine, target)
    kinds = {spec.workload for spec in specs}
    assert kinds == {"chat", "fan-out", "search"}
    assert set(named.table.sizes._sizes) == {*kinds, None}
    assert not kinds & set(hashed.table.sizes._sizes)  # classes from system prompts instead
