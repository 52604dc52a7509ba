"""Bayes classification among streams from their models' log densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from densitywatch.density.classify import posterior
from densitywatch.density.model import log_prob_numpy
from densitywatch.density.schema import Schema
from tests.density.density_support import continuous, make_model, quick_train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def two_streams() -> tuple[np.ndarray, np.ndarray]:
    """log p (n, 2) of held-out points of stream A then stream B under both streams' models."""
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    a = rng.multivariate_normal([0.0, 0.0], cov, 3000)
    b = rng.multivariate_normal([4.0, -3.0], cov, 3000)
    models = []
    for seed, data in enumerate((a, b)):
        mean, std = data.mean(0), data.std(0)
        schema = Schema(features=[continuous(f"x{j}", mean[j], std[j]) for j in range(2)])
        models.append(quick_train(make_model(schema, seed=seed), data, steps=150))
    test = np.concatenate(
        [
            rng.multivariate_normal([0.0, 0.0], cov, 500),
            rng.multivariate_normal([4.0, -3.0], cov, 500),
        ]
    )
    labels = np.repeat([0, 1], 500)
    return np.stack([log_prob_numpy(m, test) for m in models], axis=1), labels


def test_well_separated_streams_are_told_apart(two_streams: tuple[np.ndarray, np.ndarray]) -> None:
    log_p, labels = two_streams
    post = posterior(log_p)
    assert post.shape == (1000, 2)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (post.argmax(axis=1) == labels).mean() > 0.99
    assert np.median(post[np.arange(1000), labels]) > 0.999


def test_priors_shift_the_posterior(two_streams: tuple[np.ndarray, np.ndarray]) -> None:
    log_p, _ = two_streams
    uniform = posterior(log_p)
    skewed = posterior(log_p, np.array([9.0, 1.0]))  # unnormalised priors are fine
    np.testing.assert_allclose(skewed.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (skewed[:, 0] >= uniform[:, 0]).all()
    # Where not saturated, the log-odds move by exactly log(9).
    open_ = (uniform[:, 0] > 1e-6) & (uniform[:, 0] < 1 - 1e-6)
    open_ &= (skewed[:, 0] > 1e-6) & (skewed[:, 0] < 1 - 1e-6)
    assert open_.any()
    odds = np.log(skewed[open_, 0] / skewed[open_, 1]) - np.log(
        uniform[open_, 0] / uniform[open_, 1]
    )
    np.testing.assert_allclose(odds, math.log(9.0), atol=1e-6)
    # A point midway between the streams flips class with a strong enough prior.
    tie = np.array([[-10.0, -10.5]])
    assert posterior(tie)[0].argmax() == 0
    assert posterior(tie, np.array([0.1, 0.9]))[0].argmax() == 1


def test_zero_prior_gives_zero_posterior() -> None:
    post = posterior(np.array([[-1.0, -50.0, -2.0]]), np.array([0.0, 1.0, 1.0]))
    assert post[0, 0] == 0.0
    np.testing.assert_allclose(post.sum(), 1.0)
    assert post[0, 2] > post[0, 1]


def test_extreme_log_densities_do_not_produce_nan() -> None:
    log_p = np.array([[-1e6, -1e6 + 1.0], [-1e6, 0.0], [-1e6, -1e6], [-1e300, -1e6]])
    post = posterior(log_p)
    assert np.isfinite(post).all()
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(post[0], [1 / (1 + math.e), math.e / (1 + math.e)])
    np.testing.assert_allclose(post[1], [0.0, 1.0])
    np.testing.assert_allclose(post[2], [0.5, 0.5])
    np.testing.assert_allclose(post[3], [0.0, 1.0])


def test_a_point_impossible_under_every_stream_gives_a_finite_posterior() -> None:
    """log p = -inf (e.g. a value so extreme its float32 square overflows) under every
    stream: the posterior must still be a distribution, not NaN."""
    post = posterior(np.array([[-np.inf, -np.inf], [-np.inf, -3.0]]), np.array([0.3, 0.7]))
    assert np.isfinite(post).all()
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    np.testing.assert_allclose(post[1], [0.0, 1.0])


@pytest.mark.parametrize("priors", [[1.0], [0.5, -0.5], [0.0, 0.0], [1.0, 1.0, 1.0]])
def test_bad_priors_are_rejected(priors: list[float]) -> None:
    with pytest.raises(ValueError, match="priors"):
        posterior(np.zeros((3, 2)), np.array(priors))


finite_logs = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 4)), elements=finite_logs),
    st.floats(-1e5, 1e5),
)
def test_posterior_is_softmax_of_log_joint_and_shift_invariant(
    log_p: np.ndarray, shift: float
) -> None:
    priors = np.linspace(1.0, 2.0, log_p.shape[1])
    post = posterior(log_p, priors)
    joint = log_p + np.log(priors / priors.sum())
    expected = np.exp(joint - joint.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(post, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(posterior(log_p + shift, priors), post, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=0, atol=1e-12)
