"""Token ids for simulated prompts: the right lengths and the right shared prefixes.

The simulator never tokenizes text into real ids: what the KV cache and the balancers
need is each prompt's length and which prompts share which prefixes. So a message
becomes ids derived from a hash of its text (the same message always gives the same
ids), an earlier call's output becomes ids unique to that call (and the executor
emits exactly those ids, so the next turn's prompt meets them in the prefix cache, as
in a real chat), and lengths come from the default model's chat template, as the
workload specs count them.
"""

from __future__ import annotations

import functools
import zlib

from autellix.workloads import tokens
from autellix.workloads.spec import CallSpec, is_ref

GENERATION_PROMPT = -1  # the template's "assistant turn starts" ids
SYSTEM = -2  # the template's implicit system prompt


@functools.lru_cache(maxsize=1 << 16)
def _ids(key: int, n: int) -> tuple[int, ...]:
    base = (key & 0xFFFFFFFF) << 20
    return tuple(range(base, base + n))


def _message(role: str, content: str) -> tuple[int, ...]:
    key = zlib.crc32(f"{role}\x00{content}".encode())
    return _ids(key, tokens.message_tokens(role, content))


def output_ids(program_index: int, stage: int, call: int, n: int) -> list[int]:
    """The ids a simulated call emits (unique per program, stage and call)."""
    return list(_ids(zlib.crc32(f"out\x00{program_index}\x00{stage}\x00{call}".encode()), n))


def prompt_ids(call: CallSpec, program_index: int, lengths: list[list[int]]) -> list[int]:
    """`call`'s prompt as ids, exactly `call.prompt_tokens` long; a ref is the assistant
    turn's opening (the same ids the earlier prompt ended with), the referenced call's
    output ids, and the turn's closing."""
    gen = _ids(GENERATION_PROMPT, tokens.generation_prompt_tokens())
    close = max(0, tokens.message_tokens("assistant", "") - len(gen))
    ids: list[int] = []
    if not call.messages or call.messages[0]["role"] != "system":
        ids += _ids(SYSTEM, tokens.implicit_system_tokens())
    for m in call.messages:
        if is_ref(m):
            s, c = m["ref"]
            ids += gen
            ids += output_ids(program_index, s, c, lengths[s][c])
            ids += _ids(zlib.crc32(b"close"), close)
        else:
            ids += _message(m["role"], m["content"])
    ids += gen
    if len(ids) < call.prompt_tokens:  # the spec's count is the truth; pad or cut to it
        ids += _ids(zlib.crc32(b"pad"), call.prompt_tokens - len(ids))
    return ids[: call.prompt_tokens]
