"""Stop strings in single updates, where the order of the hits matters: a token that
holds a stop string twice, or two different stop strings, is cut at the earliest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine.output_text import OutputText, decoder, find_stop, partial_stop


def test_a_token_holding_a_stop_string_twice_is_cut_at_the_first() -> None:
    out = OutputText(("\n",))
    assert out.update("Hello", True, final=False) == ("Hello", None)
    assert out.update("Hello\n\nWorld", True, final=False) == ("", "\n")
    assert out.text == "Hello"
    out = OutputText(("\n",), include_stop=True)
    out.update("Hello", True, final=False)
    assert out.update("Hello\n\nWorld", True, final=False) == ("\n", "\n")
    assert out.text == "Hello\n"


@pytest.mark.parametrize("stops", [("a", "b"), ("b", "a")])
def test_of_two_stop_strings_in_one_token_the_earlier_wins(stops) -> None:
    out = OutputText(stops)
    assert out.update("xba", True, final=False) == ("x", "b")
    assert find_stop("xbaab", stops, 0) == (1, "b")


@pytest.mark.parametrize("stops", [("abc", "ab"), ("ab", "abc")])
def test_of_two_stop_strings_that_begin_together_the_shorter_wins(stops) -> None:
    assert find_stop("xxabcd", stops, 2) == (2, "ab")
    out = OutputText(stops, include_stop=True)
    assert out.update("xxabcd", True, final=True) == ("xxab", "ab")


def test_a_stop_string_that_ended_before_the_new_text_is_not_found_again() -> None:
    # "ab" ends at 2; only occurrences that end after the first 3 characters count
    assert find_stop("abxab", ("ab",), 3) == (3, "ab")
    assert find_stop("abx", ("ab",), 3) is None
    # one that straddles the old and the new text does count
    assert find_stop("xab", ("ab",), 2) == (1, "ab")


def test_the_held_back_tail_is_the_longest_beginning_of_any_stop() -> None:
    assert partial_stop("say STO", ("STOP", "ST")) == 3
    assert partial_stop("say S", ("STOP", "xS")) == 1
    assert partial_stop("abc", ("zzz",)) == 0
    assert partial_stop("", ("abc",)) == 0
    assert partial_stop("aab", ("aabx",)) == 3  # never the whole stop string


def test_held_back_text_is_sent_once_it_cannot_be_a_stop_string() -> None:
    out = OutputText(("STOP",))
    assert out.update("go ST", True, final=False) == ("go ", None)
    assert out.update("go STA", True, final=False) == ("STA", None)
    assert out.update("go STAY ST", True, final=True) == ("Y ST", None)
    assert out.sent == len(out.text) == 10


def test_without_checking_stops_the_text_is_held_back_but_never_cut() -> None:
    out = OutputText(("STOP",))
    assert out.update("a STOP b S", False, final=False) == ("a STOP b ", None)
    assert out.update("a STOP b STOP", True, final=False) == ("", "STOP")
    assert out.text == "a STOP b "


TOKENIZER = None


def smollm2_tokenizer():
    global TOKENIZER
    if TOKENIZER is None:
        from autellix.engine.model import default_model_path, load_tokenizer

        TOKENIZER = load_tokenizer(str(default_model_path()))
    return TOKENIZER


class CountingDecode:
    """The engine's decoder, counting the tokens it is asked to decode."""

    def __init__(self, tokenizer) -> None:
        self.decode, self.decoded = decoder(tokenizer), 0

    def __call__(self, ids) -> str:
        self.decoded += len(ids)
        return self.decode(ids)


SAMPLE = "Héllo wörld 😀 日本語のテキスト  ,spaces\n\ttabs 🎉🎉 done."


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(
        st.one_of(st.integers(0, 49151), st.sampled_from([0, 1, 2])), min_size=1, max_size=40
    ),
    use_sample=st.booleans(),
    prompt=st.lists(st.integers(3, 49151), max_size=5),
)
def test_incremental_decode_equals_the_whole_decode(picks, use_sample, prompt) -> None:
    """Token by token, the text decoded so far is the whole decode once it ends in whole
    characters, and the whole decode at the end; the work is linear in the output."""
    tokenizer = smollm2_tokenizer()
    output = tokenizer.encode(SAMPLE, add_special_tokens=False) if use_sample else picks
    ids = [*prompt, *output]
    out = OutputText(prefix_offset=len(prompt), read_offset=len(prompt))
    counting = CountingDecode(tokenizer)
    for end in range(len(prompt) + 1, len(ids) + 1):
        final = end == len(ids)
        text = out.decode(counting, ids, end, final)
        whole = tokenizer.decode(ids[len(prompt) : end], skip_special_tokens=True)
        if final or not whole.endswith("\ufffd"):
            assert text == whole
        else:
            assert whole.startswith(text)
    # each step decodes a window of a few tokens, not the whole output
    assert counting.decoded <= 8 * len(output) + 64
