"""Chatbot: multi-turn ShareGPT conversations, one call per human turn.

Each call's prompt is the conversation so far: the human turns as text, the model's own
earlier answers as refs. The target output length is the dataset answer's length.

Defaults (vs. the paper's 6.66 calls, 255.65 prefill and 276.81 decode tokens per call):
conversations with at least ``min_turns=4`` exchanges, drawn uniformly. Fewer turns give
fewer calls and longer answers, more give more calls and shorter answers; 4 keeps all
three means within ~12%. The paper's prefill figure is below a full multi-turn prompt
(one answer of history already exceeds it) and matches the tokens a turn adds to the
previous prompt (the previous answer plus the new question), our "new prefill".
"""

from __future__ import annotations

import random

from autellix.workloads.sampling import draw, poisson_arrivals
from autellix.workloads.sharegpt import Turn, conversations
from autellix.workloads.spec import CallSpec, Message, ProgramSpec, Stage, check_least
from autellix.workloads.tokens import count, prompt_tokens, scaled, shrink

MAX_CONTEXT = 8192  # the default model's context window


def build(
    num_programs: int,
    rate: float,
    seed: int,
    scale: float = 1.0,
    min_turns: int = 4,
    max_context: int = MAX_CONTEXT,
) -> list[ProgramSpec]:
    check_least("min_turns", min_turns, 1)
    check_least("max_context", max_context, 1)
    pool = [c for c in conversations() if len(c) >= min_turns]
    if not pool:
        raise ValueError(f"no conversation has min_turns={min_turns} turns")
    arrivals = poisson_arrivals(num_programs, rate, seed)
    programs: list[ProgramSpec] = []
    for tries, conversation in enumerate(draw(pool, random.Random(seed))):
        if len(programs) == num_programs:
            break
        if tries > len(pool) + num_programs and not programs:
            raise ValueError(f"no conversation's first turn fits {max_context} tokens")
        stages = chat_stages(conversation, scale, max_context)
        if stages:  # empty when even the first turn does not fit the context
            i = len(programs)
            programs.append(ProgramSpec(f"chatbot-{i}", "chatbot", arrivals[i], stages))
    return programs


def chat_stages(conversation: list[Turn], scale: float, max_context: int) -> list[Stage]:
    """One single-call stage per turn, stopping at the first turn that would not fit."""
    messages: list[Message] = []
    lengths: list[list[int]] = []
    stages: list[Stage] = []
    for human, answer in conversation:
        messages = [*messages, {"role": "user", "content": shrink(human, scale)}]
        target = scaled(count(answer), scale)
        prompt = prompt_tokens(messages, lengths)
        if prompt + target > max_context:
            break
        stages.append(Stage([CallSpec(messages, target, prompt)]))
        lengths.append([target])
        messages = [*messages, {"role": "assistant", "ref": [len(stages) - 1, 0]}]
    return stages
