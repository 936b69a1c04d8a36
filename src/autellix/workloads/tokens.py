"""Token counts as the default model's chat template and tokenizer see them.

A prompt's length is computed message by message, so that a long conversation costs one
tokenization per message rather than one per call: the template renders each message
between special tokens, so the counts add up exactly (tests check it against rendering
the whole prompt). A ref counts as an empty assistant message plus its target length.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

from transformers import PreTrainedTokenizerFast

from autellix.workloads.spec import Message, is_ref

PROBE: Message = {"role": "system", "content": "x"}  # a fixed first message to measure against
SLOT = "\x00content\x00"


@functools.cache
def tokenizer() -> PreTrainedTokenizerFast:
    from autellix.engine.model import default_model_path, load_tokenizer

    return load_tokenizer(default_model_path())


def template(messages: list[Message], generation_prompt: bool = False) -> str:
    text = tokenizer().apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return cast(str, text)


def render(messages: list[Message], generation_prompt: bool = False) -> int:
    """The token count of ``messages`` through the chat template (no refs allowed)."""
    return _length(template(messages, generation_prompt))


def _length(text: str) -> int:
    return len(tokenizer().backend_tokenizer.encode(text, add_special_tokens=False).ids)


@functools.cache
def _frame(role: str) -> tuple[str, str]:
    """The text the template puts after the probe message and around a ``role`` message's
    content (rendered once per role: the template engine is slower than the tokenizer)."""
    probe = template([PROBE])
    text = template([PROBE, {"role": role, "content": SLOT}])
    if not text.startswith(probe) or text.count(SLOT) != 1:
        raise ValueError("the chat template does not render messages one after another")
    before, after = text[len(probe) :].split(SLOT)
    return probe + before, after


@functools.lru_cache(maxsize=1 << 18)
def message_tokens(role: str, content: str) -> int:
    before, after = _frame(role)
    return _length(before + content + after) - _probe()


@functools.cache
def _probe() -> int:
    return render([PROBE])


@functools.cache
def generation_prompt_tokens() -> int:
    return render([PROBE], generation_prompt=True) - _probe()


@functools.cache
def implicit_system_tokens() -> int:
    """What the template adds when the first message is not a system message."""
    empty = {"role": "user", "content": ""}
    return render([empty]) - message_tokens("user", "")


def prompt_tokens(messages: list[Message], lengths: Sequence[Sequence[int]] = ()) -> int:
    """The prompt's token count, refs counted at ``lengths[stage][call]`` output tokens."""
    total = generation_prompt_tokens()
    if not messages or messages[0]["role"] != "system":
        total += implicit_system_tokens()
    for m in messages:
        if is_ref(m):
            stage, call = m["ref"]
            total += message_tokens(m["role"], "") + lengths[stage][call]
        else:
            total += message_tokens(m["role"], m["content"])
    return total


@functools.lru_cache(maxsize=1 << 16)
def count(text: str) -> int:
    return _length(text)


@functools.lru_cache(maxsize=1 << 16)
def shrink(text: str, scale: float) -> str:
    """The first ``scale`` of ``text``'s tokens (at least one), for scaled-down workloads."""
    if scale >= 1.0:
        return text
    ids = tokenizer().encode(text, add_special_tokens=False)
    return cast(str, tokenizer().decode(ids[: max(1, round(len(ids) * scale))]))


def scaled(n: int, scale: float) -> int:
    """A token length or count times ``scale``, at least 1."""
    return max(1, round(n * scale))
