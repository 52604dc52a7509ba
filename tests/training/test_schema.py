"""Schema inference rules (training/schema.py) on columns as the readers produce them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from densitywatch.density.schema import FeatureKind, RawType
from densitywatch.training.data import DataError, drop_missing, read_table
from densitywatch.training.schema import InferenceOptions, SchemaError, infer_feature, infer_schema

RNG = np.random.default_rng(7)


def test_strings_are_categorical_with_vocabulary_by_frequency() -> None:
    values = np.array(["b", "a", "b", "c", "b", "a"], dtype=object)
    spec = infer_schema({"os": values}).features[0]
    assert spec.raw_type == RawType.STRING
    assert spec.kind == FeatureKind.CATEGORICAL
    assert spec.vocabulary == ["b", "a", "c"]


def test_vocabulary_is_capped_with_rare_values_unseen() -> None:
    values = np.array([f"v{i}" for i in range(30)] + ["common"] * 5, dtype=object)
    schema = infer_schema({"s": values}, options=InferenceOptions(max_vocabulary=4))
    spec = schema.features[0]
    assert spec.vocabulary is not None and len(spec.vocabulary) == 4
    assert spec.vocabulary[0] == "common"
    encoded = schema.encode(np.empty((2, 0)), [["common"], ["v29"]])
    assert encoded[:, 0].tolist() == [0.0, 4.0]  # index 4 == len(vocabulary): unseen


def test_few_valued_numeric_column_is_categorical() -> None:
    values = RNG.choice([0.0, 1.5, 3.0], size=200)
    spec = infer_schema({"level": values}).features[0]
    assert spec.raw_type == RawType.NUMBER
    assert spec.kind == FeatureKind.CATEGORICAL
    assert sorted(spec.vocabulary or []) == [0.0, 1.5, 3.0]


def test_many_valued_integers_are_integer_and_floats_continuous() -> None:
    schema = infer_schema(
        {"count": RNG.integers(0, 1000, size=500).astype(float), "temp": RNG.normal(20, 3, 500)}
    )
    count, temp = schema.features
    assert count.kind == FeatureKind.INTEGER and not count.log_transform
    assert temp.kind == FeatureKind.CONTINUOUS and not temp.log_transform
    assert temp.mean == pytest.approx(20, abs=0.5)
    assert temp.std == pytest.approx(3, rel=0.15)


def test_heavy_tailed_positive_column_gets_a_log_transform() -> None:
    latency = RNG.lognormal(mean=2.0, sigma=1.5, size=2000)
    spec = infer_schema({"latency": latency}).features[0]
    assert spec.kind == FeatureKind.CONTINUOUS
    assert spec.log_transform
    logged = np.log1p(latency)
    assert spec.mean == pytest.approx(logged.mean()) and spec.std == pytest.approx(logged.std())


def test_heavy_tail_with_negative_values_is_not_logged() -> None:
    values = RNG.lognormal(2.0, 1.5, size=2000) - 1000.0
    assert not infer_schema({"v": values}).features[0].log_transform


def test_constant_column_is_an_error_naming_it_unless_declared_categorical() -> None:
    with pytest.raises(SchemaError, match="column 'flat' is constant"):
        infer_schema({"ok": RNG.normal(size=20), "flat": np.full(20, 4.0)})
    spec = infer_schema(
        {"flat": np.full(20, 4.0)}, overrides={"flat": FeatureKind.CATEGORICAL}
    ).features[0]
    assert spec.kind == FeatureKind.CATEGORICAL and spec.vocabulary == [4.0]


def test_all_missing_column_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="'gone'"):
        infer_schema({"gone": np.full(5, np.nan)})
    with pytest.raises(SchemaError, match="column 'empty' has no non-missing values"):
        infer_schema({"empty": np.empty(0)})
    # as the training pipeline sees it: read, then the missing-values rule
    path = tmp_path / "t.csv"
    path.write_text("a,gone\n1,\n2,\n3,NA\n")
    with pytest.raises(DataError, match="column 'gone' is entirely missing"):
        drop_missing(read_table(path), str(path))


def test_overrides() -> None:
    counts = RNG.integers(0, 5, size=100).astype(float)
    schema = infer_schema(
        {"c": counts, "x": RNG.normal(size=100)}, overrides={"c": FeatureKind.INTEGER}
    )
    assert schema.features[0].kind == FeatureKind.INTEGER
    assert schema.features[0].std >= 0.5
    with pytest.raises(
        SchemaError,
        match=r"^row 0, column 'os': expected a number, got 'a' \(the column is "
        "declared continuous",
    ):
        infer_schema(
            {"os": np.array(["a", "b"], dtype=object)}, overrides={"os": FeatureKind.CONTINUOUS}
        )
    with pytest.raises(SchemaError, match="unknown columns"):
        infer_schema({"x": RNG.normal(size=10)}, overrides={"nope": FeatureKind.INTEGER})


def test_infinite_values_are_an_error_naming_the_column() -> None:
    with pytest.raises(SchemaError, match="column 'v' has infinite values"):
        infer_schema({"v": np.array([1.0, np.inf, 2.0] * 5)})


def test_schema_keeps_column_order_and_round_trips_records() -> None:
    table = {
        "os": np.array(RNG.choice(["linux", "win"], size=50), dtype=object),
        "cpu": RNG.gamma(2.0, 1.0, size=50),
        "disk": RNG.choice([1.0, 2.0], size=50),
    }
    schema = infer_schema(table)
    assert schema.names == ["os", "cpu", "disk"]
    numbers = np.column_stack([table["cpu"], table["disk"]])
    strings = [[s] for s in table["os"]]
    decoded_numbers, decoded_strings = schema.decode(schema.encode(numbers, strings))
    np.testing.assert_array_equal(decoded_numbers, numbers)
    assert decoded_strings == strings


FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


@settings(max_examples=80, deadline=None)
@given(values=hnp.arrays(np.float64, st.integers(2, 60), elements=FINITE))
def test_numeric_kind_follows_the_rules(values: np.ndarray) -> None:
    options = InferenceOptions()
    distinct = np.unique(values)
    if len(distinct) == 1:
        with pytest.raises(SchemaError, match="constant"):
            infer_feature("v", values, options)
        return
    spec = infer_feature("v", values, options)
    if len(distinct) <= options.max_categorical_values:
        assert spec.kind == FeatureKind.CATEGORICAL
        assert sorted(spec.vocabulary or []) == sorted(distinct.tolist())
    elif np.all(distinct == np.round(distinct)):
        assert spec.kind == FeatureKind.INTEGER
    else:
        assert spec.kind == FeatureKind.CONTINUOUS
    if spec.kind != FeatureKind.CATEGORICAL:
        assert np.isfinite(spec.mean) and spec.std > 0
        if spec.log_transform:
            assert values.min() >= -0.5  # integers are shifted by +0.5 first


def test_a_frequent_value_in_a_continuous_column_becomes_its_atom() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, 1000)
    x[:300] = 0.0  # exact zeros standing for "missing"
    spec = infer_schema({"x": x}).features[0]  # at the default share, 5%
    assert spec.kind == FeatureKind.CONTINUOUS and spec.atom == 0.0
    assert abs(spec.mean - x[300:].mean()) < 1e-9 and abs(spec.std - x[300:].std()) < 1e-9
    off = InferenceOptions(atom_fraction=None)
    assert infer_schema({"x": x}, options=off).features[0].atom is None
    rare = infer_schema({"x": x[250:]}, options=InferenceOptions(atom_fraction=0.1))
    assert rare.features[0].atom is None, "50 zeros in 750 rows is under 10%"
    assert infer_schema({"x": x[270:]}).features[0].atom is None, "30 zeros in 730 is under 5%"


def test_an_isolation_ratio_keeps_point_masses_and_drops_the_modes_of_lattices() -> None:
    rng = np.random.default_rng(1)
    zeros = np.r_[np.zeros(300), rng.normal(5.0, 2.0, 700)]  # a point mass among distinct values
    lattice = np.round(rng.normal(0.0, 2.0, 1000) * 2) / 2 + 0.05  # a mode, neighbours close
    options = InferenceOptions(atom_isolation=5.0)
    assert infer_schema({"x": zeros}, options=options).features[0].atom == 0.0
    assert infer_schema({"x": lattice}).features[0].atom is not None  # 5% alone: an atom
    assert infer_schema({"x": lattice}, options=options).features[0].atom is None
