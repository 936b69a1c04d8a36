"""The rate search brackets and narrows the crossing of the latency bound."""

from __future__ import annotations

import dataclasses
import re

import pytest

from autellix.bench.metrics import Summary, throughput_at_latency
from autellix.bench.search import search_rate
from autellix.bench.stats import ratio


def point(rate: float, capacity: float = 3.0) -> Summary:
    """An M/M/1-like latency curve: 0.1 s/token, growing without bound near capacity."""
    latency = 0.1 / (1 - rate / capacity) if rate < capacity else float("nan")
    failed = int(rate >= capacity)
    return Summary("x", rate, 10, 10 - failed, failed, 1, 1, 1, latency, latency, latency, 0, 1)


def crossing(bound: float, capacity: float = 3.0) -> float:
    return capacity * (1 - 0.1 / bound)


@pytest.mark.parametrize("rates", [[0.1, 0.2], [0.1, 0.2, 0.4, 8.0], [5.0, 6.0]])
def test_the_search_finds_the_crossing_from_any_sweep(rates) -> None:
    measured: list[float] = []

    def measure(rate: float) -> Summary:
        measured.append(rate)
        return point(rate)

    points = [point(r) for r in rates]
    new = search_rate(measure, points, bound=0.2, steps=6)
    assert [s.rate for s in new] == measured
    rate, capped = throughput_at_latency([*points, *new], bound=0.2)
    assert not capped
    assert rate == pytest.approx(crossing(0.2), rel=0.05)  # 1.5 prog/s


def test_without_the_search_the_crossing_is_only_a_lower_bound() -> None:
    points = [point(r) for r in (0.1, 0.2)]
    rate, capped = throughput_at_latency(points, bound=0.2)
    assert capped and rate == 0.2


def test_a_sweep_that_already_brackets_is_only_narrowed() -> None:
    points = [point(r) for r in (1.0, 2.0)]
    new = search_rate(point, points, bound=0.2, steps=2)
    assert len(new) == 2 and all(1.0 < s.rate < 2.0 for s in new)


def test_ratio_over_seeds_is_a_geometric_mean_with_a_t_interval() -> None:
    r = ratio([2.0, 4.0, 8.0], [1.0, 1.0, 1.0])
    assert r.value == pytest.approx(4.0) and r.seeds == 3
    assert r.low < 4.0 < r.high
    assert r.low == pytest.approx(4.0 * 2 ** -(4.302653 * 1.0 / 3**0.5), rel=1e-4)
    same = ratio([2.0, 2.0], [1.0, 1.0])
    assert (same.low, same.high) == (2.0, 2.0)
    assert str(ratio([3.0], [1.5])) == "2.00 (1 seed)"


def test_bench_with_seeds_and_search_writes_ratios_with_intervals(monkeypatch, tmp_path) -> None:
    """`autellix bench --seeds 3 --search 5` over two endpoints whose capacity differs 2x
    (the sweep is replaced by latency curves; seed s makes the fast one 1 + s/10 faster)."""
    import autellix.bench.sweep as sweep_module
    from autellix.cli import main

    capacity = {"fcfs": 2.0, "fast": 4.0}
    seen: list[tuple[str, float, int]] = []

    def fake_sweep(build, endpoints, rates, timeout=None):
        seed = build(1.0)
        summaries = {e.name: [] for e in endpoints}
        for e in endpoints:
            for rate in rates:
                seen.append((e.name, rate, seed))
                s = point(rate, capacity[e.name] * (1 + seed / 10 if e.name == "fast" else 1))
                summaries[e.name].append(dataclasses.replace(s, endpoint=e.name))
        return summaries, {}, {}

    monkeypatch.setattr(sweep_module, "sweep", fake_sweep)
    monkeypatch.setattr(
        "autellix.bench.command.workload_builder", lambda args: lambda rate: args.seed
    )
    monkeypatch.setattr("autellix.bench.report.write_results", lambda *a, **k: "")
    monkeypatch.setattr("autellix.machine.this_commit", lambda: "later" if seen else "at-start")
    argv = ["bench", "chatbot", "--endpoint", "fcfs=http://x/v1", "--endpoint", "fast=http://y/v1"]
    argv += ["--rates", "0.5", "--seeds", "3", "--search", "5", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert {seed for _, _, seed in seen} == {0, 1, 2}
    assert max(rate for name, rate, _ in seen if name == "fast") > 2.0  # searched past 0.5
    text = (tmp_path / "ratios.md").read_text()
    assert "3 seeds" in text and "--search 5" in text
    assert "- at commit at-start on " in text  # what ran, not what was committed meanwhile
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if "|" in line}
    fast = rows["fast"].split("|")
    value, low, high = map(float, re.findall(r"[\d.]+", fast[2]))
    # per seed, throughput at the bound is in proportion to capacity: 2, 2.2, 2.4
    assert value == pytest.approx((2 * 2.2 * 2.4) ** (1 / 3), rel=0.02)
    assert low < 2.0 and high > 2.4
    assert fast[3].strip() == "0"  # the bound was crossed on every seed
    assert "fcfs / it" in text


def test_without_a_crossing_no_throughput_ratio_is_claimed() -> None:
    from autellix.bench.stats import seed_ratios

    runs = [
        {n: [dataclasses.replace(point(0.5, c), endpoint=n)] for n, c in caps}
        for caps in [[("fcfs", 2.0), ("fast", 4.0)]] * 2
    ]
    text = seed_ratios(runs, [0.5], "fcfs", None, "t", "cmd", "abc123")
    assert "- at commit abc123 on " in text
    assert "| fast | n/a | 2 |" in text


def test_a_single_run_records_its_command_and_the_commit_it_started_at(
    monkeypatch, tmp_path
) -> None:
    import autellix.bench.sweep as sweep_module
    from autellix.cli import main

    def fake_sweep(build, endpoints, rates, timeout=None):
        hits = {"fcfs": 0.42, "frontend": None}  # a frontend over backends reads none
        summaries = {
            e.name: [dataclasses.replace(point(r), endpoint=e.name, prefix_hit_rate=hits[e.name])]
            for e in endpoints
            for r in rates
        }
        monkeypatch.setattr("autellix.machine.this_commit", lambda: "later")
        return summaries, {}, {}

    monkeypatch.setattr(sweep_module, "sweep", fake_sweep)
    monkeypatch.setattr("autellix.bench.command.workload_builder", lambda args: lambda rate: 0)
    monkeypatch.setattr("autellix.machine.this_commit", lambda: "at-start")
    argv = ["bench", "chatbot", "--endpoint", "fcfs=http://x/v1"]
    argv += ["--endpoint", "frontend=http://y/v1", "--rates", "0.5"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| prefix-cache hit rate |" in summary
    assert "\n| fcfs | 0.5 | " in summary and "\n| frontend | 0.5 | " in summary
    rows = {line.split(" | ")[0]: line for line in summary.splitlines() if " | 0.5 | " in line}
    assert rows["| fcfs"].endswith("| 42% |") and rows["| frontend"].endswith("| n/a |")
    assert f"Command: `autellix {' '.join(argv)} --out {tmp_path}`" in summary
    assert "Commit: at-start" in summary
