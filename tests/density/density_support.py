"""Helpers for the density-layer tests: schemas of every feature kind, a way to give an
untrained model a non-trivial random state, and a quick trainer for small models.

(A uniquely named module rather than conftest.py, so `import` cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import numpy as np
import torch

from densitywatch.density.model import ArchitectureSpec, DensityModel
from densitywatch.density.schema import FeatureKind, FeatureSpec, RawType, Schema

torch.set_num_threads(1)


def continuous(
    name: str,
    mean: float = 0.0,
    std: float = 1.0,
    log: bool = False,
    atom: float | None = None,
) -> FeatureSpec:
    return FeatureSpec(
        name=name, kind=FeatureKind.CONTINUOUS, mean=mean, std=std, log_transform=log, atom=atom
    )


def integer(name: str, mean: float = 0.0, std: float = 1.0, log: bool = False) -> FeatureSpec:
    return FeatureSpec(name=name, kind=FeatureKind.INTEGER, mean=mean, std=std, log_transform=log)


def string_cat(name: str, vocabulary: list[str]) -> FeatureSpec:
    return FeatureSpec(
        name=name, raw_type=RawType.STRING, kind=FeatureKind.CATEGORICAL, vocabulary=vocabulary
    )


def number_cat(name: str, vocabulary: list[float]) -> FeatureSpec:
    return FeatureSpec(
        name=name, raw_type=RawType.NUMBER, kind=FeatureKind.CATEGORICAL, vocabulary=vocabulary
    )


def mixed_schema() -> Schema:
    """Every kind at once, categoricals of different vocabulary sizes (so padding is used),
    and continuous features with atoms."""
    return Schema(
        features=[
            continuous("c0", mean=2.0, std=3.0),
            string_cat("s1", ["a", "b", "c", "d"]),
            integer("i2", mean=10.0, std=4.0),
            number_cat("n3", [0.5, 7.0]),
            continuous("c4", mean=1.0, std=0.5, log=True),
            continuous("c5", mean=1.0, std=2.0, atom=0.0),
        ]
    )


def atom_schema() -> Schema:
    """Continuous features with atoms (one log-transformed) beside a plain one."""
    return Schema(
        features=[
            continuous("a", mean=1.0, std=2.0, atom=0.0),
            continuous("b", mean=3.0, std=1.0),
            continuous("c", mean=0.5, std=0.7, log=True, atom=-1.0),
        ]
    )


def perturb(model: DensityModel, seed: int, bias_scale: float = 0.5) -> DensityModel:
    """Give every layer random biases so even a 1-feature model has non-trivial outputs
    (a fresh model's zero biases make the first conditional a plain standard normal)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.net.masked_layers():
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * bias_scale)
    return model.eval()


def make_model(
    schema: Schema,
    *,
    width: int = 16,
    layers: int = 2,
    components: int = 3,
    orderings: int = 1,
    seed: int = 0,
    shared: bool = False,
) -> DensityModel:
    arch = ArchitectureSpec(
        hidden_width=width,
        hidden_layers=layers,
        n_components=components,
        n_orderings=orderings,
        shared_weights=shared,
    )
    return perturb(DensityModel(schema, arch, seed=seed), seed=seed + 1000)


def quick_train(
    model: DensityModel, x: np.ndarray, steps: int = 200, lr: float = 1e-2, seed: int = 0
) -> DensityModel:
    """A few hundred Adam steps on the members' likelihood (as training.fit does)."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.asarray(x, dtype=np.float64))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(len(data), (256,), generator=generator)]
        loss = -model.member_terms(batch).sum(dim=-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def random_encoded(schema: Schema, n: int, seed: int) -> np.ndarray:
    """Plausible encoded records for a schema (categoricals as in-vocabulary indices)."""
    rng = np.random.default_rng(seed)
    cols = []
    for f in schema.features:
        if f.kind == FeatureKind.CATEGORICAL:
            cols.append(rng.integers(0, len(f.vocabulary or []), n).astype(np.float64))
        elif f.kind == FeatureKind.INTEGER:
            cols.append(np.round(rng.normal(f.mean, f.std, n)))
        elif f.log_transform:
            cols.append(np.expm1(np.abs(rng.normal(f.mean, f.std, n))))
        else:
            cols.append(rng.normal(f.mean, f.std, n))
        if f.atom is not None:
            cols[-1][::2] = f.atom  # every other record on the atom, the rest off it
    return np.stack(cols, axis=1)
