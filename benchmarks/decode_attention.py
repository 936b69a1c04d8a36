"""Decode attention per step: one padded group with a fresh gather a layer, the same with
gathers reused across layers, length groups with reused gathers (torch's path, the engine's
before the C++ kernel) and the C++ kernel that reads the blocks in place (the engine's
default on a CPU, `--attention-kernel paged`), side by side in one process.

SmolLM2-135M's shapes (9 query heads, 3 KV heads, head size 64, 30 layers, 16-token
blocks), blocks scattered at random over the pool, every sequence decoding one token.
Each row's sequences have context lengths drawn uniformly from its range. Timed in a
thread, as the server's engine runs, with glibc set as the engine sets it
(`keep_freed_memory`): what a layer allocates above 32 MiB still comes from and goes
back to the OS. The median of ``--repeat`` interleaved rounds.

    python benchmarks/decode_attention.py --out benchmarks/results/decode-attention-kernel.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from autellix.engine.memory import keep_freed_memory
from autellix.engine.model import attention
from autellix.engine.model.attention import AttentionMetadata, allocate_kv_cache, paged_attention
from autellix.machine import provenance

HEADS, KV_HEADS, DIM, BLOCK, LAYERS = 9, 3, 64, 16, 30
CASES = [
    (1, 20, 300),
    (1, 100, 1200),
    (8, 100, 1200),
    (32, 20, 300),
    (32, 100, 1200),
    (32, 1000, 1200),
    (128, 100, 1200),
]
VARIANTS = (
    "one group, fresh gathers",
    "one group, reused gathers",
    "length groups (torch path)",
    "C++ kernel (now)",
)


def step(lens: list[int], variant: str) -> Callable[[], None]:
    """A function that runs one step's decode attention over all layers."""
    rng = random.Random(0)
    num_blocks = sum(-(-(n + 1) // BLOCK) for n in lens) + 1
    kv_cache = allocate_kv_cache(1, num_blocks, BLOCK, KV_HEADS, DIM)
    kv_cache.normal_()
    free = list(range(1, num_blocks))
    rng.shuffle(free)
    tables = []
    for n in lens:
        need = -(-(n + 1) // BLOCK)
        tables.append(free[:need])
        free = free[need:]
    q = torch.randn(len(lens), HEADS, DIM)
    k, v = torch.randn(len(lens), KV_HEADS, DIM), torch.randn(len(lens), KV_HEADS, DIM)
    groups = attention.MAX_DECODE_GROUPS
    one_group = variant in VARIANTS[:2]
    kernel = variant == VARIANTS[3]

    def run() -> None:
        attention.MAX_DECODE_GROUPS = 1 if one_group else groups
        try:
            meta = AttentionMetadata.build(
                tables, lens, [1] * len(lens), BLOCK, decode_kernel=kernel
            )
        finally:
            attention.MAX_DECODE_GROUPS = groups
        for _ in range(LAYERS):
            if variant == VARIANTS[0]:
                for d in meta.decodes:
                    d.keys = d.values = None  # each layer gathers into new tensors
            paged_attention(q, k, v, kv_cache, 0, meta)

    return run


def timed(run: Callable[[], None]) -> float:
    """Seconds for one call of ``run``, in a thread of its own."""
    result: list[float] = []

    def body() -> None:
        start = time.perf_counter()
        run()
        result.append(time.perf_counter() - start)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return result[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    rows = []
    for batch, low, high in CASES:
        lens = [random.Random(i).randint(low, high) for i in range(batch)]
        runs = {name: step(lens, name) for name in VARIANTS}
        for run in runs.values():
            timed(run)  # warm up
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeat):
            for name, run in runs.items():
                times[name].append(timed(run))
        ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        meta = AttentionMetadata.build([[0] * 80] * batch, lens, [1] * batch, BLOCK)
        rows.append(
            f"| {batch} | {low}-{high} | {len(meta.decodes)} | "
            + " | ".join(f"{ms[name]:.1f}" for name in VARIANTS)
            + f" | {ms[VARIANTS[2]] / ms[VARIANTS[3]]:.2f}x |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# Decode attention per step",
        "",
        f"SmolLM2-135M shapes ({LAYERS} layers, {HEADS} query and {KV_HEADS} KV heads of "
        f"{DIM}, {BLOCK}-token blocks), one decode token per sequence, {args.threads} torch "
        f"threads, ms per step (all layers), median of {args.repeat}.",
        "",
        "| sequences | context lengths | length groups | "
        + " | ".join(VARIANTS)
        + " | torch path / kernel |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *provenance(f"python {' '.join(sys.argv)}"),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
