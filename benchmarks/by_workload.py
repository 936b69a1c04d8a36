"""Mean program token latency per workload kind, from a saved `autellix bench` run.

.venv/bin/python benchmarks/by_workload.py benchmarks/results/cpu-mixed-paper
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from autellix.bench.report import read_results


def main() -> None:
    _, records = read_results(Path(sys.argv[1]))
    kinds = sorted({r.workload for recs in records.values() for r in recs})
    print("| endpoint | rate | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 2) + "|")
    for (name, rate), recs in records.items():
        cells = []
        for kind in kinds:
            tok = [r.token_latency for r in recs if r.workload == kind and r.error is None]
            tok = [t for t in tok if t is not None]
            cells.append(f"{statistics.fmean(tok):.3f}" if tok else "-")
        print(f"| {name} | {rate:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
