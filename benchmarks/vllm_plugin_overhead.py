"""What the Autellix scheduler plug-in adds to vLLM's own scheduling per step, side by side
in one process: vLLM 0.32's V1 `Scheduler` against `AutellixScheduler`, both real, driven
without a model (tests/vllm_plugin/harness.py: one made-up token per call per step), at
32, 256 and 1,024 running calls with as many waiting. Run in vLLM's environment:

    .venv-vllm/bin/python benchmarks/vllm_plugin_overhead.py \\
        --out benchmarks/results/vllm-plugin-overhead.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm_plugin"))

from harness import build
from vllm.v1.core.sched.scheduler import Scheduler

from autellix.machine import this_commit, this_machine
from autellix.vllm_scheduler import AutellixScheduler


def per_step(cls: type[Scheduler], running: int, steps: int) -> float:
    """Median seconds of one schedule + update_from_output with `running` calls in the
    batch and as many waiting (a new program each), once the batch is full."""
    engine = build(cls, max_num_seqs=running, num_blocks=running * 2 * 4 + 64)
    for i in range(2 * running):
        engine.add(f"p{i % (running // 2 + 1)}", prompt=16, tokens=100_000)
    for _ in range(3):  # prefills
        engine.step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, nargs="+", default=[32, 256, 1024])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [
        "# The vLLM scheduler plug-in's cost per step",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}",
        f"- median of {args.steps} steps each; a step is schedule() + update_from_output() with"
        " a made-up model output (the same for both)",
        "",
        "| running (+ as many waiting) | vLLM Scheduler (ms) | AutellixScheduler (ms)"
        " | added (ms) |",
        "|---|---|---|---|",
    ]
    for running in args.running:
        base = per_step(Scheduler, running, args.steps)
        ours = per_step(AutellixScheduler, running, args.steps)
        lines.append(
            f"| {running} | {base * 1e3:.2f} | {ours * 1e3:.2f} | {(ours - base) * 1e3:.2f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
