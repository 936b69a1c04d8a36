"""Stop strings as vLLM and OpenAI define them, against a brute-force reference: the
text is cut before the first stop string to appear (across any token boundaries), no
part of a stop string is ever streamed, whole and streamed answers agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.output_text import OutputText, partial_stop
from autellix.engine.sampling_params import SamplingParams

# Token texts over a small alphabet, so that stop strings meet often and span tokens.
VOCAB = ["a", "b", "c", "ab", "ba", "abc", " ", "\n", "Ob", "s:", "<eos>"]
EOS = VOCAB.index("<eos>")

pieces_strategy = st.lists(st.sampled_from(VOCAB[:-1]), min_size=1, max_size=30)
stops_strategy = st.lists(st.text(alphabet="abc \nObs:", min_size=1, max_size=5), max_size=4)


def reference(
    pieces: list[str], stops: list[str], include: bool, min_tokens: int = 0
) -> tuple[str, str | None]:
    """(final text, stop string hit): after each token from `min_tokens` on, look for every
    occurrence of every stop string that ends past the text of the first `min_tokens - 1`
    tokens; at the first token where one exists, stop at the earliest (then shortest)."""
    texts = ["".join(pieces[:k]) for k in range(len(pieces) + 1)]
    floor = len(texts[max(0, min_tokens - 1)])
    for k in range(max(1, min_tokens), len(pieces) + 1):
        text = texts[k]
        hits = [
            (i, s)
            for s in stops
            for i in range(len(text) - len(s) + 1)
            if text[i : i + len(s)] == s and i + len(s) > floor
        ]
        if hits:
            i, s = min(hits, key=lambda h: (h[0], len(h[1])))
            return text[: i + len(s) if include else i], s
    return texts[-1], None


@settings(max_examples=500, deadline=None)
@given(pieces=pieces_strategy, stops=stops_strategy, include=st.booleans())
def test_output_text_matches_the_reference(pieces, stops, include) -> None:
    out = OutputText(tuple(stops), include)
    final, expected_stop = reference(pieces, stops, include)
    sent, stop = "", None
    for k in range(1, len(pieces) + 1):
        new, stop = out.update("".join(pieces[:k]), True, final=k == len(pieces))
        sent += new
        assert final.startswith(sent), "sent text that is not part of the answer"
        if stop is not None:
            break
        if k < len(pieces) and not include:  # held back only what could still be a stop
            text = "".join(pieces[:k])
            starts = [j for s in stops for j in range(1, len(s)) if text.endswith(s[:j])]
            assert len(text) - len(sent) == max(starts, default=0)
    assert (sent, out.text, stop) == (final, final, expected_stop)


def test_partial_stop_is_the_longest_started_stop() -> None:
    assert partial_stop("Here is a", ["a list"]) == 1
    assert partial_stop("Here is a li", ["a list", "is a lis"]) == 7
    assert partial_stop("Here is", ["a list"]) == 0
    assert partial_stop("a", ["a"]) == 0  # a whole stop string is a match, not a start


def test_half_characters_are_held_until_whole() -> None:
    out = OutputText()
    assert out.update("caf\ufffd", True, final=False) == ("", None)
    assert out.update("café", True, final=False) == ("café", None)
    assert out.update("café \ufffd", True, final=True) == (" \ufffd", None)


class PieceTokenizer:
    """Each id is one piece of the vocabulary; decoding concatenates them (the last piece
    is the end-of-sequence token, which decodes to nothing)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        eos = len(self.vocab) - 1
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == eos))


def run_engine(pieces: list[int], params: SamplingParams, calls: int = 1, vocab=VOCAB):
    executor = SimulatedExecutor(lambda shape: 0.01, 4, 64, 64)
    tokenizer = PieceTokenizer(vocab)
    engine = LLMEngine(EngineConfig(block_size=4), executor, tokenizer, (len(vocab) - 1,))
    seqs = [engine.add_call([1, 2, 3], params) for _ in range(calls)]
    for seq in seqs:
        executor.planned[seq.call_id] = pieces
    streamed = {seq.call_id: "" for seq in seqs}
    finals = {}
    while engine.has_unfinished():
        for out in engine.step():
            streamed[out.call_id] += out.new_text
            if out.finished:
                finals[out.call_id] = out
    engine.check_idle()
    return [(seq, streamed[seq.call_id], finals[seq.call_id]) for seq in seqs]


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.integers(0, len(VOCAB) - 2), min_size=1, max_size=20),
    stops=stops_strategy,
    include=st.booleans(),
    min_tokens=st.integers(0, 6),
)
def test_engine_streams_and_finishes_as_the_reference(ids, stops, include, min_tokens) -> None:
    params = SamplingParams(
        max_tokens=len(ids),
        stop=tuple(stops),
        include_stop_str_in_output=include,
        min_tokens=min(min_tokens, len(ids)),
        ignore_eos=True,
    )
    final, stop = reference([VOCAB[i] for i in ids], stops, include, params.min_tokens)
    for seq, streamed, last in run_engine(ids, params, calls=2):
        assert streamed == seq.text == final
        assert last.finish_reason == ("stop" if stop is not None else "length")
        assert last.stop_reason == stop


def test_the_issue_cases_on_a_token_stream() -> None:
    """`stop=["a list"]` over tokens "Here", " is", " a", " list": nothing of " a" leaks."""
    vocab = ["Here", " is", " a", " list", " of", "<eos>"]
    params = SamplingParams(max_tokens=5, stop=("a list",))
    ((seq, streamed, last),) = run_engine([0, 1, 2, 3, 4], params, vocab=vocab)
    assert (streamed, last.finish_reason, last.stop_reason) == ("Here is ", "stop", "a list")
    assert seq.output_ids == [0, 1, 2, 3]  # generation stopped at the match
    kept = SamplingParams(max_tokens=5, stop=("a list",), include_stop_str_in_output=True)
    ((_, streamed, _),) = run_engine([0, 1, 2, 3, 4], kept, vocab=vocab)
    assert streamed == "Here is a list"


def test_stop_token_ids_and_eos() -> None:
    ids = [0, 1, EOS, 2]
    ((seq, streamed, last),) = run_engine(ids, SamplingParams(max_tokens=4))
    assert (streamed, last.finish_reason, last.stop_reason) == ("ab", "stop", None)
    b = VOCAB.index("b")
    ((seq, streamed, last),) = run_engine(ids, SamplingParams(max_tokens=4, stop_token_ids=(b,)))
    assert (streamed, seq.output_ids, last.stop_reason) == ("a", [0, 1], b)
    kept = SamplingParams(max_tokens=4, stop_token_ids=(b,), include_stop_str_in_output=True)
    ((_, streamed, _),) = run_engine(ids, kept)
    assert streamed == "ab"
