"""The sampler and the validation of sampling parameters."""

from __future__ import annotations

import math

import pytest
import torch

from autellix.engine.model.sampler import Sampler, make_generator, suppress_tokens
from autellix.engine.sampling_params import SamplingParams

VOCAB = 50


def random_logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def sample_seq(params: SamplingParams, logits: list[torch.Tensor]) -> list[int]:
    """One call alone, step after step, with its own generator."""
    gen = make_generator(params)
    return [int(Sampler()(row[None], [params], [gen])[0]) for row in logits]


def test_greedy_is_argmax() -> None:
    logits = random_logits(8)
    tokens = Sampler()(logits, [SamplingParams(temperature=0)] * 8)
    assert torch.equal(tokens, logits.argmax(-1))


@pytest.mark.parametrize("params", [SamplingParams(top_k=1), SamplingParams(top_p=1e-6)])
def test_top_k_1_and_tiny_top_p_are_greedy(params: SamplingParams) -> None:
    logits = random_logits(16)
    tokens = Sampler()(logits, [params] * 16)
    assert torch.equal(tokens, logits.argmax(-1))


def test_seeded_sampling_is_reproducible_and_batch_independent() -> None:
    steps = [random_logits(1, seed=s)[0] for s in range(20)]
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=20, seed=1234)
    alone = sample_seq(params, steps)
    assert alone == sample_seq(params, steps)
    assert len(set(alone)) > 1  # it does sample

    # The same call inside changing batches with seeded and unseeded neighbours.
    sampler = Sampler()
    neighbour = SamplingParams(temperature=0.7, seed=99)
    gens = [make_generator(neighbour), make_generator(params)]
    batched = []
    for s, row in enumerate(steps):
        rows = [random_logits(1, seed=100 + s)[0], row, random_logits(1, seed=200 + s)[0]]
        batch_params = [neighbour, params, SamplingParams(temperature=1.5)]
        batch_gens = [gens[0], gens[1], None]
        if s % 2:  # the seeded neighbour is not in every step
            rows, batch_params, batch_gens = rows[1:], batch_params[1:], batch_gens[1:]
            batched.append(int(sampler(torch.stack(rows), batch_params, batch_gens)[0]))
        else:
            batched.append(int(sampler(torch.stack(rows), batch_params, batch_gens)[1]))
    assert batched == alone

    other_seed = sample_seq(SamplingParams(temperature=1.0, top_p=0.9, top_k=20, seed=1), steps)
    assert other_seed != alone


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(seed=0)
    counts = torch.bincount(
        torch.cat([Sampler()(logits, [params], [gen]) for _ in range(4000)]), minlength=4
    )
    assert counts[3] == 0
    freq = counts.float() / counts.sum()
    torch.testing.assert_close(freq[:3], torch.tensor([0.5, 0.3, 0.2]), atol=0.03, rtol=0)


def test_top_k_and_top_p_restrict_the_support() -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])).repeat(500, 1)
    sampler = Sampler()
    top_k = sampler(logits, [SamplingParams(top_k=2)] * 500)
    assert set(top_k.tolist()) == {0, 1}
    top_p = sampler(logits, [SamplingParams(top_p=0.75)] * 500)  # 0.4 + 0.3 < 0.75
    assert set(top_p.tolist()) == {0, 1, 2}


def test_mixed_greedy_and_sampled_rows() -> None:
    logits = random_logits(4)
    greedy = SamplingParams(temperature=0)
    params = [greedy, SamplingParams(), greedy, SamplingParams(top_k=1)]
    tokens = Sampler()(logits, params)
    assert tokens[[0, 2, 3]].tolist() == logits.argmax(-1)[[0, 2, 3]].tolist()


def test_suppress_tokens() -> None:
    logits = torch.zeros(2, 5)
    suppress_tokens(logits, [[1, 3], []])
    assert logits[0].tolist() == [0, -math.inf, 0, -math.inf, 0]
    assert logits[1].tolist() == [0] * 5


def test_defaults_and_normalisation() -> None:
    p = SamplingParams(stop=["a", "b"], stop_token_ids=[3])
    assert p.stop == ("a", "b") and p.stop_token_ids == (3,)
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy
    assert make_generator(SamplingParams()) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"max_tokens": 4, "min_tokens": 5}, "min_tokens"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ],
)
def test_invalid_params_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
