"""ReAct: a reason/act loop over a BFCL function-calling record.

The prompt holds a system message with the function docs, the user's question, then per
earlier step the model's own output (a ref) and a synthetic tool result ("Observation:
..."). Each step's target length is that of a ReAct step whose action is one of the
record's ground-truth calls (in turn); after each step but the last the program waits a
tool delay, exponential with mean ``tool_delay``.

Defaults (vs. the paper's 10.75 calls, 735.06 prefill and 34.14 decode tokens per call):
``1 + Poisson(steps - 1)`` steps with ``steps=10.75``; records whose function docs take
at most ``max_doc_chars=2000`` characters (1644 of 2501; ~230 doc tokens on average; the
live_multiple records with ~1000-token docs would push the mean prompt to ~1100);
observations of about ``observation_tokens=24`` tokens to fill the rest of the prompt.
"""

from __future__ import annotations

import json
import random
import re

from autellix.workloads.bfcl import Record, records
from autellix.workloads.sampling import draw, poisson, poisson_arrivals
from autellix.workloads.spec import CallSpec, Message, ProgramSpec, Stage, check_least
from autellix.workloads.tokens import count, prompt_tokens, scaled, shrink

SYSTEM = """Answer the question with the help of the functions below. Work in steps. In \
each step write "Thought:" with your reasoning, then "Action:" with one function call in \
Python syntax; you will get its result as "Observation:". When you know the answer, write \
"Final Answer:" and the answer.

Functions:
{docs}"""
STEP = "Thought: I need a tool.\nAction: {call}"


def build(
    num_programs: int,
    rate: float,
    seed: int,
    scale: float = 1.0,
    steps: float = 10.75,
    tool_delay: float = 0.5,
    observation_tokens: int = 24,
    max_doc_chars: int = 2000,
) -> list[ProgramSpec]:
    for name, value, least in (
        ("steps", steps, 1),
        ("tool_delay", tool_delay, 0),
        ("observation_tokens", observation_tokens, 0),
    ):
        check_least(name, value, least)
    pool = [r for r in records() if len(r.docs) <= max_doc_chars]
    if not pool:
        raise ValueError(f"no task's documents fit in max_doc_chars={max_doc_chars}")
    rng = random.Random(seed)
    arrivals = poisson_arrivals(num_programs, rate, seed)
    picks = draw(pool, rng)
    programs = []
    for i, arrival in enumerate(arrivals):
        n = 1 + poisson(rng, max(0.0, steps - 1))
        stages = react_stages(next(picks), n, rng, scale, tool_delay, observation_tokens)
        programs.append(ProgramSpec(f"react-{i}", "react", arrival, stages))
    return programs


def react_stages(
    record: Record,
    num_steps: int,
    rng: random.Random,
    scale: float,
    tool_delay: float,
    observation_tokens: int,
) -> list[Stage]:
    system = SYSTEM.format(docs=record.docs)
    if record.system:
        system = f"{record.system}\n\n{system}"
    messages: list[Message] = [
        {"role": "system", "content": shrink(system, scale)},
        {"role": "user", "content": shrink(record.question, scale)},
    ]
    lengths: list[list[int]] = []
    stages = []
    for step in range(num_steps):
        call = record.calls[step % len(record.calls)]
        target = scaled(count(STEP.format(call=call)), scale)
        last = step == num_steps - 1
        delay = rng.expovariate(1 / tool_delay) if tool_delay > 0 and not last else 0.0
        stages.append(Stage([CallSpec(messages, target, prompt_tokens(messages, lengths), delay)]))
        lengths.append([target])
        result = observation(record, call, rng, observation_tokens)
        messages = [
            *messages,
            {"role": "assistant", "ref": [step, 0]},
            {"role": "user", "content": shrink(result, scale)},
        ]
    return stages


def observation(record: Record, call: str, rng: random.Random, tokens: int) -> str:
    """A made-up result of ``call``: a JSON object of about ``tokens`` tokens whose keys
    come from the function's description."""
    name = call.split("(", 1)[0]
    doc = next((f for f in record.functions if f.get("name") == name), record.functions[0])
    words = re.findall(r"[a-z]{3,}", str(doc.get("description", "")).lower()) or ["value"]
    result: dict[str, object] = {}
    # ~13 tokens of frame, ~9 per entry; sizes vary between 0.5x and 1.5x
    for _ in range(max(1, round((tokens * rng.uniform(0.5, 1.5) - 13) / 9))):
        value = rng.choice([rng.randint(0, 9999), round(rng.uniform(0, 100), 2), rng.choice(words)])
        result[f"{rng.choice(words)}_{len(result)}"] = value
    return "Observation: " + json.dumps({"status": "success", "result": result})
