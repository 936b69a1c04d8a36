"""Products of a few rows, each matrix of the default model at 1-8 rows: oneDNN on packed
weights, the engine's linear layer (`--linear-kernel auto`: our C++ kernel reading those
packed weights in place up to 4 rows, oneDNN beyond) and a plain streaming product (this
script's own C++: each weight row read once, dotted with every input row; it needs the
weights in their plain row-major layout), as weight bytes read per second, beside the
machine's copy bandwidth; and the fixed cost per call, timed on a 64x64 matrix that stays
in cache.

    python benchmarks/one_row_products.py

Each shape cycles through as many distinct matrices as the model holds (30 per layer
shape, 2 for the lm_head), so the weights come from memory, as in a decode step.
Results: benchmarks/results/one-row-products-<commit>.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import cpp_extension

from autellix.engine.model.linear import PackedLinear, few_rows_kernels
from autellix.machine import provenance, this_commit

# the sibling scripts (this folder is on the path when a script in it runs): the model's
# matrices as linear_kernels.py times them, the copy bandwidth as decode_throughput.py
# measures its floor
from decode_throughput import bandwidth_gbs
from linear_kernels import SHAPES

ROOT = Path(__file__).resolve().parent.parent
SOURCE = r"""
#include <torch/extension.h>
// y[M, N] = x[M, K] @ w[N, K]^T for a few rows: each weight row streamed once.
torch::Tensor product(torch::Tensor x, torch::Tensor w) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* row = wp + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = xp + m * K;
      float s = 0.f;
      #pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += row[k] * xm[k];
      yp[m * N + n] = s;
    }
  }
  return y;
}
"""


def median_us(fn: Callable[[int], object], repeat: int) -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeat", type=int, default=120)
    args = parser.parse_args()
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
    plain = cpp_extension.load_inline(
        "one_row_products",
        SOURCE,
        functions=["product"],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
    )
    commit = this_commit()
    bandwidth = bandwidth_gbs()
    lines = [
        "# One-row products per matrix of SmolLM2-135M, fp32",
        "",
        f"{torch.get_num_threads()} torch threads; median of {args.repeat} calls; GB/s = the "
        f"matrix's bytes / time. Copy bandwidth of this machine: {bandwidth:.1f} GB/s (read +"
        " written, 256 MiB).",
        "",
        "| matrix | rows | onednn (us) | GB/s | engine (us) | GB/s | plain product (us) | GB/s "
        "| onednn / engine | onednn / plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    kernels = few_rows_kernels("auto", torch.float32)
    read_in_place: list[str] = []  # the matrices whose packed weights our kernel reads

    def onednn(layer: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, layer.packed, None, "none", [], "")

    with torch.inference_mode():
        for name, (out, inp, count) in SHAPES.items():
            weights = [torch.randn(out, inp) for _ in range(count)]
            packed = [
                PackedLinear(torch.nn.Linear(inp, out, bias=False), kernels) for _ in range(count)
            ]
            if all(p.kernels is not None for p in packed):
                read_in_place.append(name)
            gb = out * inp * 4 / 1e9
            for rows in args.rows:
                x = torch.randn(rows, inp)
                ref = x @ weights[0].T
                assert torch.allclose(plain.product(x, weights[0]), ref, rtol=1e-4, atol=1e-3)
                repeat = max(10, args.repeat // (1 + out // 8192))
                a = median_us(lambda i, x=x, p=packed: onednn(p[i % len(p)], x), repeat)
                e = median_us(lambda i, x=x, p=packed: p[i % len(p)](x), repeat)
                b = median_us(lambda i, x=x, w=weights: plain.product(x, w[i % len(w)]), repeat)
                row = (
                    f"| {name} | {rows} | {a:.0f} | {gb / a * 1e6:.1f} | {e:.0f} "
                    f"| {gb / e * 1e6:.1f} | {b:.0f} | {gb / b * 1e6:.1f} | {a / e:.2f}x "
                    f"| {a / b:.2f}x |"
                )
                lines.append(row)
                print(row, flush=True)
        small = PackedLinear(torch.nn.Linear(64, 64, bias=False), kernels)
        w, x = torch.randn(64, 64), torch.randn(1, 64)
        fixed = median_us(lambda _: onednn(small, x), 2000)
        fixed_engine = median_us(lambda _: small(x), 2000)
        fixed_plain = median_us(lambda _: plain.product(x, w), 2000)
    lines += [
        "",
        f"Fixed cost per call (a 64x64 matrix, one row, in cache): oneDNN {fixed:.1f} us, the "
        f"engine {fixed_engine:.1f} us, the plain product {fixed_plain:.1f} us. A decode step "
        "of the model makes 121 calls. The engine's kernel read the packed weights of: "
        f"{', '.join(read_in_place) or 'none'} (oneDNN ran the rest: the kernels did not "
        "build, or oneDNN chose a layout the kernel does not read).",
    ]
    command = "python benchmarks/one_row_products.py " + " ".join(sys.argv[1:])
    lines += ["", *(f"- {line}" for line in provenance(command.strip(), commit))]
    name = f"one-row-products-{commit.replace('+changes', '-dirty')}.md"
    (ROOT / "benchmarks/results" / name).write_text("\n".join(lines) + "\n")
    print(f"written: benchmarks/results/{name}")


if __name__ == "__main__":
    main()
