"""Constrained decoding on this CPU, on the default model (SmolLM2-135M, fp32):

1. the grammar engines: per decode step, the time to fill each call's token mask and to
   apply the masks, for xgrammar (what the engine uses) and llguidance (when importable),
   at batch 1 and 32, on a JSON schema;
2. the engine's own overhead: step time with every call constrained, and the part of it
   spent in masking, at batch 1 and 32;
3. validity over N seeded prompts, constrained against unconstrained (the same prompt,
   the same sampling): tool calls (`tool_choice: required`, parsed as the server parses
   them, arguments checked against the schema) and JSON (`json_schema`).

Writes OUT/results.md with its command, machine and commit.
    python benchmarks/structured_output.py --out benchmarks/results/structured-output
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import jsonschema
import torch

from autellix.engine import structured_output
from autellix.engine.config import EngineConfig
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.sampling_params import SamplingParams, StructuredOutput
from autellix.machine import this_commit, this_machine
from autellix.server.protocol import ChatCompletionRequest
from autellix.server.tools import ToolUse, chat_messages, parse

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "maxLength": 40},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
CITIES = ["Paris", "Lima", "Oslo", "Tokyo", "Cairo", "Quito", "Perth", "Seoul", "Rome", "Accra"]
NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia"]


def prompts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    tool_asks, json_asks = [], []
    for _ in range(n):
        city, name = rng.choice(CITIES), rng.choice(NAMES)
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        tool_asks.append(
            rng.choice([f"What is the weather in {city}?", f"Add {a} and {b}.", f"{a} + {b}?"])
        )
        json_asks.append(
            f"Give {name} from {city}, aged {rng.randint(18, 90)}, as a JSON object with "
            "the keys name, age and city."
        )
    return tool_asks, json_asks


def tool_call_valid(text: str) -> bool:
    _, calls = parse(text)
    try:
        for c in calls:
            jsonschema.validate(
                json.loads(c["function"]["arguments"]), SCHEMAS[c["function"]["name"]]
            )
    except (KeyError, jsonschema.ValidationError, json.JSONDecodeError):
        return False
    return bool(calls)


def json_valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), PERSON)
    except (jsonschema.ValidationError, json.JSONDecodeError):
        return False
    return True


def run(engine: LLMEngine, prompts: list[str], params: list[SamplingParams]) -> list[str]:
    calls = [engine.add_call(p, sp) for p, sp in zip(prompts, params, strict=True)]
    while engine.has_unfinished():
        engine.step()
    return [c.text for c in calls]


def validity(engine: LLMEngine, n: int, seed: int) -> list[str]:
    tok = engine.tokenizer
    tool_asks, json_asks = prompts(n, seed)
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
         "tool_choice": "required"}
    )  # fmt: skip
    tools = ToolUse.of(req)
    assert tools is not None

    def chat(text: str, with_tools: bool) -> str:
        messages = chat_messages(
            [type(req.messages[0])(role="user", content=text)], tools if with_tools else None, False
        )
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    rows = []
    for task, asks, check, grammar in (
        ("tool call", tool_asks, tool_call_valid, tools.structured()),
        ("JSON schema", json_asks, json_valid, StructuredOutput("json_schema", json.dumps(PERSON))),
    ):
        texts = [chat(a, task == "tool call") for a in asks]
        for label, structured in (("unconstrained", None), ("constrained", grammar)):
            params = [
                SamplingParams(
                    temperature=1.0, seed=seed + i, max_tokens=128, structured=structured
                )
                for i in range(n)
            ]
            start = time.perf_counter()
            outs = run(engine, texts, params)
            ok, took = sum(map(check, outs)), time.perf_counter() - start
            rows.append(f"| {task} | {label} | {ok}/{n} ({ok / n:.0%}) | {took:.0f} s |")
            print(rows[-1], flush=True)
    return rows


def engines_per_step(tokenizer, vocab: int) -> list[str]:
    """Mask fill and apply per step on a fixed valid document, per grammar engine."""
    doc = json.dumps({"name": "Ada Lovelace", "age": 36, "city": "London"})
    ids = tokenizer.encode(doc, add_special_tokens=False)
    rows = []
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiled = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(PERSON), any_whitespace=False
    )
    engines = {"xgrammar": lambda: xgr.GrammarMatcher(compiled)}
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        lt = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(PERSON), defaults={"whitespace_flexible": False}
        )
        engines["llguidance"] = lambda: llguidance.LLMatcher(lt, grammar)
    except ImportError:
        print("llguidance is not installed: only xgrammar is measured", file=sys.stderr)
    for name, make in engines.items():
        for batch in (1, 32):
            matchers = [make() for _ in range(batch)]
            logits = torch.randn(batch, vocab)
            if name == "xgrammar":
                mask = xgr.allocate_token_bitmask(batch, vocab)
            else:
                mask = llguidance.torch.allocate_token_bitmask(batch, vocab)
            apply_masks = (
                xgr.apply_token_bitmask_inplace
                if name == "xgrammar"
                else llguidance.torch.apply_token_bitmask_inplace
            )
            apply_masks(logits, mask)  # warm-up: a first call may prepare a kernel
            fill = apply = 0.0
            for token in ids:
                t0 = time.perf_counter()
                for i, m in enumerate(matchers):
                    if name == "xgrammar":
                        m.fill_next_token_bitmask(mask, i)
                    else:
                        llguidance.torch.fill_next_token_bitmask(m, mask, i)
                t1 = time.perf_counter()
                apply_masks(logits, mask)
                t2 = time.perf_counter()
                for m in matchers:
                    (m.accept_token if name == "xgrammar" else m.consume_token)(token)
                fill, apply = fill + t1 - t0, apply + t2 - t1
            n = len(ids)
            rows.append(
                f"| {name} | {batch} | {fill / n * 1e3:.3f} ms | {apply / n * 1e3:.3f} ms |"
            )
            print(rows[-1], flush=True)
    return rows


def engine_overhead(engine: LLMEngine) -> list[str]:
    """Decode steps with every call constrained: step time and the share spent masking."""
    masking = [0.0]
    real = structured_output.mask_logits

    def timed(logits, matchers):
        t0 = time.perf_counter()
        real(logits, matchers)
        masking[0] += time.perf_counter() - t0

    rows = []
    prompt = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe someone as JSON."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    schema = StructuredOutput("json_schema", json.dumps(PERSON))
    from autellix.engine import executor

    for batch in (1, 32):
        for label, structured in (("unconstrained", None), ("constrained", schema)):
            params = [
                SamplingParams(temperature=1.0, seed=i, max_tokens=48, structured=structured,
                               ignore_eos=structured is None)
                for i in range(batch)
            ]  # fmt: skip
            executor.mask_logits = timed
            masking[0] = 0.0
            calls = [engine.add_call(prompt, p) for p in params]
            steps, start = 0, time.perf_counter()
            while engine.has_unfinished():
                engine.step()
                steps += 1
            elapsed = time.perf_counter() - start
            executor.mask_logits = real
            tokens = sum(c.num_output_tokens for c in calls)
            rows.append(
                f"| {batch} | {label} | {elapsed / steps * 1e3:.1f} ms | {tokens / elapsed:.1f} | "
                f"{masking[0] / steps * 1e3:.2f} ms ({masking[0] / elapsed:.1%}) |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    engine = LLMEngine.from_config(EngineConfig(max_running=32))
    vocab = engine.executor.vocab_size
    lines = [
        "# Constrained decoding on the default model",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}; torch threads "
        f"{torch.get_num_threads()}",
        "",
        "## Grammar engines: per decode step (JSON schema of 3 fields, SmolLM2's 49k vocabulary)",
        "",
        "| engine | batch | fill masks | apply masks |",
        "|---|---|---|---|",
        *engines_per_step(engine.tokenizer, vocab),
        "",
        "## The engine: decode steps with every call constrained (48 tokens each)",
        "",
        "| batch | calls | step | tokens/s | masking per step (share) |",
        "|---|---|---|---|---|",
        *engine_overhead(engine),
        "",
        f"## Validity over {args.prompts} seeded prompts (temperature 1, max 128 tokens)",
        "",
        "| task | decoding | valid | time |",
        "|---|---|---|---|",
        *validity(engine, args.prompts, args.seed),
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
