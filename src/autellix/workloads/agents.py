"""Agents: a load of plain agent programs, shaped as the independent test of issue 12.

Chats of ``1..max_turns`` sequential turns that carry their whole history (8-64 output
tokens a turn), and fan-outs of 2-5 stages of 2-5 parallel calls, each stage's calls
sharing the program's context and the previous stage's answers. A share ``searches`` of
the programs are tree searches instead (8-16 stages of 4-6 parallel calls, 10-50x a
chat's work): ``searches=0`` is the light-tailed load, ``searches=0.25`` the heavy one.
Texts are ordinary English words, so that a real model reads ordinary tokens.
"""

from __future__ import annotations

import random

from autellix.workloads.sampling import poisson_arrivals
from autellix.workloads.spec import CallSpec, Message, ProgramSpec, Stage, check_least
from autellix.workloads.tokens import prompt_tokens, scaled

TEXT = (
    "the plan needs a short list of steps to check each result before the next tool call "
    "and a clear answer for the user about what changed in the code or the data today"
)


def words(rng: random.Random, n: int) -> str:
    vocabulary = TEXT.split(" ")
    return " ".join(rng.choice(vocabulary) for _ in range(max(1, n)))


def build(
    num_programs: int,
    rate: float,
    seed: int,
    scale: float = 1.0,
    searches: float = 0.0,
    chats: float = 0.5,
    max_turns: int = 12,
) -> list[ProgramSpec]:
    if not 0 <= searches <= 1 or not 0 <= chats <= 1:
        raise ValueError("searches and chats are shares in [0, 1]")
    check_least("max_turns", max_turns, 1)
    rng = random.Random(f"agents-{seed}")
    arrivals = poisson_arrivals(num_programs, rate, seed)
    programs = []
    for i, arrival in enumerate(arrivals):
        draw = rng.random()
        if draw < searches:
            kind, stages = "search", fan_out(rng, scale, (8, 16), (4, 6))
        elif draw < searches + (1 - searches) * chats:
            kind, stages = "chat", chat(rng, scale, max_turns)
        else:
            kind, stages = "fan-out", fan_out(rng, scale, (2, 5), (2, 5))
        programs.append(ProgramSpec(f"{kind}-{i}", kind, arrival, stages))
    return programs


def output_tokens(rng: random.Random, scale: float) -> int:
    return scaled(rng.randint(8, 64), scale)


def chat(rng: random.Random, scale: float, max_turns: int) -> list[Stage]:
    messages: list[Message] = []
    lengths: list[list[int]] = []
    stages = []
    for turn in range(rng.randint(1, max_turns)):
        messages = [*messages, {"role": "user", "content": words(rng, scaled(40, scale))}]
        target = output_tokens(rng, scale)
        stages.append(Stage([CallSpec(messages, target, prompt_tokens(messages, lengths))]))
        lengths.append([target])
        messages = [*messages, {"role": "assistant", "ref": [turn, 0]}]
    return stages


def fan_out(
    rng: random.Random, scale: float, num_stages: tuple[int, int], width: tuple[int, int]
) -> list[Stage]:
    context: list[Message] = [
        {"role": "system", "content": words(rng, scaled(120, scale))},
        {"role": "user", "content": words(rng, scaled(60, scale))},
    ]
    lengths: list[list[int]] = []
    stages = []
    for s in range(rng.randint(*num_stages)):
        calls = []
        for j in range(rng.randint(*width)):
            ask: Message = {"role": "user", "content": f"option {j}: {words(rng, 8)}"}
            messages = [*context, ask]
            target = output_tokens(rng, scale)
            calls.append(CallSpec(messages, target, prompt_tokens(messages, lengths)))
        stages.append(Stage(calls))
        lengths.append([c.max_tokens for c in calls])
        # the next stage reads every answer of this one
        context = [
            *context,
            *({"role": "assistant", "ref": [s, j]} for j in range(len(calls))),
        ]
    return stages
