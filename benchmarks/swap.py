"""Swap 1,000 KV blocks out to host memory and back: one batched gather-and-copy against
one copy per block, both through the engine's own `swap_blocks`.

    python benchmarks/swap.py [--blocks 1000] [--repeat 5]

The KV geometry is SmolLM2-135M's (30 layers, 3 KV heads, head dim 64, fp32) with
16-token blocks; the blocks are scattered over a pool of 4x as many.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autellix.engine.executor import swap_blocks
from autellix.engine.model.attention import allocate_kv_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    n = args.blocks
    kv = allocate_kv_cache(30, 4 * n, 16, 3, 64, torch.float32, args.device)
    host = allocate_kv_cache(30, n, 16, 3, 64, torch.float32, "cpu")
    if args.device != "cpu":
        host = host.pin_memory()
    kv.normal_()
    dev_ids = torch.randperm(4 * n)[:n]
    host_ids = torch.randperm(n)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    out_pairs = list(zip(dev_ids.tolist(), host_ids.tolist(), strict=True))
    in_pairs = [(h, d) for d, h in out_pairs]

    def batched_out() -> None:
        swap_blocks(kv, host, out_pairs, [], batched=True)

    def batched_in() -> None:
        swap_blocks(kv, host, [], in_pairs, batched=True)

    def per_block_out() -> None:
        swap_blocks(kv, host, out_pairs, [], batched=False)

    def per_block_in() -> None:
        swap_blocks(kv, host, [], in_pairs, batched=False)

    def timed(fn) -> float:
        fn()
        sync()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    mib = n * kv[:, :, 0].numel() * 4 / 2**20
    threads = torch.get_num_threads()
    print(f"{n} blocks, {mib:.0f} MiB, device {args.device}, torch threads {threads}")
    print("| direction | batched ms | per-block ms | speed-up |")
    print("|---|---|---|---|")
    for name, batched, per_block in (
        ("out (device -> host)", batched_out, per_block_out),
        ("in (host -> device)", batched_in, per_block_in),
    ):
        b, p = timed(batched), timed(per_block)
        print(f"| {name} | {b * 1e3:.1f} | {p * 1e3:.1f} | {p / b:.1f}x |")
    batched_in()
    assert torch.equal(kv[:, :, dev_ids.to(args.device)].cpu(), host[:, :, host_ids])


if __name__ == "__main__":
    main()
