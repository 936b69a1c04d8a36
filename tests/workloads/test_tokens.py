"""Prompt lengths counted message by message equal the chat template's count."""

from __future__ import annotations

from autellix.workloads.tokens import count, prompt_tokens, render, scaled, shrink


def test_message_by_message_count_equals_the_rendered_prompt() -> None:
    conversation = [
        {"role": "user", "content": "Hello!\n\nHow are you?"},
        {"role": "assistant", "content": " Fine, thanks.  "},
        {"role": "user", "content": "def f(x):\n    return x  # ünïcödé ✓"},
    ]
    for messages in (conversation, [{"role": "system", "content": "Be brief."}, *conversation]):
        for k in range(1, len(messages) + 1):
            assert prompt_tokens(messages[:k]) == render(messages[:k], generation_prompt=True)


def test_a_ref_counts_at_its_target_length() -> None:
    filler = " hello" * 17
    assert count(filler) == 17
    text = [{"role": "user", "content": "q"}, {"role": "assistant", "content": filler}]
    ref = [{"role": "user", "content": "q"}, {"role": "assistant", "ref": [0, 1]}]
    assert prompt_tokens(ref, [[5, 17]]) == render(text, generation_prompt=True)


def test_shrink_and_scaled() -> None:
    text = " hello" * 100
    assert shrink(text, 1.0) == text
    assert count(shrink(text, 0.1)) == 10
    assert count(shrink("hi", 0.01)) == 1
    assert scaled(276, 0.1) == 28
    assert scaled(3, 0.1) == 1
