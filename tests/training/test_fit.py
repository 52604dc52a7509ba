"""training.fit: maximum likelihood recovers known densities (in nats per point), the raw-space
log p does not depend on the preprocessing, and the fit result is consistent and seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densitywatch.density.model import log_prob_numpy, weight_count
from densitywatch.density.schema import FeatureKind, FeatureSpec, Schema
from densitywatch.training.fit import (
    MIN_WIDTH,
    Capacity,
    FitConfig,
    FitResult,
    default_batch_size,
    default_capacities,
    default_max_steps,
    fit,
    max_weights,
    split,
    within_budget,
)
from densitywatch.training.schema import infer_schema_from_matrix

torch.set_num_threads(1)

MEAN = np.array([1.0, -2.0])
COV = np.array([[2.0, 1.2], [1.2, 1.5]])


def _config(**kw: object) -> FitConfig:
    base: dict[str, object] = {
        "capacities": [Capacity(hidden_width=32, n_components=3, n_orderings=1)],
        "max_steps": 1500,
        "batch_size": 256,
        "show_progress": False,
        "seed": 0,
    }
    return FitConfig.model_validate({**base, **kw})


def _gaussian_log_pdf(x: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(COV)
    d = x - MEAN
    quad = np.einsum("ni,ij,nj->n", d, inv, d)
    return -0.5 * quad - 0.5 * math.log(np.linalg.det(COV)) - math.log(2 * math.pi)


@pytest.fixture(scope="module")
def gaussian_fit() -> tuple[FitResult, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.multivariate_normal(MEAN, COV, 4000)
    test = rng.multivariate_normal(MEAN, COV, 20_000)
    return fit(infer_schema_from_matrix(train), train, _config()), train, test


def test_fit_recovers_a_known_correlated_gaussian(
    gaussian_fit: tuple[FitResult, np.ndarray, np.ndarray],
) -> None:
    """Mean test log p within 0.05 nats/point of the true density's (the gap is the KL)."""
    result, _, test = gaussian_fit
    true = _gaussian_log_pdf(test)
    got = log_prob_numpy(result.model, test)
    gap = float(true.mean() - got.mean())
    assert -0.02 < gap < 0.05, gap
    # Per point too: the fitted density tracks the true one in the bulk.
    bulk = true > np.quantile(true, 0.05)
    assert np.abs(got[bulk] - true[bulk]).mean() < 0.1


def test_fit_result_is_consistent(gaussian_fit: tuple[FitResult, np.ndarray, np.ndarray]) -> None:
    result, train, _ = gaussian_fit
    assert result.n_train + result.n_val == len(train)
    assert result.n_val == round(0.2 * len(train))
    assert not result.model.training
    assert result.epochs >= 1 and result.duration_s > 0
    entropy = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * COV))
    assert abs(result.val_nll - entropy) < 0.1 and abs(result.train_nll - entropy) < 0.1
    assert len(result.candidates) == 1
    assert result.candidates[0]["val_nll"] == pytest.approx(result.val_nll)


def test_fit_learns_a_bimodal_first_feature() -> None:
    """The first feature of an ordering is unconditional: its mixture parameters are the
    output layer's biases alone. They must still become a real (multi-modal) mixture."""
    rng = np.random.default_rng(1)

    def draw(n: int) -> np.ndarray:
        centre = np.where(rng.random(n) < 0.5, -2.0, 2.0)
        return np.stack([centre + rng.normal(0, 0.5, n), rng.normal(0, 1, n)], axis=1)

    def true_log_pdf(x: np.ndarray) -> np.ndarray:
        def normal(v: np.ndarray, mu: float, s: float) -> np.ndarray:
            return np.exp(-0.5 * ((v - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))

        first = np.log(0.5 * normal(x[:, 0], -2, 0.5) + 0.5 * normal(x[:, 0], 2, 0.5))
        return first + np.log(normal(x[:, 1], 0.0, 1.0))

    train, test = draw(4000), draw(10_000)
    result = fit(infer_schema_from_matrix(train), train, _config())
    gap = float(true_log_pdf(test).mean() - log_prob_numpy(result.model, test).mean())
    assert gap < 0.05, f"fitted density is {gap:.3f} nats/point worse than the truth"


def test_raw_log_p_does_not_depend_on_the_log_transform() -> None:
    """Same skewed data, modelled with and without log1p: both give the raw-space density
    (the Jacobian is inside log p), so mean test log p agrees up to training noise."""
    rng = np.random.default_rng(2)
    k = 9.0

    def draw(n: int) -> np.ndarray:
        return np.stack([rng.normal(0, 1, n), rng.gamma(k, 1.0, n)], axis=1)

    train, test = draw(4000), draw(20_000)
    true = (
        -0.5 * test[:, 0] ** 2
        - 0.5 * math.log(2 * math.pi)
        + (k - 1) * np.log(test[:, 1])
        - test[:, 1]
        - math.lgamma(k)
    )
    means = {}
    for log in (False, True):
        g = np.log1p(train[:, 1]) if log else train[:, 1]
        schema = Schema(
            features=[
                FeatureSpec(name="n", mean=float(train[:, 0].mean()), std=float(train[:, 0].std())),
                FeatureSpec(
                    name="g",
                    kind=FeatureKind.CONTINUOUS,
                    log_transform=log,
                    mean=float(g.mean()),
                    std=float(g.std()),
                ),
            ]
        )
        result = fit(schema, train, _config(capacities=[Capacity(hidden_width=16, n_components=3)]))
        means[log] = float(log_prob_numpy(result.model, test).mean())
        assert abs(means[log] - true.mean()) < 0.05, (log, means[log], true.mean())
    assert abs(means[True] - means[False]) < 0.04, means


def test_capacity_is_selected_by_validation_nll() -> None:
    rng = np.random.default_rng(3)
    x = rng.multivariate_normal(MEAN, COV, 1500)
    capacities = [
        Capacity(hidden_width=8, n_components=1, n_orderings=1),
        Capacity(hidden_width=16, n_components=2, n_orderings=2, weight_decay=1e-4),
    ]
    result = fit(infer_schema_from_matrix(x), x, _config(capacities=capacities, max_steps=300))
    assert [c["hidden_width"] for c in result.candidates] == [8, 16]
    best = min(result.candidates, key=lambda c: c["val_nll"])
    assert result.capacity.hidden_width == best["hidden_width"]
    assert result.val_nll == pytest.approx(best["val_nll"])
    assert len(result.model.orderings) == result.capacity.n_orderings
    # final_orderings overrides every candidate's ensemble size.
    three = fit(
        infer_schema_from_matrix(x),
        x,
        _config(capacities=capacities[:1], max_steps=100, final_orderings=3),
    )
    assert len(three.model.orderings) == 3 and three.capacity.n_orderings == 3


def test_fit_is_reproducible_for_a_seed() -> None:
    rng = np.random.default_rng(4)
    x = rng.multivariate_normal(MEAN, COV, 800)
    schema = infer_schema_from_matrix(x)
    cfg = _config(capacities=[Capacity(hidden_width=8, n_components=2)], max_steps=150)
    a, b = fit(schema, x, cfg), fit(schema, x, cfg)
    with torch.no_grad():
        xt = torch.from_numpy(x[:100])
        assert torch.equal(a.model.log_prob(xt).total, b.model.log_prob(xt).total)
    c = fit(schema, x, cfg.model_copy(update={"seed": 1}))
    assert not np.array_equal(log_prob_numpy(a.model, x[:100]), log_prob_numpy(c.model, x[:100]))


def test_progress_is_redrawn_by_time_not_per_epoch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Output that is not a terminal (a Job's log) gets a line per redraw: epochs must not
    force one each. With redraws allowed once an hour, only the bar's start and end print."""
    from functools import partial

    import densitywatch.training.fit as fit_module

    monkeypatch.setattr(fit_module, "tqdm", partial(fit_module.tqdm, mininterval=3600))
    x = np.random.default_rng(5).multivariate_normal(MEAN, COV, 600)
    result = fit(infer_schema_from_matrix(x), x, _config(max_steps=300, show_progress=True))
    redraws = capsys.readouterr().err.count("\r")
    epochs = result.epochs + (result.refit_epochs or 0)
    assert epochs >= 20 and redraws <= 3, (epochs, redraws)


def test_refit_trains_the_final_model_on_the_validation_rows_too() -> None:
    """A cluster holds 12% of the training split but 19% of all rows (half the validation
    split): the model's sampled mass there follows the rows it was trained on, so the
    selected candidate puts about 12% there and the refitted model about 19%."""
    rng = np.random.default_rng(5)
    n = 2000
    _, val_rows = split(np.arange(float(n))[:, None], 0.2, seed=0)  # fit's own split
    in_val = np.zeros(n, dtype=bool)
    in_val[val_rows[:, 0].astype(int)] = True
    far = np.where(in_val, rng.random(n) < 0.5, rng.random(n) < 0.1)
    x = rng.normal(size=(n, 2))
    x[far] += 6.0
    schema = infer_schema_from_matrix(x)
    cfg = _config(max_steps=600)
    kept = fit(schema, x, cfg.model_copy(update={"refit": False}))
    refit = fit(schema, x, cfg)
    assert kept.refit_epochs is None
    assert refit.refit_epochs is not None and 1 <= refit.refit_epochs <= refit.epochs
    assert refit.val_nll == kept.val_nll  # the selection's held-out figure, before the refit

    def far_mass(result: FitResult) -> float:
        samples = result.model.sample(8000, torch.Generator().manual_seed(0)).numpy()
        return float((samples[:, 0] > 3).mean())

    assert abs(far_mass(kept) - far[~in_val].mean()) < 0.03
    assert abs(far_mass(refit) - far.mean()) < 0.03


def test_split_and_batch_size_defaults() -> None:
    x = np.arange(50.0)[:, None]
    train, val = split(x, 0.2, seed=0)
    assert len(val) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, val])[:, 0].tolist()) == x[:, 0].tolist()
    assert len(split(x[:2], 0.01, seed=0)[1]) == 1
    assert default_batch_size(10) == 64 and default_batch_size(10**7) == 1024


@pytest.mark.parametrize("n_train", [100, 1_999, 2_000, 19_999, 20_000, 62_000, 90_000, 400_000])
def test_step_budget_gives_large_streams_enough_epochs_within_a_cap(n_train: int) -> None:
    batch = default_batch_size(n_train)
    steps = default_max_steps(n_train, batch)
    epochs = steps / math.ceil(n_train / batch)
    if n_train < 2_000:
        assert steps == 2000
    elif n_train < 20_000:
        assert steps == 3000
        assert epochs >= 50  # the batch grows with the data below 20k rows
    else:
        assert 1500 <= steps <= 5000
        assert epochs >= 40 or steps == 5000


def _wide_schema(n_num: int, cat_sizes: list[int]) -> Schema:
    feats = [FeatureSpec(name=f"x{i}") for i in range(n_num)]
    feats += [
        FeatureSpec(
            name=f"c{i}", kind=FeatureKind.CATEGORICAL, vocabulary=[str(v) for v in range(s)]
        )
        for i, s in enumerate(cat_sizes)
    ]
    return Schema(features=feats)


@settings(max_examples=80, deadline=None)
@given(
    n_num=st.integers(0, 2000),
    cat_sizes=st.lists(st.integers(2, 12), max_size=20),
    width=st.integers(8, 256),
    k=st.integers(1, 8),
    e=st.integers(1, 20),
    budget=st.integers(1_000, 5_000_000),
)
def test_within_budget_cuts_orderings_then_components_then_width(
    n_num: int, cat_sizes: list[int], width: int, k: int, e: int, budget: int
) -> None:
    if n_num + len(cat_sizes) == 0:
        n_num = 1
    schema = _wide_schema(n_num, cat_sizes)
    template = Capacity(hidden_width=width, n_components=k, n_orderings=e, weight_decay=1e-4)
    cut = within_budget(template, schema, budget)

    def count(c: Capacity) -> int:
        return weight_count(schema, c.architecture())

    assert cut.weight_decay == template.weight_decay
    assert cut.hidden_width <= width and cut.n_components <= k and cut.n_orderings <= e
    if count(template) <= budget:
        assert cut == template
    elif count(cut) <= budget and cut.n_components == k and cut.hidden_width == width:
        # Only the ensemble was cut: to the most orderings that fit.
        assert count(cut.model_copy(update={"n_orderings": cut.n_orderings + 1})) > budget
    else:
        assert cut.n_orderings == 1
        assert count(cut) <= budget or (cut.n_components == 1 and cut.hidden_width <= MIN_WIDTH)


def test_default_capacities_stay_within_the_streams_budget() -> None:
    cells = _wide_schema(30, [])
    wide = _wide_schema(1555, [])
    for n_train, schema in [
        (200, cells),
        (640, wide),
        (4000, _wide_schema(512, [])),
        (40_000, wide),
    ]:
        grid = default_capacities(n_train, schema)
        assert grid and len(grid) == len({c.model_dump_json() for c in grid})
        for c in grid:
            assert weight_count(schema, c.architecture()) <= max_weights(n_train)
