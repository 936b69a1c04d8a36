"""Autellix's frontend in front of the real vLLM (`autellix serve --backend`), checked end
to end: the same answers as vLLM gives directly, and vLLM's queue reordered by the
programs' history (`--backend-priority`).

Start vLLM with priority scheduling and one running call, and the frontend over it:

    benchmarks/peers/vllm_cpu.sh serve 8100 --scheduling-policy priority --max-num-seqs 1
    .venv/bin/autellix serve --port 8000 --backend http://127.0.0.1:8100 --backend-priority
    .venv/bin/python benchmarks/vllm_backend.py --vllm http://127.0.0.1:8100 \\
        --frontend http://127.0.0.1:8000 --out benchmarks/results/vllm-backend.md

The order check: a program "heavy" first gets some service through the frontend; then a
long call holds vLLM's only slot, a call of "heavy" arrives, then a call of a fresh
program. Sent through the frontend, the fresh program's call should finish first (its
queue is lower); sent to vLLM directly (no priorities), the heavy one (it came first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import httpx
import openai

from autellix.machine import this_commit, this_machine


async def order(base: str, model: str, headers: bool) -> list[str]:
    finished: list[str] = []
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as c:

        async def call(program: str, max_tokens: int, prompt: str = "Count to fifty.") -> None:
            await c.completions.create(
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=0,
                extra_body={"ignore_eos": True},
                extra_headers={"X-Autellix-Program": program} if headers else None,
            )
            finished.append(program)

        for _ in range(3):  # the heavy program's history
            await call("heavy", 96)
        finished.clear()
        hog = asyncio.create_task(call("hog", 400))
        await asyncio.sleep(1.0)  # the long call holds the slot
        heavy = asyncio.create_task(call("heavy", 8))
        await asyncio.sleep(0.5)
        fresh = asyncio.create_task(call("fresh", 8))
        await asyncio.gather(hog, heavy, fresh)
    return [p for p in finished if p != "hog"]


def answers(base: str, model: str) -> list[str]:
    out = []
    with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as c:
        ask = {"model": model, "max_tokens": 24, "temperature": 0}
        out.append(c.completions.create(prompt="The capital of France is", **ask).choices[0].text)
        stream = c.completions.create(prompt="Name three colours:", stream=True, **ask)
        out.append("".join(ch.choices[0].text for ch in stream if ch.choices))
        messages = [{"role": "user", "content": "What is a KV cache?"}]
        out.append(c.chat.completions.create(messages=messages, **ask).choices[0].message.content)
    return out


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def agent_fields(vllm: str, model: str, frontend: str, front_model: str) -> list[str]:
    """Tool calls and JSON through the frontend over vLLM (grammars as vLLM's
    structured_outputs), sampled at temperature 1 over 10 seeds; logprobs against vLLM's."""
    rows = []
    with (
        openai.OpenAI(base_url=f"{frontend}/v1", api_key="x", max_retries=0) as c,
        openai.OpenAI(base_url=f"{vllm}/v1", api_key="x", max_retries=0) as v,
    ):
        ask = {"model": front_model, "temperature": 1.0, "max_tokens": 80}
        tools = json_ok = 0
        for seed in range(10):
            m = [{"role": "user", "content": f"Add {seed} and {seed * 7}."}]
            out = c.chat.completions.create(
                messages=m, tools=[ADD], tool_choice="required", seed=seed, **ask
            ).choices[0]
            args = [json.loads(t.function.arguments) for t in out.message.tool_calls or []]
            tools += bool(args) and all(set(a) == {"a", "b"} for a in args)
            fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
            m = [{"role": "user", "content": "Describe a person."}]
            text = (
                c.chat.completions.create(messages=m, response_format=fmt, seed=seed, **ask)
                .choices[0]
                .message.content
            )
            with contextlib.suppress(ValueError):
                json_ok += set(json.loads(text or "")) == {"name", "age"}
        rows.append(
            f"| tool calls (required) through the frontend that parse and fit | {tools}/10 |"
        )
        rows.append(
            f"| JSON (json_schema) through the frontend that parses and fits | {json_ok}/10 |"
        )
        prompt = "The capital of France is"
        mine = (
            c.completions.create(
                model=front_model, prompt=prompt, max_tokens=4, temperature=0, logprobs=2
            )
            .choices[0]
            .logprobs
        )
        theirs = (
            v.completions.create(
                model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=2
            )
            .choices[0]
            .logprobs
        )
        same = mine.tokens == theirs.tokens and all(
            abs(a - b) < 1e-3
            for a, b in zip(mine.token_logprobs, theirs.token_logprobs, strict=True)
        )
        rows.append(f"| logprobs through the frontend equal vLLM's (4 tokens, top 2) | {same} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm", required=True)
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = httpx.get(f"{args.vllm}/v1/models").json()["data"][0]["id"]
    front_model = httpx.get(f"{args.frontend}/v1/models").json()["data"][0]["id"]
    direct, through = answers(args.vllm, model), answers(args.frontend, front_model)
    agents = agent_fields(args.vllm, model, args.frontend, front_model)
    start = time.monotonic()
    stamped = asyncio.run(order(args.frontend, front_model, headers=True))
    plain = asyncio.run(order(args.vllm, model, headers=False))
    lines = [
        "# Autellix's frontend over the real vLLM",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}; vLLM model {model}",
        "- servers: started as this script's docstring says (vLLM 0.32 CPU with "
        "`--scheduling-policy priority --max-num-seqs 1`; `autellix serve --backend URL "
        "--backend-priority`, default policy PLAS)",
        "",
        "| check | result |",
        "|---|---|",
        f"| greedy answers through the frontend equal vLLM's (completion, streamed, chat) "
        f"| {[a == b for a, b in zip(direct, through, strict=True)]} |",
        f"| finish order through the frontend (`--backend-priority`, PLAS) | {stamped} |",
        f"| finish order sent to vLLM directly | {plain} |",
        f"| time for both order runs | {time.monotonic() - start:.0f} s |",
        *agents,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
