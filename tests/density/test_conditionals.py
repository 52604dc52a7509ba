"""Per-feature conditionals: the mixture and the categorical (with padding and the unseen
slot) are normalised, agree with reference formulas, and their samplers draw from them."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, MixtureSameFamily, Normal

from densitywatch.density import conditionals as cond

torch.set_num_threads(1)


def _params(k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=generator, dtype=torch.float64)
    means = torch.randn(k, generator=generator, dtype=torch.float64) * 2
    raw_scales = torch.rand(k, generator=generator, dtype=torch.float64) * 1.5 - 1.0
    return torch.cat([logits, means, raw_scales])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_mixture_matches_torch_distributions(k: int, seed: int) -> None:
    params = _params(k, seed)
    z = torch.linspace(-6, 6, 41, dtype=torch.float64)
    logits, means, raw = params.chunk(3)
    reference = MixtureSameFamily(Categorical(logits=logits), Normal(means, raw.exp()))
    got = cond.mixture_log_prob(params.expand(len(z), -1), z)
    torch.testing.assert_close(got, reference.log_prob(z))


def test_mixture_integrates_to_one() -> None:
    params = _params(4, seed=5)
    z = torch.linspace(-30, 30, 60_001, dtype=torch.float64)
    density = cond.mixture_log_prob(params.expand(len(z), -1), z).exp()
    assert abs(float(torch.trapezoid(density, z)) - 1.0) < 1e-6


def test_log_scales_are_clamped() -> None:
    k = 2
    params = torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0, -50.0], dtype=torch.float64)
    _, _, log_scales = cond.split_mixture(params)
    assert log_scales.tolist() == [cond.LOG_SCALE_MAX, cond.LOG_SCALE_MIN]
    value = cond.mixture_log_prob(params.expand(3, 3 * k), torch.tensor([0.0, 1.0, 1e3]))
    assert torch.isfinite(value).all()


def test_mixture_sampler_draws_from_the_mixture() -> None:
    params = _params(3, seed=11)
    generator = torch.Generator().manual_seed(0)
    draws = cond.mixture_sample(params.expand(40_000, -1), generator).numpy()
    logits, means, raw = params.chunk(3)
    reference = MixtureSameFamily(Categorical(logits=logits), Normal(means, raw.exp()))
    assert abs(draws.mean() - float(reference.mean)) < 0.05
    assert abs(draws.std() - math.sqrt(float(reference.variance))) < 0.05
    # Empirical CDF agrees with the mixture CDF at a few points.
    w = torch.softmax(logits, 0)
    for t in (-2.0, 0.0, 2.0):
        cdf = float((w * Normal(means, raw.exp()).cdf(torch.tensor(t))).sum())
        assert abs((draws <= t).mean() - cdf) < 0.015


def _padded(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    vmax = max(sizes)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, len(sizes), vmax, generator=generator) * 3
    valid = torch.arange(vmax)[None, :] < torch.tensor(sizes)[:, None]
    return logits, valid


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 10_000))
def test_categorical_probabilities_sum_to_one_with_padding(sizes: list[int], seed: int) -> None:
    logits, valid = _padded(sizes, seed)
    log_p = cond.categorical_log_probs(logits, valid.expand_as(logits))
    vmax = max(sizes)
    assert log_p.shape == (2, len(sizes), vmax + 1)
    total = log_p.double().exp().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)
    assert (log_p[..., :vmax][~valid.expand_as(logits)] == float("-inf")).all()
    torch.testing.assert_close(
        log_p[..., vmax], torch.full_like(log_p[..., vmax], math.log(cond.UNSEEN_MASS))
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 10_000))
def test_categorical_log_prob_of_each_index_and_of_unseen(sizes: list[int], seed: int) -> None:
    logits, valid = _padded(sizes, seed)
    size_t = torch.tensor(sizes)
    full = cond.categorical_log_probs(logits, valid.expand_as(logits))
    vmax = max(sizes)
    # Enumerate every index 0..size (size = unseen) of every feature: probabilities sum to 1.
    total = torch.zeros(2, len(sizes), dtype=torch.float64)
    for value in range(vmax + 1):
        index = torch.minimum(torch.full((len(sizes),), value), size_t)
        counted = torch.full((len(sizes),), value) <= size_t
        lp = cond.categorical_log_prob(logits, valid, index.expand(2, -1), size_t)
        total += torch.where(counted, lp.double().exp(), torch.zeros_like(total))
        for f in range(len(sizes)):
            expected = full[:, f, vmax] if index[f] == sizes[f] else full[:, f, index[f]]
            torch.testing.assert_close(lp[:, f], expected)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)


def test_categorical_sampler_never_draws_padding_or_unseen() -> None:
    logits, valid = _padded([2, 5], seed=3)
    generator = torch.Generator().manual_seed(0)
    row_logits = logits[0, 0].expand(30_000, -1)
    draws = cond.categorical_sample(row_logits, valid[0], generator).numpy()
    assert set(np.unique(draws)) <= {0, 1}
    expected = torch.softmax(logits[0, 0, :2], 0).numpy()
    freq = np.bincount(draws, minlength=2) / len(draws)
    np.testing.assert_allclose(freq, expected, atol=0.015)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 7),
    st.floats(-80.0, 80.0),
    st.integers(0, 2**31 - 1),
)
def test_logsumexp_is_torchs_bit_for_bit_without_gradients(
    rows: int, k: int, offset: float, seed: int
) -> None:
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(seed)) * 30 + offset
    for dim in (0, 1, -1):
        assert torch.equal(cond.logsumexp(x, dim=dim), torch.logsumexp(x, dim=dim))


def test_logsumexp_keeps_torchs_gradient_in_training() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (grad,) = torch.autograd.grad(cond.logsumexp(x, dim=-1).sum(), x)
    (expected,) = torch.autograd.grad(torch.logsumexp(x, dim=-1).sum(), x)
    assert torch.equal(grad, expected)
