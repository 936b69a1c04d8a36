"""The linear kernels of `--linear-kernel` per matrix of the default model: torch's
``F.linear`` (MKL on a CPU) against oneDNN on packed weights (engine/model/linear.py), at
decode and prefill row counts, fp32 and bf16.

    python benchmarks/linear_kernels.py

Each layer shape cycles through as many distinct matrices as the model has layers (so the
weights come from memory, not cache, as in a decode step); the lm_head through two.
Results: benchmarks/results/linear-kernels-<commit>.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autellix.engine.model.linear import PackedLinear
from autellix.machine import provenance, this_commit

ROOT = Path(__file__).resolve().parent.parent
# SmolLM2-135M: (out, in) of its matrices as the model holds them (q/k/v and gate/up
# stacked at load), and how many of each; results before December 2026 timed q, k, gate apart
SHAPES = {
    "qkv_proj (960x576)": (960, 576, 30),
    "o_proj (576x576)": (576, 576, 30),
    "gate_up_proj (3072x576)": (3072, 576, 30),
    "down_proj (576x1536)": (576, 1536, 30),
    "lm_head (49152x576)": (49152, 576, 2),
}


def time_us(layers: list, x: torch.Tensor, repeat: int) -> float:
    for layer in layers:
        layer(x)
    start = time.perf_counter()
    for i in range(repeat):
        layers[i % len(layers)](x)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    parser.add_argument("--repeat", type=int, default=60)
    args = parser.parse_args()
    commit = this_commit()
    lines = [
        "# Linear kernels per matrix of SmolLM2-135M",
        "",
        f"microseconds per call, {torch.get_num_threads()} torch threads; torch = F.linear,"
        " onednn = PackedLinear",
        "",
        "| dtype | matrix | rows | torch (us) | onednn (us) | torch / onednn |",
        "|---|---|---|---|---|---|",
    ]
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            for name, (out, inp, count) in SHAPES.items():
                plain = [nn.Linear(inp, out, bias=False).to(dtype) for _ in range(count)]
                packed = [PackedLinear(layer) for layer in plain]
                for rows in args.rows:
                    x = torch.randn(rows, inp, dtype=dtype)
                    repeat = max(4, args.repeat // (1 + rows // 64) // (1 + out // 8192))
                    a = time_us([lambda x, w=p.weight: F.linear(x, w) for p in plain], x, repeat)
                    b = time_us(packed, x, repeat)
                    row = (
                        f"| {str(dtype)[6:]} | {name} | {rows} | {a:.0f} | {b:.0f} | {a / b:.2f}x |"
                    )
                    lines.append(row)
                    print(row, flush=True)
    command = "python benchmarks/linear_kernels.py " + " ".join(sys.argv[1:])
    lines += ["", *(f"- {line}" for line in provenance(command.strip(), commit))]
    out = ROOT / "benchmarks/results" / f"linear-kernels-{commit.replace('+changes', '-dirty')}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
