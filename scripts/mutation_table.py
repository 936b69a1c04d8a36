"""The mutation-testing table of docs/mutation.md, from mutmut's own results.

Run from the repository root after `mutmut run` (``make mutation`` does both):

    python scripts/mutation_table.py              # per-module counts, as Markdown
    python scripts/mutation_table.py --survivors  # and every mutant not killed, with its diff
    mutmut results --all true > saved.txt; python scripts/mutation_table.py --results saved.txt

Counts come from ``mutmut results --all true``; nothing is counted by hand. "Detected"
is killed + timeout (a mutant that makes a test hang is caught too).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

MUTMUT = Path(sys.executable).with_name("mutmut")
LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")
# a mutant's name: <module>.x_<function>__mutmut_<n> or <module>.xǁ<Class>ǁ<method>__mutmut_<n>
MODULE = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ]")
COLUMNS = ("killed", "timeout", "survived", "no tests", "other")


def results(saved: Path | None = None) -> list[tuple[str, str]]:
    if saved is not None:
        out = saved.read_text()
    else:
        out = subprocess.run(
            [str(MUTMUT), "results", "--all", "true"], capture_output=True, text=True, check=True
        ).stdout
    return [(m["name"], m["status"]) for m in map(LINE.match, out.splitlines()) if m]


def module_of(name: str) -> str:
    match = MODULE.match(name)
    return match["module"] if match else name.rsplit(".", 1)[0]


def group_of(module: str) -> str:
    in_scheduling = module == "autellix.scheduling" or module.startswith("autellix.scheduling.")
    return "autellix.scheduling (all)" if in_scheduling else ""


def table(rows: list[tuple[str, str]]) -> str:
    counts: dict[str, Counter] = defaultdict(Counter)
    for name, status in rows:
        column = status if status in COLUMNS else "other"
        module = module_of(name)
        for key in (module, group_of(module), "total"):
            if key:
                counts[key][column] += 1
    order = sorted(k for k in counts if k != "total" and not k.endswith("(all)"))
    order += [*sorted(k for k in counts if k.endswith("(all)")), "total"]
    lines = [
        "| module | mutants | " + " | ".join(COLUMNS) + " | detected |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for key in order:
        c = counts[key]
        total = sum(c.values())
        detected = c["killed"] + c["timeout"]
        cells = " | ".join(str(c[col]) for col in COLUMNS)
        label = f"**{key}**" if key == "total" or key.endswith("(all)") else f"`{key}`"
        lines.append(f"| {label} | {total} | {cells} | {detected / total:.1%} |")
    return "\n".join(lines)


def survivors(rows: list[tuple[str, str]]) -> str:
    out = []
    for name, status in rows:
        if status in ("killed", "timeout"):
            continue
        diff = subprocess.run(
            [str(MUTMUT), "show", name], capture_output=True, text=True, check=False
        ).stdout
        out.append(f"### `{name}` ({status})\n\n```diff\n{diff.strip()}\n```\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list mutants not killed")
    parser.add_argument("--results", type=Path, help="a saved `mutmut results --all true`")
    args = parser.parse_args()
    rows = results(args.results)
    if not rows:
        sys.exit("no mutmut results: run `mutmut run` first")
    print(table(rows))
    if args.survivors:
        print()
        print(survivors(rows))


if __name__ == "__main__":
    main()
