"""DensityModel: the autoregressive property for every feature kind and ensemble member,
normalisation of the raw-space density, sampling, folding and the per-feature terms."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from densitywatch.density.masks import feature_degrees
from densitywatch.density.model import (
    ArchitectureSpec,
    DensityModel,
    default_orderings,
    log_prob_numpy,
    min_weights,
    weight_count,
)
from densitywatch.density.schema import FeatureKind, FeatureSpec, Schema
from tests.density.density_support import (
    atom_schema,
    continuous,
    integer,
    make_model,
    mixed_schema,
    number_cat,
    perturb,
    quick_train,
    random_encoded,
    string_cat,
)

torch.set_num_threads(1)

SCHEMAS: dict[str, Callable[[], Schema]] = {
    "continuous": lambda: Schema(
        features=[
            continuous("a", 1.0, 2.0),
            continuous("b", 0.5, 0.7, log=True),
            continuous("c", -3.0, 5.0),
            continuous("d"),
        ]
    ),
    "integer": lambda: Schema(
        features=[integer("a", 10.0, 4.0), integer("b", 2.0, 1.0, log=True), integer("c", 0, 2)]
    ),
    "categorical_numbers": lambda: Schema(
        features=[
            number_cat("a", [1.0, 2.0, 5.0]),
            number_cat("b", [0.0, 9.5]),
            number_cat("c", [3.0, 4.0, 6.0, 8.0]),
        ]
    ),
    "categorical_strings": lambda: Schema(
        features=[
            string_cat("a", ["x", "y"]),
            string_cat("b", ["p", "q", "r", "s", "t"]),
            string_cat("c", ["u", "v", "w"]),
        ]
    ),
    "atoms": atom_schema,
    "mixed": mixed_schema,
}
CASES = list(itertools.product(SCHEMAS, [1, 4]))


def _degrees(model: DensityModel, member: int) -> list[int]:
    return feature_degrees(model.orderings[member]).tolist()


def _numeric(schema: Schema) -> list[int]:
    return [j for j, f in enumerate(schema.features) if f.kind != FeatureKind.CATEGORICAL]


# -- autoregressive property ---------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("name", "orderings"), CASES)
def test_member_terms_gradients_follow_each_ordering(
    name: str, orderings: int, shared: bool
) -> None:
    """d term_i / d x_j = 0 when x_j comes after x_i in member e's ordering, != 0 before,
    whether the members have weights of their own or share one network."""
    schema = SCHEMAS[name]()
    model = make_model(schema, orderings=orderings, seed=3, shared=shared)
    numeric = _numeric(schema)
    if not numeric:
        pytest.skip("no differentiable raw inputs; covered by the network-input test")
    x = torch.from_numpy(random_encoded(schema, 4, seed=1)).requires_grad_(True)
    terms = model.member_terms(x)
    assert terms.shape == (orderings, 4, len(schema.features))
    for e in range(orderings):
        deg = _degrees(model, e)
        for i in range(len(schema.features)):
            (grad,) = torch.autograd.grad(terms[e, :, i].sum(), x, retain_graph=True)
            for j in numeric:
                if deg[j] > deg[i]:
                    assert (grad[:, j] == 0).all(), (name, e, i, j)
                elif deg[j] < deg[i] or j == i:
                    assert (grad[:, j] != 0).any(), (name, e, i, j)


@pytest.mark.parametrize("spread", [False, True])
def test_a_narrow_network_sees_the_whole_past_only_with_spread_degrees(spread: bool) -> None:
    """With 4 hidden units and 12 features, cycling degrees 1..4 lets the last feature see only
    the first 4; spread degrees (1 to 11) let it see all 11 before it (its own term depends on
    its own value, through the density, in both)."""
    schema = Schema(features=[FeatureSpec(name=f"x{j}") for j in range(12)])
    arch = ArchitectureSpec(hidden_width=4, n_components=2, spread_degrees=spread)
    model = perturb(DensityModel(schema, arch), seed=1)  # one member: the identity ordering
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model.member_terms(x)[0, :, 11].sum(), x)
    seen = (grad != 0).any(dim=0)
    assert seen[:4].all() and seen[11]
    assert bool(seen[4:11].all()) is spread and bool(seen[4:11].any()) is spread


def _unit_features(model: DensityModel) -> tuple[list[int], list[int]]:
    """Which feature each network input / output unit belongs to, from the documented
    layout [numeric z | atom flags | categorical one-hots] -> [numeric 3K params | atom
    logits | categorical logits]."""
    feats = model.schema.features
    num = [j for j, f in enumerate(feats) if f.kind != FeatureKind.CATEGORICAL]
    cat = [j for j, f in enumerate(feats) if f.kind == FeatureKind.CATEGORICAL]
    atoms = [j for j in num if feats[j].atom is not None]
    vmax = max((len(feats[j].vocabulary or []) for j in cat), default=1)
    k = model.architecture.n_components
    ins = num + atoms + [j for j in cat for _ in range(vmax)]
    outs = [j for j in num for _ in range(3 * k)] + atoms + [j for j in cat for _ in range(vmax)]
    return ins, outs


@pytest.mark.parametrize(("name", "orderings"), CASES)
def test_network_jacobian_respects_degrees_including_one_hot_inputs(
    name: str, orderings: int
) -> None:
    schema = SCHEMAS[name]()
    model = make_model(schema, orderings=orderings, seed=5)
    in_feat, out_feat = _unit_features(model)
    in_deg, out_deg = model._unit_degrees()
    for e in range(orderings):
        deg = torch.tensor(_degrees(model, e))
        assert torch.equal(in_deg[e], deg[in_feat]), "input layout"
        assert torch.equal(out_deg[e], deg[out_feat]), "output layout"

    x = torch.from_numpy(random_encoded(schema, 2, seed=2))
    xn = x[:, model.num_index]
    z, _ = model._preprocess(xn)
    h = model._network_input(z, model._on_atom(xn), x[:, model.cat_index].long())
    assert h.shape == (2, len(in_feat))
    h_members = h.unsqueeze(0).expand(orderings, -1, -1).clone()
    jac = torch.autograd.functional.jacobian(model.net, h_members)  # (E, n, O, E, n, U)
    n_features = len(schema.features)
    for e in range(orderings):
        member_deg = _degrees(model, e)
        block = jac[e, :, :, e, :, :].diagonal(dim1=0, dim2=2)  # (O, U, n)
        for i, j in itertools.product(range(n_features), repeat=2):
            rows = [o for o, f in enumerate(out_feat) if f == i]
            cols = [u for u, f in enumerate(in_feat) if f == j]
            sub = block[rows][:, cols]
            if member_deg[j] >= member_deg[i]:
                assert (sub == 0).all(), (name, e, i, j)
            else:
                assert (sub != 0).any(), (name, e, i, j)


def _changed(schema: Schema, x: np.ndarray, j: int) -> np.ndarray:
    y = x.copy()
    f = schema.features[j]
    if f.kind == FeatureKind.CATEGORICAL:
        y[:, j] = (y[:, j] + 1) % len(f.vocabulary or [])
    elif f.kind == FeatureKind.INTEGER:
        y[:, j] += 3
    else:
        y[:, j] = y[:, j] * 1.5 + 0.7
    return y


@pytest.mark.parametrize(("name", "orderings"), CASES)
def test_changing_a_feature_leaves_earlier_terms_bit_identical(name: str, orderings: int) -> None:
    """Perturbation version of the property, covering categorical inputs end to end."""
    schema = SCHEMAS[name]()
    model = make_model(schema, orderings=orderings, seed=7)
    x = random_encoded(schema, 5, seed=3)
    base = model.member_terms(torch.from_numpy(x)).detach()
    for j in range(len(schema.features)):
        after = model.member_terms(torch.from_numpy(_changed(schema, x, j))).detach()
        for e in range(orderings):
            deg = _degrees(model, e)
            for i in range(len(schema.features)):
                if deg[i] < deg[j]:
                    assert torch.equal(after[e, :, i], base[e, :, i]), (name, e, i, j)
                else:  # the feature itself and everything after it
                    assert not torch.equal(after[e, :, i], base[e, :, i]), (name, e, i, j)


def test_default_orderings_identity_first_then_seeded_permutations() -> None:
    a = default_orderings(6, 4, seed=9)
    assert a[0].tolist() == list(range(6))
    assert all(sorted(row.tolist()) == list(range(6)) for row in a)
    assert torch.equal(a, default_orderings(6, 4, seed=9))
    assert not torch.equal(a, default_orderings(6, 4, seed=10))


@pytest.mark.parametrize(
    "orderings",
    [[[0, 0, 1, 2, 3]], [[0, 1, 2, 3, 9]], [[0, 1, 2, 3]], [0, 1, 2, 3, 4]],
    ids=["repeated", "out-of-range", "short", "not-2d"],
)
def test_orderings_that_are_not_permutations_are_rejected(
    schema_mixed: Schema, orderings: list
) -> None:
    """A bad ordering would leave feature degrees uninitialised (torch.empty_like) and
    silently break the autoregressive property, so the constructor must refuse it."""
    with pytest.raises(ValueError, match="ordering"):
        DensityModel(schema_mixed, ArchitectureSpec(hidden_width=8), torch.tensor(orderings))


# -- normalisation ---------------------------------------------------------------------------

_U = np.linspace(-6.5, 6.5, 521)  # z = sinh(u): fine near the bulk, reaches |z| ~ 330


def _raw_grid(f: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Raw values x(u) on a uniform u grid and dx/du, for ∫ p(x) dx = ∫ p(x(u)) x'(u) du."""
    mean, std, log = f.mean, f.std, f.log_transform
    y = mean + std * np.sinh(_U)
    dy = std * np.cosh(_U)
    if not log:
        return y, dy
    return np.sign(y) * np.expm1(np.abs(y)), np.exp(np.abs(y)) * dy


def _density(model: DensityModel, x: np.ndarray) -> np.ndarray:
    return np.exp(log_prob_numpy(model, x, batch_size=65_536))


def _integrate_1d(model: DensityModel) -> float:
    x, dx = _raw_grid(model.schema.features[0])
    return float(np.trapezoid(_density(model, x[:, None]) * dx, _U))


def _integrate_2d(model: DensityModel) -> float:
    x0, d0 = _raw_grid(model.schema.features[0])
    x1, d1 = _raw_grid(model.schema.features[1])
    g0, g1 = np.meshgrid(x0, x1, indexing="ij")
    p = _density(model, np.stack([g0.ravel(), g1.ravel()], axis=1)).reshape(g0.shape)
    inner = np.trapezoid(p * d1[None, :], _U, axis=1)
    return float(np.trapezoid(inner * d0, _U))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_continuous_feature_integrates_to_one(log: bool, seed: int) -> None:
    schema = Schema(features=[continuous("a", mean=3.0, std=2.0, log=log)])
    model = make_model(schema, seed=seed, components=4)
    assert abs(_integrate_1d(model) - 1.0) < 1e-3


@pytest.mark.parametrize("orderings", [1, 3])
def test_two_continuous_features_integrate_to_one(orderings: int) -> None:
    schema = Schema(features=[continuous("a", -1.0, 2.0), continuous("b", 1.0, 0.5, log=True)])
    model = make_model(schema, orderings=orderings, seed=1)
    if orderings > 1:
        assert {tuple(o) for o in model.orderings.tolist()} == {(0, 1), (1, 0)}
    assert abs(_integrate_2d(model) - 1.0) < 1e-3


def test_briefly_trained_models_stay_normalised() -> None:
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(-2, 0.5, 2000), rng.normal(3, 1.0, 2000)])
    b = np.exp(0.5 * a + rng.normal(0, 0.3, 4000))
    schema = Schema(
        features=[
            continuous("a", float(a.mean()), float(a.std())),
            continuous("b", float(np.log1p(b).mean()), float(np.log1p(b).std()), log=True),
        ]
    )
    one = quick_train(make_model(Schema(features=schema.features[:1]), seed=2), a[:, None])
    assert abs(_integrate_1d(one) - 1.0) < 1e-3
    two = quick_train(make_model(schema, orderings=3, seed=1), np.stack([a, b], 1), steps=150)
    assert abs(_integrate_2d(two) - 1.0) < 1e-3


def _lattice_mass(model: DensityModel, lo: int, hi: int) -> float:
    x = np.arange(lo, hi + 1, dtype=np.float64)[:, None]
    return float(_density(model, x).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_integer_probabilities_sum_to_one_over_the_lattice(seed: int) -> None:
    model = make_model(Schema(features=[integer("n", mean=10.0, std=4.0)]), seed=seed)
    assert abs(_lattice_mass(model, -3000, 3000) - 1.0) < 1e-3


def test_briefly_trained_integer_model_sums_to_one() -> None:
    rng = np.random.default_rng(1)
    counts = rng.poisson(25, 4000).astype(np.float64)
    feature = integer("n", mean=float(counts.mean() + 0.5), std=float(counts.std()))
    model = quick_train(make_model(Schema(features=[feature]), seed=0), counts[:, None])
    assert abs(_lattice_mass(model, -2000, 2000) - 1.0) < 2e-3


def test_categorical_probabilities_with_unseen_sum_to_one_in_an_ensemble() -> None:
    schema = Schema(features=[string_cat("s", ["a", "b", "c", "d"]), number_cat("n", [1.0, 2.0])])
    model = make_model(schema, orderings=3, seed=4)
    grid = np.array(list(itertools.product(range(5), range(3))), dtype=np.float64)  # incl. unseen
    p = _density(model, grid)
    assert abs(p.sum() - 1.0) < 1e-5
    unseen = (grid[:, 0] == 4) | (grid[:, 1] == 2)
    assert 1e-7 < p[unseen].sum() < 3e-6


@pytest.mark.parametrize("orderings", [1, 2])
def test_atom_mass_plus_density_elsewhere_is_one(orderings: int) -> None:
    """P(x0 = atom, x1) + ∫ p(x0, x1) dx0 off the atom, integrated over x1, is 1 in both
    orders (the atom feature conditioning the other one and conditioned on it)."""
    schema = Schema(features=[continuous("x0", 1.0, 2.0, atom=0.0), continuous("x1", -1.0, 0.5)])
    model = make_model(schema, orderings=orderings, seed=7)
    x0, d0 = _raw_grid(schema.features[0])
    x1, d1 = _raw_grid(schema.features[1])
    g0, g1 = np.meshgrid(x0, x1, indexing="ij")
    p = _density(model, np.stack([g0.ravel(), g1.ravel()], axis=1)).reshape(g0.shape)
    dense = float(np.trapezoid(np.trapezoid(p * d1[None, :], _U, axis=1) * d0, _U))
    on_atom = np.stack([np.zeros_like(x1), x1], axis=1)
    mass = float(np.trapezoid(_density(model, on_atom) * d1, _U))
    assert 0.05 < mass < 0.95, "an untrained atom has a middling probability"
    assert abs(dense + mass - 1.0) < 1e-3


def test_samples_sit_on_the_atom_as_often_as_the_model_says() -> None:
    """The share of samples exactly on the atom matches P(x0 = atom) by quadrature over x1,
    and samples off the atom never land on it."""
    schema = Schema(features=[continuous("x0", 1.0, 2.0, atom=0.0), continuous("x1", -1.0, 0.5)])
    model = make_model(schema, orderings=2, seed=8)
    x1, d1 = _raw_grid(schema.features[1])
    on_atom_grid = np.stack([np.zeros_like(x1), x1], axis=1)
    mass = float(np.trapezoid(_density(model, on_atom_grid) * d1, _U))
    x = model.sample(20_000, torch.Generator().manual_seed(0)).numpy()
    share = float((x[:, 0] == 0.0).mean())
    assert np.isfinite(x).all()
    assert abs(share - mass) < 4 * math.sqrt(mass * (1 - mass) / len(x)) + 1e-3


def test_mixed_ensemble_is_normalised_over_all_kinds() -> None:
    """∫ dx Σ_n Σ_c p(x, n, c) = 1 for continuous × integer × categorical (3 orderings)."""
    schema = Schema(
        features=[continuous("x", 0.0, 1.0), integer("n", 5.0, 3.0), string_cat("c", ["a", "b"])]
    )
    model = make_model(schema, orderings=3, seed=6)
    assert len({tuple(o) for o in model.orderings.tolist()}) > 1
    u = np.linspace(-5.0, 5.0, 161)
    x, dx = np.sinh(u), np.cosh(u)
    n = np.arange(-150, 161, dtype=np.float64)
    g = np.stack(np.meshgrid(x, n, np.arange(3.0), indexing="ij"), -1).reshape(-1, 3)
    p = _density(model, g).reshape(len(x), len(n), 3).sum(axis=(1, 2))
    assert abs(float(np.trapezoid(p * dx, u)) - 1.0) < 1e-3


# -- terms, folding, evaluation helpers --------------------------------------------------------


def test_terms_relate_to_the_total(schema_mixed: Schema) -> None:
    x = torch.from_numpy(random_encoded(schema_mixed, 64, seed=0))
    single = make_model(schema_mixed, seed=0)
    lp = single.log_prob(x)
    torch.testing.assert_close(lp.terms.sum(-1), lp.total, rtol=0, atol=1e-4)
    ensemble = make_model(schema_mixed, orderings=3, seed=0)
    lp = ensemble.log_prob(x)
    members = ensemble.member_terms(x).sum(-1)  # (E, n)
    torch.testing.assert_close(lp.total, torch.logsumexp(members, 0) - math.log(3))
    w = torch.softmax(members, 0)
    entropy = -(w * w.clamp_min(1e-30).log()).sum(0)
    # Σ_i terms_i = Σ_e w_e T_e = total + log E - H(w) >= total.
    torch.testing.assert_close(
        lp.terms.sum(-1), lp.total + math.log(3) - entropy, atol=1e-3, rtol=0
    )


def test_fold_and_numpy_helper_give_identical_log_prob(schema_mixed: Schema) -> None:
    model = make_model(schema_mixed, orderings=2, seed=8)
    x = random_encoded(schema_mixed, 300, seed=5)
    before = model.log_prob(torch.from_numpy(x)).total.detach()
    chunked = log_prob_numpy(model, x, batch_size=64)
    np.testing.assert_array_equal(chunked, before.double().numpy())
    model.fold()
    assert not model.training
    assert torch.equal(model.log_prob(torch.from_numpy(x)).total.detach(), before)


@pytest.mark.parametrize(("name", "orderings"), CASES)
def test_forward_is_log_prob_total_bit_for_bit(name: str, orderings: int) -> None:
    schema = SCHEMAS[name]()
    model = make_model(schema, orderings=orderings, seed=3)
    x = torch.from_numpy(random_encoded(schema, 50, seed=4))
    with torch.inference_mode():
        assert torch.equal(model(x), model.log_prob(x).total)
    model.fold()
    with torch.inference_mode():
        assert torch.equal(model(x[:1]), model.log_prob(x[:1]).total)


def test_unseen_category_costs_log_unseen_mass() -> None:
    schema = Schema(features=[string_cat("s", ["a", "b"])])
    model = make_model(schema, seed=0)
    lp = log_prob_numpy(model, np.array([[2.0]]))
    assert lp[0] == pytest.approx(math.log(1e-6), abs=1e-4)


def test_log_prob_is_invariant_to_the_scale_of_integer_jitter_in_eval(schema_mixed: Schema) -> None:
    """Eval mode is deterministic (no dequantisation noise); training mode is not."""
    model = make_model(schema_mixed, seed=2)
    x = torch.from_numpy(random_encoded(schema_mixed, 50, seed=1))
    assert torch.equal(model.log_prob(x).total, model.log_prob(x).total)
    model.train()
    assert not torch.equal(model.log_prob(x).total, model.log_prob(x).total)


@pytest.mark.parametrize("value", [1e20, 1e39, 1e300, -1e300])
@pytest.mark.parametrize("orderings", [1, 2])
def test_extreme_finite_values_are_improbable_not_nan(value: float, orderings: int) -> None:
    """Schema.encode accepts any finite value. Its log p must be very low (or -inf), never
    NaN: NaN < threshold is False, so the most extreme point would be scored as normal."""
    schema = Schema(features=[continuous("a", 1.0, 2.0), integer("b", 5.0, 2.0)])
    model = make_model(schema, orderings=orderings, seed=0)
    typical = log_prob_numpy(model, np.array([[1.0, 5.0]]))[0]
    for row in ([value, 5.0], [1.0, value]):
        lp = log_prob_numpy(model, np.array([row]))[0]
        assert not np.isnan(lp), row
        assert lp < typical - 100, row


# -- sampling ------------------------------------------------------------------------------


def test_sampling_is_reproducible_from_the_generator_seed(schema_mixed: Schema) -> None:
    model = make_model(schema_mixed, orderings=3, seed=1)
    a = model.sample(200, torch.Generator().manual_seed(5))
    b = model.sample(200, torch.Generator().manual_seed(5))
    c = model.sample(200, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samples_are_valid_encoded_records(schema_mixed: Schema) -> None:
    model = make_model(schema_mixed, orderings=2, seed=1)
    x = model.sample(500, torch.Generator().manual_seed(0)).numpy()
    width = len(schema_mixed.features)
    assert x.shape == (500, width) and x.dtype == np.float64 and np.isfinite(x).all()
    for j, f in enumerate(schema_mixed.features):
        if f.kind == FeatureKind.CATEGORICAL:
            assert set(np.unique(x[:, j])) <= set(range(len(f.vocabulary or [])))
        if f.kind == FeatureKind.INTEGER:
            assert (x[:, j] == np.round(x[:, j])).all()
    numbers, strings = schema_mixed.decode(x)
    assert np.array_equal(schema_mixed.encode(numbers, strings), x)
    assert np.isfinite(log_prob_numpy(model, x)).all()


def test_samples_follow_the_models_own_density() -> None:
    """Sample statistics of an untrained (random) ensemble equal those of its density,
    computed by quadrature: checks the sampler independently of any training."""
    schema = Schema(features=[continuous("x", 1.0, 2.0), string_cat("c", ["a", "b", "c"])])
    model = make_model(schema, orderings=3, seed=11)
    assert {o[0] for o in model.orderings.tolist()} == {0, 1}, "both orders sampled"
    u = np.linspace(-6.0, 6.0, 601)
    x, dx = 1.0 + 2.0 * np.sinh(u), 2.0 * np.cosh(u)
    grid = np.stack(np.meshgrid(x, np.arange(3.0), indexing="ij"), -1).reshape(-1, 2)
    p = _density(model, grid).reshape(len(x), 3) * dx[:, None]
    p_c = np.asarray(np.trapezoid(p, u, axis=0))  # (3,): one mass per category
    mean_x = float(np.trapezoid(p.sum(1) * x, u))
    cdf_1 = float(np.trapezoid(p.sum(1) * (x < 1.0), u))
    s = model.sample(40_000, torch.Generator().manual_seed(1)).numpy()
    freq = np.bincount(s[:, 1].astype(int), minlength=3) / len(s)
    np.testing.assert_allclose(freq, p_c, atol=0.012)
    sd = math.sqrt(float(np.trapezoid(p.sum(1) * (x - mean_x) ** 2, u)))
    assert abs(s[:, 0].mean() - mean_x) < 4 * sd / math.sqrt(len(s))
    assert abs((s[:, 0] < 1.0).mean() - cdf_1) < 0.012
    for k in range(3):
        cond_mean = float(np.trapezoid(p[:, k] * x, u)) / p_c[k]
        rows = s[:, 1] == k
        assert abs(s[rows, 0].mean() - cond_mean) < 0.1 * sd, k


def test_samples_of_a_trained_model_match_the_stream() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    a = rng.normal(2.0, 3.0, n)
    b = 0.5 * a + rng.normal(0.0, 1.0, n)
    c = (a + rng.normal(0, 1, n) > 2.0).astype(np.float64)  # category depends on a
    k = rng.poisson(12, n).astype(np.float64)
    data = np.stack([a, b, c, k], 1)
    schema = Schema(
        features=[
            continuous("a", 2.0, 3.0),
            continuous("b", 1.0, 1.8),
            string_cat("c", ["lo", "hi"]),
            integer("k", 12.5, 3.5),
        ]
    )
    model = DensityModel(schema, ArchitectureSpec(hidden_width=32, n_components=3, n_orderings=2))
    quick_train(model, data, steps=600, lr=5e-3)
    s = model.sample(20_000, torch.Generator().manual_seed(0)).numpy()
    # Tolerances allow for a 600-step fit (its residual error is ~0.1 std in the tails).
    for j in (0, 1, 3):
        scale = data[:, j].std()
        assert abs(s[:, j].mean() - data[:, j].mean()) < 0.05 * scale, j
        for q in (0.1, 0.5, 0.9):
            diff = abs(np.quantile(s[:, j], q) - np.quantile(data[:, j], q))
            assert diff < 0.2 * scale + (1.0 if j == 3 else 0.0), (j, q)
    assert abs(s[:, 2].mean() - c.mean()) < 0.03
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1] - np.corrcoef(a, b)[0, 1]) < 0.05
    # The dependence of the category on a is reproduced, not just its marginal.
    hi_given_big_a = s[s[:, 0] > 4, 2].mean()
    assert abs(hi_given_big_a - c[a > 4].mean()) < 0.06


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("shared", [False, True])
def test_weight_count_is_the_built_models_parameter_count(name: str, shared: bool) -> None:
    schema = SCHEMAS[name]()
    for width, layers, k, e in [(8, 1, 1, 1), (16, 2, 3, 4), (5, 3, 2, 2)]:
        arch = ArchitectureSpec(
            hidden_width=width,
            hidden_layers=layers,
            n_components=k,
            n_orderings=e,
            shared_weights=shared,
        )
        built = sum(p.numel() for p in DensityModel(schema, arch).parameters())
        assert weight_count(schema, arch) == built, (name, width, layers, k, e)
        assert min_weights(len(schema.features), arch, e) <= built
