"""Memory the process table holds per program, to size `--max-programs`.

Fills a table the way the server does (each program started by a tenant under a client's
id, its kind from a system prompt, a few calls that ran and finished on a replica, then
idle until the TTL reaps it) and measures what it allocated: by tracemalloc, and by the
growth of the process's resident set (another table, without tracemalloc's own cost).
Also times the reaper's scan of the full table, which the server's loop runs every 5 s.
Writes benchmarks/results/table-memory.md.

    python benchmarks/table_memory.py [--programs 100000] [--calls 3]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from autellix.machine import this_commit, this_machine
from autellix.programs import ProcessTable, kind_of

OUT = Path(__file__).parent / "results" / "table-memory.md"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(table: ProcessTable, programs: int, calls: int) -> None:
    for i in range(programs):
        tenant = f"tenant-{i % 8}"
        name = f"agent-{i:08d}-{i * 2654435761 % 2**32:08x}"  # as long as an SDK's ids
        program = table.start(name, tenant=tenant)
        system = {"role": "system", "content": f"You are agent kind {i % 16}."}
        for c in range(calls):
            call, _ = table.call_arrived(program.program_id, str(c), kind=kind_of([system]))
            table.call_finished(program.program_id, call.call_id, 0.01, 0.05, engine=0)


def traced(programs: int, calls: int) -> float:
    """Bytes per program, by tracemalloc."""
    table = ProcessTable(ttl=float("inf"))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fill(table, programs, calls)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == programs
    return (after - before) / programs


def resident(programs: int, calls: int) -> tuple[float, float]:
    """(bytes per program by the resident set's growth, the reaper's scan in ms)."""
    table = ProcessTable(ttl=float("inf"))
    gc.collect()
    rss = rss_kib()
    fill(table, programs, calls)
    gc.collect()
    grown = (rss_kib() - rss) * 1024 / programs
    scans = []
    for _ in range(5):
        start = time.perf_counter()
        table.reap()
        scans.append((time.perf_counter() - start) * 1000)
    return grown, statistics.median(scans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    by_rss, scan_ms = resident(args.programs, args.calls)
    by_trace = traced(args.programs, args.calls)
    command = "python benchmarks/table_memory.py " + " ".join(sys.argv[1:])
    rows = [
        "# Process table memory per program",
        "",
        f"Command: `{command.strip()}`. Machine: {this_machine()}, Python "
        f"{sys.version.split()[0]}. Commit: {this_commit()}. "
        f"Date: {datetime.date.today().isoformat()}.",
        "",
        f"{args.programs:,} idle programs (8 tenants, 16 kinds, {args.calls} finished calls "
        "each, ids of 26 characters), as the server holds them until the TTL reaps them.",
        "",
        "| programs | bytes/program (tracemalloc) | bytes/program (RSS growth) | reaper scan |",
        "|---|---|---|---|",
        f"| {args.programs:,} | {by_trace:,.0f} | {by_rss:,.0f} | {scan_ms:.1f} ms |",
        "",
    ]
    OUT.write_text("\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
