"""Ratios over seeds: a geometric mean of per-seed ratios with a 95% Student-t interval,
and the table `autellix bench --seeds` writes of them."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from autellix.bench.metrics import Summary, equal_latency_table
from autellix.machine import this_machine


@dataclass(frozen=True)
class Ratio:
    value: float  # geometric mean over the seeds
    low: float  # 95% confidence interval (equal to value with one seed)
    high: float
    seeds: int

    def __str__(self) -> str:
        if self.seeds < 2:
            return f"{self.value:.2f} (1 seed)"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def ratio(base: list[float], other: list[float]) -> Ratio:
    """base/other per seed (pairs with a non-positive or missing value are dropped)."""
    logs = [
        math.log(b / o)
        for b, o in zip(base, other, strict=True)
        if b > 0 and o > 0 and math.isfinite(b) and math.isfinite(o)
    ]
    if not logs:
        return Ratio(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return Ratio(math.exp(mean), math.exp(mean), math.exp(mean), 1)
    half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return Ratio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs))


def seed_ratios(
    runs: list[dict[str, list[Summary]]],
    rates: list[float],
    baseline: str,
    bound: float | None,
    title: str,
    command: str,
    commit: str,
) -> str:
    """Markdown: per rate, each endpoint's mean and p95 program token latency as a ratio
    to the baseline's (above 1: lower than the baseline's), and throughput at equal
    latency; each over the runs (one a seed) with its 95% CI. `commit`: the one the runs
    started at."""
    lines = [
        f"### {title}: {len(runs)} seeds",
        "",
        f"- command: `{command}`",
        f"- at commit {commit} on {this_machine()}",
        "",
        f"| rate (prog/s) | endpoint | mean s/token | {baseline} / it, mean [95% CI] | p95 |",
        "|---|---|---|---|---|",
    ]
    first = runs[0]
    for rate in rates:
        base = [_at(run, baseline, rate) for run in runs]
        for name in first:
            mine = [_at(run, name, rate) for run in runs]
            mean = statistics.fmean(s.token_latency_mean for s in mine)
            lines.append(
                f"| {rate:g} | {name} | {mean:.3f} | {_ratio(base, mine, 'token_latency_mean')} "
                f"| {_ratio(base, mine, 'token_latency_p95')} |"
            )
    return "\n".join(lines + _throughput_lines(runs, baseline, bound)) + "\n"


def _ratio(base: list[Summary], mine: list[Summary], metric: str) -> Ratio:
    return ratio([getattr(s, metric) for s in base], [getattr(s, metric) for s in mine])


def _at(run: dict[str, list[Summary]], name: str, rate: float) -> Summary:
    found = [s for s in run.get(name, []) if s.rate == rate]
    return found[0] if found else Summary.of(name, rate, [])


def _throughput_lines(
    runs: list[dict[str, list[Summary]]], baseline: str, bound: float | None
) -> list[str]:
    tables = [equal_latency_table(run, baseline, bound)[1] for run in runs if baseline in run]
    at = f"{bound:.3f} s/token" if bound else "twice the baseline's at its lowest rate"
    lines = [
        "",
        f"Throughput at equal latency (the rate at which the mean program token latency "
        f"reaches {at}), it / {baseline}:",
        "",
        "| endpoint | ratio [95% CI] | seeds where the bound was never reached (--search) |",
        "|---|---|---|",
    ]
    for name in tables[0] if tables else []:
        mine = [t.get(name, (math.nan, math.nan, False)) for t in tables]
        base = [t[baseline] for t in tables]
        capped = sum(m[2] or b[2] for m, b in zip(mine, base, strict=True))
        # a rate capped at the highest measured one is no throughput: no ratio of it
        value = ratio([m[0] for m in mine], [b[0] for b in base]) if not capped else "n/a"
        lines.append(f"| {name} | {value} | {capped} |")
    return lines
