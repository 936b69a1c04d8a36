"""What a measurement ran on: results and profiles record it, since sessions land on
different VMs and rows from two machines must not be read side by side."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path

ISAS = [("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")]  # widest first


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (empty where /proc/cpuinfo is not)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
            elif line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    return cpu, flags


def this_machine() -> str:
    """The CPU model, its widest vector instructions and the cores this process may use
    (VMs with the same CPU name differ in the instructions they expose)."""
    cpu, flags = cpu_model_and_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    isa = next((name for flag, name in ISAS if flag in flags), None)
    return f"{cpu}{f' ({isa})' if isa else ''}, {cores} cores"


def this_commit() -> str:
    """The commit the code ran at, marked "+changes" when the work tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return f"{commit}+changes" if git("status", "--porcelain", "--untracked-files=no") else commit


def provenance(command: str, commit: str | None = None) -> list[str]:
    """The lines a results file ends with: its command, machine, commit (`this_commit()`
    when the run started: the work tree may change while it runs) and date."""
    return [
        f"Command: `{command}`",
        f"Machine: {this_machine()}",
        f"Commit: {commit or this_commit()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
    ]
