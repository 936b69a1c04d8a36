"""The paper's metrics on hand-made records."""

import math

import pytest

from autellix.bench.metrics import Summary, equal_latency_table, percentile, throughput_at_latency
from autellix.bench.runner import CallRecord, ProgramRecord


def program(arrival: float, end: float | None, tokens: list[int], error=None) -> ProgramRecord:
    calls = [
        CallRecord(0, i, arrival, first_token=arrival + 0.5, end=end, output_tokens=t)
        for i, t in enumerate(tokens)
    ]
    return ProgramRecord("p", "chatbot", arrival, end, calls, error)


def test_program_latency_and_token_latency() -> None:
    p = program(1.0, 11.0, [10, 30])  # parallel threads: all threads' tokens count
    assert p.latency == 10.0 and p.decode_tokens == 40 and p.token_latency == 0.25
    assert program(0.0, None, [5]).latency is None


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 95) == 95 and percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0 and math.isnan(percentile([], 50))


def test_summary_counts_failures_apart() -> None:
    recs = [program(0, 4, [4]), program(0, 8, [4]), program(0, None, [1], error="boom")]
    s = Summary.of("x", 1.0, recs)
    assert (s.programs, s.completed, s.failed) == (3, 2, 1)
    assert s.latency_mean == 6.0 and s.token_latency_mean == 1.5 and s.ttft_mean == 0.5


def summaries(name: str, points: list[tuple[float, float]], failed_at=()) -> list[Summary]:
    out = []
    for rate, tok in points:
        s = Summary.of(name, rate, [program(0, 1, [1])])
        s.token_latency_mean = tok
        s.failed = 1 if rate in failed_at else 0
        out.append(s)
    return out


def test_throughput_at_equal_latency_and_ratios() -> None:
    fcfs = summaries("fcfs", [(0.5, 0.1), (1.0, 0.3), (2.0, 2.0)])
    atlas = summaries("atlas", [(0.5, 0.1), (1.0, 0.12), (2.0, 0.15), (4.0, 0.5)])
    # fcfs crosses 0.2 between 0.5 (0.1) and 1.0 (0.3); atlas between 2.0 and 4.0
    assert throughput_at_latency(fcfs, 0.2) == (pytest.approx(0.75), False)
    assert throughput_at_latency(atlas, 0.2) == (pytest.approx(2 + 2 * 0.05 / 0.35), False)
    bound, table = equal_latency_table({"fcfs": fcfs, "atlas": atlas}, "fcfs")
    assert bound == 0.2  # twice the baseline's latency at its lowest rate
    assert table["fcfs"] == (pytest.approx(0.75), 1.0, False)
    assert table["atlas"][1] == pytest.approx((2 + 2 * 0.05 / 0.35) / 0.75)
    # never over the bound: the highest rate measured, marked as a lower bound
    assert throughput_at_latency(atlas, 1.0) == (4.0, True)
    assert throughput_at_latency(atlas, 0.05) == (0.0, False)
    # a rate where programs failed counts as over the bound, however fast the rest were
    broken = summaries("atlas", [(0.5, 0.1), (2.0, 0.1)], failed_at=(2.0,))
    assert throughput_at_latency(broken, 0.2) == (0.5, False)


def test_append_adds_rates_and_replaces_a_rate_run_again() -> None:
    from autellix.bench.report import merge_summaries

    def at(name: str, rate: float, end: float) -> Summary:
        return Summary.of(name, rate, [program(0.0, end, [10])])

    saved = {
        "atlas": [at("atlas", 0.1, 1.0), at("atlas", 0.2, 2.0)],
        "vllm": [at("vllm", 0.1, 5.0)],
    }
    merge_summaries(saved, {"atlas": [at("atlas", 0.4, 4.0), at("atlas", 0.1, 3.0)]})
    assert [(s.rate, s.latency_mean) for s in saved["atlas"]] == [
        (0.1, 3.0),
        (0.2, 2.0),
        (0.4, 4.0),
    ]
    assert [s.rate for s in saved["vllm"]] == [0.1]


def test_table_names_the_machine_and_warns_when_rows_come_from_several() -> None:
    from autellix.bench.report import table
    from autellix.machine import this_machine

    here = this_machine()
    assert here.endswith(" cores") and len(here) > len(" cores")

    def at(name: str, machine: str) -> Summary:
        return Summary.of(name, 0.1, [program(0.0, 1.0, [10])], machine)

    one = table("t", {"a": [at("a", "cpu X")], "b": [at("b", "cpu X")]}, "a")
    assert "Machine: cpu X." in one and "different machines" not in one
    two = table("t", {"a": [at("a", "cpu X")], "b": [at("b", "cpu Y")], "c": [at("c", "")]}, "a")
    assert "**Measured on different machines" in two
    assert "cpu X: a; cpu Y: b; not recorded: c." in two
    # results written before machines were recorded (and simulations) say nothing
    assert "Machine" not in table("t", {"a": [at("a", "")]}, "a")


def test_one_rate_gives_no_equal_latency_table_and_says_why() -> None:
    """At one rate the default bound (twice the baseline's latency there) is met by every
    endpoint, so each ratio would only read '>= 1.00x'."""
    from autellix.bench.report import table

    def at(name: str, rate: float, end: float) -> Summary:
        return Summary.of(name, rate, [program(0.0, end, [10])])

    one = table("t", {"a": [at("a", 8.0, 2.0)], "b": [at("b", 8.0, 1.0)]}, "a")
    assert "not computed, as every endpoint ran at one arrival rate" in one
    assert "| endpoint | throughput (prog/s) | ratio |" not in one
    # a bound given, or a sweep over rates: the table
    bounded = table("t", {"a": [at("a", 8.0, 2.0)], "b": [at("b", 8.0, 1.0)]}, "a", bound=0.15)
    assert "| endpoint | throughput (prog/s) | ratio |" in bounded
    swept = {"a": [at("a", 1.0, 1.0), at("a", 8.0, 2.0)], "b": [at("b", 8.0, 1.0)]}
    assert "| endpoint | throughput (prog/s) | ratio |" in table("t", swept, "a")
