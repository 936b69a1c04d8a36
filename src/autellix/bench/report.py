"""Bench results on disk: JSON (everything), CSV (summaries), a PNG plot, a markdown table."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from autellix.bench.metrics import Summary, equal_latency_table
from autellix.bench.runner import CallRecord, ProgramRecord


def write_results(
    out: Path,
    title: str,
    summaries: dict[str, list[Summary]],
    records: dict[tuple[str, float], list[ProgramRecord]],
    baseline: str,
    bound: float | None = None,
    calls: bool = True,
    footer: Sequence[str] = (),
) -> str:
    """Write results.json, summary.csv, latency.png and summary.md under `out`; return
    the markdown. Without `calls`, each program record keeps its totals but not its
    calls (simulations at GPU scale have hundreds of thousands). `footer`: lines that
    end summary.md (the command and commit that made it)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(s) for ss in summaries.values() for s in ss]
    (out / "results.json").write_text(
        json.dumps(
            {
                "title": title,
                "summaries": rows,
                "records": {
                    f"{name}@{rate}": [_record(r, calls) for r in recs]
                    for (name, rate), recs in records.items()
                },
            },
            indent=1 if calls else None,
        )
    )
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()  # a run's counters and per-class hit rates as JSON cells
        writer.writerows(
            {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()} for row in rows
        )
    plot(out / "latency.png", title, summaries)
    markdown = table(title, summaries, baseline, bound) + "".join(f"\n{line}\n" for line in footer)
    (out / "summary.md").write_text(markdown)
    return markdown


def _record(record: ProgramRecord, calls: bool) -> dict:
    if calls:
        return dataclasses.asdict(record)
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    del fields["calls"]
    return {**fields, "num_calls": len(record.calls), "decode_tokens": record.decode_tokens}


def merge_summaries(into: dict[str, list[Summary]], new: dict[str, list[Summary]]) -> None:
    """Add `new` to `into` (`bench --append`): new endpoints, or new rates of one already
    there; a rate measured again replaces the old measurement."""
    for name, summaries in new.items():
        by_rate = {s.rate: s for s in into.get(name, [])} | {s.rate: s for s in summaries}
        into[name] = sorted(by_rate.values(), key=lambda s: s.rate)


def read_results(
    out: Path,
) -> tuple[dict[str, list[Summary]], dict[tuple[str, float], list[ProgramRecord]]]:
    """What `write_results` wrote, to add more endpoints to a run (`bench --append`);
    records only where they were written with their calls."""
    data = json.loads((out / "results.json").read_text())
    summaries: dict[str, list[Summary]] = {}
    for row in data["summaries"]:
        summaries.setdefault(row["endpoint"], []).append(Summary(**row))
    records = {}
    for key, recs in data["records"].items():
        if recs and "calls" not in recs[0]:
            continue  # written without calls: the summaries are what can be read back
        name, _, rate = key.rpartition("@")
        records[(name, float(rate))] = [
            ProgramRecord(**{**r, "calls": [CallRecord(**c) for c in r["calls"]]}) for r in recs
        ]
    return summaries, records


def plot(path: Path, title: str, summaries: dict[str, list[Summary]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, ss in summaries.items():
        ss = sorted(ss, key=lambda s: s.rate)
        rates = [s.rate for s in ss]
        axes[0].plot(rates, [s.token_latency_mean for s in ss], marker="o", label=name)
        axes[1].plot(rates, [s.latency_p99 for s in ss], marker="o", label=name)
    axes[0].set_ylabel("mean program token latency (s/token)")
    axes[1].set_ylabel("p99 program latency (s)")
    for ax in axes:
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(
    title: str, summaries: dict[str, list[Summary]], baseline: str, bound: float | None = None
) -> str:
    lines = [
        f"### {title}",
        "",
        "| endpoint | rate (prog/s) | done/all | mean latency (s) | p95 | p99 "
        "| mean token latency (s/tok) | p95 | p99 | mean TTFT (s) | prefix-cache hit rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ss in summaries.items():
        for s in sorted(ss, key=lambda s: s.rate):
            hits = "n/a" if s.prefix_hit_rate is None else f"{s.prefix_hit_rate:.0%}"
            lines.append(
                f"| {name} | {s.rate:g} | {s.completed}/{s.programs} | {s.latency_mean:.2f} "
                f"| {s.latency_p95:.2f} | {s.latency_p99:.2f} | {s.token_latency_mean:.3f} "
                f"| {s.token_latency_p95:.3f} | {s.token_latency_p99:.3f} | {s.ttft_mean:.2f} "
                f"| {hits} |"
            )
    lines += machines(summaries)
    lines += counters_table(summaries)
    one_rate = len({s.rate for ss in summaries.values() for s in ss}) == 1
    if baseline in summaries and one_rate and bound is None:
        # the bound is twice the baseline's latency at this rate: every endpoint is under it
        lines += [
            "",
            "Throughput at equal latency: not computed, as every endpoint ran at one arrival "
            "rate; give several `--rates`, or `--search STEPS`, to find the rate at which each "
            "reaches the same latency.",
        ]
    elif baseline in summaries:
        bound, tps = equal_latency_table(summaries, baseline, bound)
        lines += [
            "",
            f"Throughput at equal latency (mean program token latency <= "
            f"{bound:.3f} s/token), against {baseline}:",
            "",
            "| endpoint | throughput (prog/s) | ratio |",
            "|---|---|---|",
        ]
        at_least = {True: ">= ", False: ""}
        lines += [
            f"| {n} | {at_least[capped]}{tp:.3g} | {at_least[capped]}{ratio:.2f}x |"
            for n, (tp, ratio, capped) in tps.items()
        ]
        lines += [
            "",
            "Throughput: the arrival rate at which the mean program token latency reaches the "
            "bound, interpolated between the measured rates; >= where it never did.",
        ]
    return "\n".join(lines) + "\n"


def counters_table(summaries: dict[str, list[Summary]]) -> list[str]:
    """What the engines counted over each run (Autellix's /metrics), where any did."""
    rows = [(n, s) for n, ss in summaries.items() for s in sorted(ss, key=lambda s: s.rate)]
    if not any(s.counters or s.hit_rate_by_kind for _, s in rows):
        return []
    lines = [
        "",
        "What the engines counted over each run: the prefix-cache hit rate of the program "
        "classes that looked up the most tokens (the rest together; 'no class': calls with "
        "neither a named class nor a system prompt); running calls "
        "preempted, and those whose KV left the device; KV retention's "
        "pins made, and those whose program's next call used them (blocks reused); the "
        "seconds calls waited, summed, for blocks that pins held; retention's copies to "
        "host memory and back.",
        "",
        "| endpoint | rate (prog/s) | hit rate by program class | preemptions | evictions "
        "| pins made | pins hit (blocks) | waited for pins (s) | to host / back (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        rates = (s.hit_rate_by_kind or {}).items()  # the classes that looked up most first
        kinds = ", ".join(f"{k or 'no class'} {r:.0%}" for k, r in rates) or "n/a"
        c = s.counters or {}
        lines.append(
            f"| {name} | {s.rate:g} | {kinds} | {counter(c, 'preemptions')} "
            f"| {counter(c, 'evictions')} | {counter(c, 'pins_made')} "
            f"| {counter(c, 'pins_hit')} ({counter(c, 'pin_hit_blocks')}) "
            f"| {counter(c, 'pin_blocked_seconds', digits=1)} "
            f"| {counter(c, 'retention_swap_out_bytes', 2**20)} "
            f"/ {counter(c, 'retention_swap_in_bytes', 2**20)} |"
        )
    return lines


def counter(counters: dict[str, float], key: str, unit: float = 1.0, digits: int = 0) -> str:
    return f"{counters[key] / unit:.{digits}f}" if key in counters else "n/a"


def machines(summaries: dict[str, list[Summary]]) -> list[str]:
    """A line naming the machine, or a warning when the rows come from several."""
    by_machine: dict[str, list[str]] = {}
    for name, ss in summaries.items():
        for s in ss:
            label = s.machine or "not recorded"
            if name not in by_machine.setdefault(label, []):
                by_machine[label].append(name)
    if set(by_machine) <= {"not recorded"}:
        return []
    if len(by_machine) == 1:
        return ["", f"Machine: {next(iter(by_machine))}."]
    groups = "; ".join(f"{m}: {', '.join(names)}" for m, names in by_machine.items())
    return ["", f"**Measured on different machines; compare only rows of one machine.** {groups}."]
