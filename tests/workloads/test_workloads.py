"""The workloads: determinism, arrivals, refs, sizes against the paper, scaling."""

from __future__ import annotations

import functools
import json
import statistics

import pytest

from autellix.workloads import (
    PAPER,
    WORKLOADS,
    build_workload,
    format_stats,
    resolve,
    stats,
    workload_params,
)
from autellix.workloads.sampling import poisson_arrivals
from autellix.workloads.spec import ProgramSpec

KINDS = ["chatbot", "react", "lats", "mixed", "agents"]
# programs per workload for the paper-means check: enough for means stable to a few %
SAMPLE = {"chatbot": 300, "react": 400, "lats": 150}
MAX_CONTEXT = 8192


@functools.cache
def built(name: str, n: int, scale: float = 1.0, seed: int = 0) -> tuple[ProgramSpec, ...]:
    return tuple(build_workload(name, n, rate=2.0, seed=seed, scale=scale))


def small(name: str, scale: float = 1.0) -> tuple[ProgramSpec, ...]:
    return built(name, SAMPLE.get(name, 30) if scale == 1.0 else 30, scale)


def test_registry() -> None:
    assert set(WORKLOADS) == set(KINDS)
    with pytest.raises(ValueError, match="unknown workload"):
        build_workload("nope", 1, 1.0)


@pytest.mark.parametrize("name", KINDS)
def test_deterministic_for_a_seed(name: str) -> None:
    a = [p.to_json() for p in build_workload(name, 12, 1.0, seed=7, scale=0.1)]
    b = [p.to_json() for p in build_workload(name, 12, 1.0, seed=7, scale=0.1)]
    c = [p.to_json() for p in build_workload(name, 12, 1.0, seed=8, scale=0.1)]
    assert a == b
    assert a != c


def test_arrivals_are_a_poisson_process() -> None:
    times = poisson_arrivals(4000, rate=4.0, seed=3)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(g > 0 for g in gaps)
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)
    assert poisson_arrivals(3, float("inf"), 0) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", KINDS)
def test_programs_arrive_in_order_at_the_rate(name: str) -> None:
    programs = small(name, 0.1)
    arrivals = [p.arrival for p in programs]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0
    assert arrivals[-1] / len(arrivals) == pytest.approx(1 / 2.0, rel=0.4)  # rate 2/s
    assert len({p.program_id for p in programs}) == len(programs)


@pytest.mark.parametrize("name", KINDS)
def test_refs_point_to_earlier_stages_and_resolve(name: str) -> None:
    for program in small(name):
        outputs = [
            [f"out {s}.{c}" for c in range(len(st.calls))] for s, st in enumerate(program.stages)
        ]
        for s, stage in enumerate(program.stages):
            assert stage.calls
            for call in stage.calls:
                assert call.max_tokens >= 1
                assert call.prompt_tokens + call.max_tokens <= MAX_CONTEXT
                refs = [m["ref"] for m in call.messages if "ref" in m]
                for ref_stage, ref_call in refs:
                    assert ref_stage < s
                    assert 0 <= ref_call < len(program.stages[ref_stage].calls)
                resolved = resolve(call.messages, outputs)
                assert all(isinstance(m["content"], str) and "ref" not in m for m in resolved)
                assert [m["content"] for m in resolved if m["content"].startswith("out ")] == [
                    f"out {a}.{b}" for a, b in refs
                ]


@pytest.mark.parametrize("name", KINDS)
def test_json_round_trip(name: str) -> None:
    programs = small(name, 0.1)
    data = json.loads(json.dumps([p.to_json() for p in programs]))
    assert [ProgramSpec.from_json(d) for d in data] == list(programs)


@pytest.mark.parametrize("name", ["chatbot", "react", "lats"])
def test_means_match_the_paper(name: str) -> None:
    result = stats(list(small(name)))
    for key, paper in PAPER[name].items():
        assert result[key] == pytest.approx(paper, rel=0.15), (key, format_stats(result))


@pytest.mark.parametrize("name", ["chatbot", "react", "lats"])
def test_scale_shrinks_lengths(name: str) -> None:
    full, tenth = stats(list(small(name))), stats(list(small(name, 0.1)))
    assert tenth["decode_tokens_per_call"] < 0.15 * full["decode_tokens_per_call"]
    assert tenth["prefill_tokens_per_call"] < 0.3 * full["prefill_tokens_per_call"]
    # the programs keep their shape: a LATS search is as long at any scale
    assert (
        stats(list(built(name, 30, 0.1)))["calls_per_program"]
        == stats(list(built(name, 30)))["calls_per_program"]
    )


@pytest.mark.parametrize("branching", [5, 3])
def test_lats_expands_and_evaluates_in_parallel_stages_of_b(branching: int) -> None:
    for program in build_workload("lats", 5, 1.0, seed=1, scale=0.1, branching=branching):
        sizes = [len(stage.calls) for stage in program.stages]
        # per iteration: b sampling calls, b value calls, then one reflection unless solved
        assert sizes[:2] == [branching, branching]
        assert set(sizes) == {branching, 1} or sizes == [branching, branching]
        for i in range(0, len(sizes), 3):
            assert sizes[i : i + 3] in ([branching, branching, 1], [branching, branching])


def test_react_has_tool_delays_but_not_after_the_last_step() -> None:
    for program in small("react", 0.1):
        delays = [stage.calls[0].tool_delay for stage in program.stages]
        assert delays[-1] == 0.0
        assert all(d > 0 for d in delays[:-1])
    assert stats(list(small("react")))["tool_delay"] > 0


def test_mixed_has_all_three_kinds_in_equal_shares() -> None:
    programs = build_workload("mixed", 31, 1.0, seed=0, scale=0.1)
    kinds = [p.workload for p in programs]
    assert sorted({k: kinds.count(k) for k in set(kinds)}.values()) == [10, 10, 11]
    assert set(kinds) == {"chatbot", "react", "lats"}


def test_format_stats_shows_the_paper_beside_ours() -> None:
    table = format_stats(stats(list(small("react", 0.1))))
    assert "735.06" in table and "calls / program" in table


def test_workload_params_reach_the_builders() -> None:
    assert workload_params(["lats.iterations=2", "lats.c=0.5", "react.tool_delay=0"]) == {
        "lats": {"iterations": 2, "c": 0.5},
        "react": {"tool_delay": 0},
    }
    small_search = build_workload(
        "mixed", 6, 1.0, scale=0.1, **workload_params(["lats.iterations=1"])
    )
    assert max(len(p.stages) for p in small_search if p.workload == "lats") <= 3
    with pytest.raises(ValueError, match="KEY=VALUE"):
        workload_params(["iterations"])
    with pytest.raises(ValueError, match=r"workload lats: .*depth"):
        build_workload("lats", 2, 1.0, depth=3)


def test_workload_stats_cli_takes_parameters(capsys: pytest.CaptureFixture) -> None:
    from autellix.cli import main

    assert main(["workload", "stats", "lats", "--programs", "3", "--scale", "0.1",
                 "--workload-arg", "iterations=1"]) == 0  # fmt: skip
    calls = next(line for line in capsys.readouterr().out.splitlines() if "calls / program" in line)
    assert float(calls.split()[3]) <= 11  # one iteration: 5 samples, 5 values, 1 reflection
    assert main(["workload", "stats", "lats", "--workload-arg", "depth=3"]) == 2
    assert capsys.readouterr().err.startswith("autellix: error: workload lats: ")
    assert main(["workload", "stats", "agents", "--programs", "4", "--scale", "0.1"]) == 0
    assert capsys.readouterr().out.startswith("workload: agents (")  # not "mixed"


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("lats", ["iterations=x"], "workload lats: iterations must be an integer, not 'x'"),
        ("lats", ["iterations=1.5"], "workload lats: iterations must be an integer, not 1.5"),
        ("lats", ["iterations=0"], "workload lats: iterations must be at least 1, not 0"),
        ("lats", ["solve_prob=2"], "workload lats: solve_prob is a probability, not 2"),
        ("react", ["steps=x"], "workload react: steps must be a number, not 'x'"),
        ("chatbot", ["min_turns=True"], "workload chatbot: min_turns must be an integer"),
        ("chatbot", ["min_turns=0"], "workload chatbot: min_turns must be at least 1, not 0"),
        ("chatbot", ["min_turns=1000"], "workload chatbot: no conversation has min_turns=1000"),
        ("react", ["tool_delay=-1"], "workload react: tool_delay must be at least 0, not -1"),
        ("react", ["max_doc_chars=1"], "workload react: no task's documents fit in"),
        ("agents", ["max_turns=0"], "workload agents: max_turns must be at least 1, not 0"),
        ("mixed", ["lats.iterations=x"], "workload mixed: lats: iterations must be an integer"),
        ("mixed", ["lats=3"], "workload mixed: mixed takes lats.KEY=VALUE, not lats=3"),
    ],
)
def test_a_parameter_of_the_wrong_type_or_out_of_bounds_is_one_line(
    name: str, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    from autellix.cli import main

    argv = ["workload", "stats", name, "--programs", "3", "--scale", "0.1"]
    assert main([*argv, *(f"--workload-arg={a}" for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autellix: error: {message}") and err.count("\n") == 1


def test_results_title_names_the_seed_and_the_parameters() -> None:
    import argparse

    from autellix.bench.command import workload_title as _workload_title

    def title(seed: int, *items: str) -> str:
        args = argparse.Namespace(
            workload="mixed", programs=12, scale=0.1, seed=seed, workload_arg=list(items)
        )
        return _workload_title(args)

    assert title(0) == "mixed: 12 programs, scale 0.1"  # as every earlier run is titled
    assert title(1, "lats.iterations=2") == (
        "mixed: 12 programs, scale 0.1, seed 1, lats.iterations=2"
    )
