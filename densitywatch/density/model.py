"""The autoregressive density model: preprocessing inside, log_prob (total and per feature),
sample, and an ensemble of orderings combined as a mixture.

Input to `log_prob` is the encoded raw record (see `Schema.encode`): numeric features as
their raw values, categorical features as vocabulary indices. The returned log p is the
density of the *raw* record: the preprocessing's log-Jacobian is included, and an integer
feature contributes the log-probability of its lattice point (uniform dequantisation), so a
threshold means the same whatever the preprocessing. A continuous feature with an atom (a
value it takes with positive probability, such as exact zeros) contributes log P(atom) when
it sits on the atom and log P(not atom) + log density otherwise: a density alone would put
an unbounded spike there.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. https://arxiv.org/abs/1502.03509

    Theis, van den Oord, Bethge. A Note on the Evaluation of Generative Models. ICLR 2016.
    https://arxiv.org/abs/1511.01844 (uniform dequantisation of integer data)

    Lambert. Zero-Inflated Poisson Regression. Technometrics 34(1), 1992 (a point mass
    mixed with a distribution, the atoms' conditional)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn import functional as F

from densitywatch.density import conditionals as cond
from densitywatch.density.masks import (
    feature_degrees,
    identity_ordering,
    made_connection_counts,
    random_ordering,
)
from densitywatch.density.nn import MaskedMLP
from densitywatch.density.schema import FeatureKind, Schema

Z_LIMIT = 1e4  # |standardised value| cap: log p there is below -5e7 nats already


class ArchitectureSpec(BaseModel):
    """Network shape; the orderings themselves live in the weights (buffer `orderings`).

    Example:
        >>> ArchitectureSpec()  # doctest: +NORMALIZE_WHITESPACE
        ArchitectureSpec(hidden_width=128, hidden_layers=2, n_components=8, n_orderings=1,
                         shared_weights=False, spread_degrees=False)
    """

    # The upper bounds are far above any model a stream needs; they keep an edited manifest
    # from making a loader allocate gigabytes before the weights can refuse it.
    hidden_width: int = Field(default=128, ge=1, le=4096, description="Units per hidden layer.")
    hidden_layers: int = Field(default=2, ge=1, le=16, description="Number of hidden layers.")
    n_components: int = Field(
        default=8, ge=1, le=256, description="Gaussians per continuous conditional."
    )
    n_orderings: int = Field(
        default=1, ge=1, le=256, description="Ensemble size (mixture of orderings)."
    )
    shared_weights: bool = Field(
        default=False,
        description="One network for all orderings (order-agnostic MADE) instead of one each.",
    )
    spread_degrees: bool = Field(
        default=False,
        description="Hidden units' degrees spread over all positions of the ordering, not only "
        "the first hidden_width (matters when hidden_width < number of features - 1).",
    )


def min_weights(n_features: int, architecture: ArchitectureSpec, n_members: int) -> int:
    """A lower bound on the weights a DensityModel of this shape holds, cheap to compute.

    Every layer has at least n_features inputs or outputs (one unit per feature at least):
    the first and last layers hold at least width · n_features weights each, every hidden
    to hidden layer width², once per member unless weights are shared. Loading compares it
    with the stored weights before building anything.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> arch = ArchitectureSpec(hidden_width=8, n_orderings=2)
        >>> model = DensityModel(schema, arch)
        >>> held = sum(p.numel() for p in model.parameters())
        >>> min_weights(2, arch, 2) <= held
        True
    """
    copies = 1 if architecture.shared_weights else n_members
    width, depth = architecture.hidden_width, architecture.hidden_layers
    return copies * width * (2 * n_features + (depth - 1) * width)


def unit_counts(schema: Schema, n_components: int) -> tuple[int, int]:
    """(input units, output units) of the MADE a DensityModel builds for this schema.

    Inputs: a standardised value per numeric feature, an on-atom flag per atom, a one-hot
    block of the largest vocabulary's size per categorical feature. Outputs: 3 parameters
    per mixture component per numeric feature, an atom logit per atom, a logit block per
    categorical feature.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> unit_counts(schema, n_components=4)
        (2, 24)
    """
    layout = _Layout.of(schema)
    cat_units = len(layout.cat) * layout.vmax
    dn, atoms = len(layout.num), len(layout.atom)
    return dn + atoms + cat_units, dn * 3 * n_components + atoms + cat_units


def weight_count(schema: Schema, architecture: ArchitectureSpec) -> int:
    """The exact number of weights (parameters) of a DensityModel, without building it.

    The output layer, width × units per member, dominates for many features: it is what a
    parameter budget has to bound.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name=c) for c in "abc"])
        >>> arch = ArchitectureSpec(hidden_width=8, n_components=2, n_orderings=3)
        >>> weight_count(schema, arch) == sum(
        ...     p.numel() for p in DensityModel(schema, arch).parameters())
        True
    """
    n_in, n_out = unit_counts(schema, architecture.n_components)
    widths = [n_in, *[architecture.hidden_width] * architecture.hidden_layers, n_out]
    per_copy = sum(a * b + b for a, b in itertools.pairwise(widths))
    return per_copy * (1 if architecture.shared_weights else architecture.n_orderings)


@dataclass(frozen=True)
class _Layout:
    """Where each feature sits among the MADE's units: the numeric and categorical features
    (feature indices), the atoms (positions among the numeric ones), the categorical sizes
    and the one-hot block width (the largest vocabulary)."""

    num: list[int]
    cat: list[int]
    atom: list[int]
    sizes: list[int]
    vmax: int

    @staticmethod
    def of(schema: Schema) -> _Layout:
        feats = schema.features
        num = [j for j, f in enumerate(feats) if f.kind != FeatureKind.CATEGORICAL]
        cat = [j for j, f in enumerate(feats) if f.kind == FeatureKind.CATEGORICAL]
        atom = [i for i, j in enumerate(num) if feats[j].atom is not None]
        sizes = [len(feats[j].vocabulary or []) for j in cat]
        return _Layout(num, cat, atom, sizes, max(sizes, default=1))


def unit_degrees(
    schema: Schema, orderings: torch.Tensor, n_components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member degrees (E, units) of the MADE's input units [numeric z | atom flags |
    one-hots] and output units [mixture parameters | atom logits | categorical logits].

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> ins, outs = unit_degrees(schema, torch.tensor([[1, 0]]), n_components=1)
        >>> ins, outs  # b comes first: degree 1
        (tensor([[2, 1]]), tensor([[2, 2, 2, 1, 1, 1]]))
    """
    layout = _Layout.of(schema)
    num, cat, atom = (
        torch.tensor(ix, dtype=torch.long) for ix in (layout.num, layout.cat, layout.atom)
    )
    ins, outs = [], []
    for ordering in orderings:
        deg = feature_degrees(ordering)
        num_deg, cat_deg = deg[num], deg[cat]
        atom_deg, cat_units = num_deg[atom], cat_deg.repeat_interleave(layout.vmax)
        ins.append(torch.cat([num_deg, atom_deg, cat_units]))
        outs.append(torch.cat([num_deg.repeat_interleave(3 * n_components), atom_deg, cat_units]))
    return torch.stack(ins), torch.stack(outs)


def connection_counts(
    schema: Schema, architecture: ArchitectureSpec, orderings: torch.Tensor
) -> list[int]:
    """The unmasked weights of each layer of a DensityModel, summed over its members,
    without building it: what an artifact stores of a layer whose weights are packed.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name=c) for c in "abc"])
        >>> arch = ArchitectureSpec(hidden_width=8, n_components=2, n_orderings=2)
        >>> model = DensityModel(schema, arch)
        >>> connection_counts(schema, arch, model.orderings) == [
        ...     int(layer.mask.sum()) for layer in model.net.masked_layers()]
        True
    """
    ins, outs = unit_degrees(schema, orderings, architecture.n_components)
    widths = [architecture.hidden_width] * architecture.hidden_layers
    spread = architecture.spread_degrees
    per_member = [
        made_connection_counts(i, widths, o, spread) for i, o in zip(ins, outs, strict=True)
    ]
    return [sum(layer) for layer in zip(*per_member, strict=True)]


@dataclass(frozen=True)
class LogProb:
    """log p(x) per point and its per-feature terms log p(x_i | x_<i) (feature order).

    For an ensemble the terms are the responsibility-weighted average (weights w_e, the
    members' posterior) of the members' terms: Σ terms = total + log E − H(w) ≥ total.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> _ = torch.manual_seed(0)
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> arch = ArchitectureSpec(hidden_width=8, n_components=2)
        >>> model = DensityModel(schema, arch, orderings=torch.tensor([[0, 1], [1, 0]])).eval()
        >>> x = torch.tensor([[0.1, -0.3], [1.0, 2.0]], dtype=torch.float64)
        >>> lp = model.log_prob(x)
        >>> lp.total.shape, lp.terms.shape
        (torch.Size([2]), torch.Size([2, 2]))
        >>> bool((lp.terms.sum(dim=1) >= lp.total).all())  # two orderings: Σ terms ≥ total
        True
    """

    total: torch.Tensor  # (n,)
    terms: torch.Tensor  # (n, D)


class DensityModel(nn.Module):
    """p(x) = (1/E) Σ_e Π_i p_e(x_i | x_<i in ordering e), one MADE pass per evaluation.

    Averaging the members' probabilities is MADE's ensemble over orderings. `orderings`
    (E, D) defaults to `default_orderings(D, architecture.n_orderings, seed)`; the weights
    are initialised from the global torch generator.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> _ = torch.manual_seed(0)
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> arch = ArchitectureSpec(hidden_width=8, n_components=2)
        >>> model = DensityModel(schema, arch, orderings=torch.tensor([[0, 1], [1, 0]])).eval()
        >>> x = torch.tensor([[0.1, -0.3], [1.0, 2.0]], dtype=torch.float64)
        >>> model.n_members, model.n_features
        (2, 2)
        >>> torch.allclose(model(x), model.log_prob(x).total)
        True

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
        Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
    """

    orderings: torch.Tensor
    num_index: torch.Tensor
    cat_index: torch.Tensor
    log_transform: torch.Tensor
    is_integer: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cat_sizes: torch.Tensor
    cat_valid: torch.Tensor
    has_atom: torch.Tensor
    atom_value: torch.Tensor
    atom_index: torch.Tensor

    def __init__(
        self,
        schema: Schema,
        architecture: ArchitectureSpec,
        orderings: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.architecture = architecture
        n_features = len(schema.features)
        if orderings is None:
            orderings = default_orderings(n_features, architecture.n_orderings, seed)
        check_orderings(orderings, n_features)
        self.register_buffer("orderings", orderings.clone().long())
        self.n_members = int(orderings.shape[0])
        self._register_preprocessing(schema)
        in_deg, out_deg = self._unit_degrees()
        hidden = [architecture.hidden_width] * architecture.hidden_layers
        self.net = MaskedMLP(
            in_deg,
            out_deg,
            hidden,
            shared=architecture.shared_weights,
            spread=architecture.spread_degrees,
        )
        self._init_output_bias()

    def _init_output_bias(self) -> None:
        """Spread the mixture components' initial means over [-1, 1].

        The first feature of an ordering sees no input, so its parameters are the output
        biases alone: identical initial components would get identical gradients forever.
        """
        k, dn = self.architecture.n_components, len(self.num_index)
        if not dn:
            return
        spread = torch.linspace(-1.0, 1.0, k) if k > 1 else torch.zeros(1)
        block = torch.cat([torch.zeros(k), spread, torch.zeros(k)])
        with torch.no_grad():
            bias = self.net.masked_layers()[-1].bias  # (E, 1, units)
            bias[..., : dn * 3 * k] = block.repeat(dn)

    # -- layout ---------------------------------------------------------------------------
    def _register_preprocessing(self, schema: Schema) -> None:
        feats = schema.features
        layout = _Layout.of(schema)
        num, cat, sizes, vmax = layout.num, layout.cat, layout.sizes, layout.vmax
        self.vmax = vmax
        self.register_buffer("num_index", torch.tensor(num, dtype=torch.long))
        self.register_buffer("cat_index", torch.tensor(cat, dtype=torch.long))
        self.register_buffer(
            "log_transform", torch.tensor([feats[j].log_transform for j in num], dtype=torch.bool)
        )
        self.register_buffer(
            "is_integer",
            torch.tensor([feats[j].kind == FeatureKind.INTEGER for j in num], dtype=torch.bool),
        )
        for name in ("mean", "std"):
            values = [getattr(feats[j], name) for j in num]
            self.register_buffer(name, torch.tensor(values, dtype=torch.float64))
        atoms = [feats[j].atom for j in num]
        self.register_buffer("has_atom", torch.tensor([a is not None for a in atoms]))
        self.register_buffer(
            "atom_value", torch.tensor([a or 0.0 for a in atoms], dtype=torch.float64)
        )
        self.register_buffer(
            "atom_index",  # positions among the numeric features
            torch.tensor(layout.atom, dtype=torch.long),
        )
        self.register_buffer("cat_sizes", torch.tensor(sizes, dtype=torch.long))
        valid = torch.arange(vmax)[None, :] < torch.tensor(sizes, dtype=torch.long)[:, None]
        self.register_buffer("cat_valid", valid.reshape(len(cat), vmax))
        # Static facts of the schema that let log_prob skip whole steps (fewer tensor
        # operations: per-operation overhead dominates small batches).
        self._n_num, self._n_cat = len(num), len(cat)
        self._n_atom = sum(a is not None for a in atoms)
        self._plain = not cat and not self._n_atom  # every feature a plain numeric one
        self._any_integer = any(feats[j].kind == FeatureKind.INTEGER for j in num)
        self._any_log = any(feats[j].log_transform for j in num)

    def _unit_degrees(self) -> tuple[torch.Tensor, torch.Tensor]:
        return unit_degrees(self.schema, self.orderings, self.architecture.n_components)

    @property
    def n_features(self) -> int:
        """D, the number of features of the schema."""
        return len(self.schema.features)

    @torch.no_grad()
    def round_to_half_(self) -> DensityModel:
        """Round every parameter to its nearest float16 value, in place (kept float32).

        An artifact then stores the parameters in half the bytes, losslessly, so the model
        that is calibrated and served is the one the file holds. A parameter float16 cannot
        represent (beyond ±65 504) is left as it is, and stored in float32.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
            >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).round_to_half_()
            >>> all(torch.equal(p.half().float(), p) for p in model.parameters())
            True
        """
        for p in self.parameters():
            rounded = p.half()
            if torch.isfinite(rounded).all():
                p.copy_(rounded)
        return self

    def fold(self) -> DensityModel:
        """Prepare for inference: fold masks into weights, eval mode. Do not train after.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
            >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).eval()
            >>> x = torch.tensor([[0.1, -0.3], [1.0, 2.0]], dtype=torch.float64)
            >>> before = model(x).detach()
            >>> torch.allclose(model.fold()(x), before)
            True
        """
        self.eval()
        self.net.fold()
        return self

    # -- preprocessing --------------------------------------------------------------------
    def _preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw numeric values (n, Dn) float64 -> standardised z (n, Dn), log|dz/dx|.

        The log-Jacobian is (n, Dn), or (Dn,) when no feature is log-transformed."""
        if self.training:
            # Drawn whether or not any feature is an integer (times zero for the others), so
            # how many numbers a training step takes from the global generator depends on the
            # batch's shape alone: `fit` seeds that generator once and initialises each
            # capacity candidate from it after the previous candidate's training, so a seeded
            # fit is reproducible and a candidate's initial weights do not change with which
            # features are integers.
            x = x + torch.rand_like(x) * self.is_integer
        elif self._any_integer:
            x = x + torch.full_like(x, 0.5) * self.is_integer
        log_jac = -torch.log(self.std)
        if self._any_log:
            ax = x.abs()
            x = torch.where(self.log_transform, torch.sign(x) * torch.log1p(ax), x)
            log_jac = torch.where(self.log_transform, -torch.log1p(ax), 0.0) + log_jac
        # Clamping keeps absurd (but finite) inputs finite in float32: they still score as
        # astronomically improbable, never as NaN.
        z = ((x - self.mean) / self.std).clamp(-Z_LIMIT, Z_LIMIT)
        return z, log_jac

    def _postprocess(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of `_preprocess` for sampling: z -> raw values (integers floored)."""
        y = z.double() * self.std + self.mean
        x = torch.where(self.log_transform, torch.sign(y) * torch.expm1(y.abs()), y)
        return torch.where(self.is_integer, torch.floor(x), x)

    def _on_atom(self, x: torch.Tensor) -> torch.Tensor:
        """(n, A) whether each atom feature's raw value (n, Dn) sits exactly on its atom."""
        return x[:, self.atom_index] == self.atom_value[self.atom_index]

    def _network_input(
        self, z: torch.Tensor, on_atom: torch.Tensor, cat: torch.Tensor
    ) -> torch.Tensor:
        onehot = F.one_hot(cat.clamp(max=self.vmax), self.vmax + 1)[..., : self.vmax]
        flat = onehot.reshape(cat.shape[0], -1).to(torch.float32)
        return torch.cat([z.to(torch.float32), on_atom.to(torch.float32), flat], dim=1)

    # -- density --------------------------------------------------------------------------
    def member_terms(self, x: torch.Tensor) -> torch.Tensor:
        """Per-member, per-feature log terms (E, n, D) for encoded records x (n, D).

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
            >>> arch = ArchitectureSpec(hidden_width=8, n_components=2)
            >>> model = DensityModel(schema, arch, orderings=torch.tensor([[0, 1], [1, 0]])).eval()
            >>> x = torch.tensor([[0.1, -0.3], [1.0, 2.0]], dtype=torch.float64)
            >>> y = x.clone()
            >>> y[:, 1] += 5.0  # change feature b only
            >>> a, b = model.member_terms(x), model.member_terms(y)
            >>> a.shape
            torch.Size([2, 2, 2])
            >>> torch.equal(a[0, :, 0], b[0, :, 0]), torch.equal(a[1, :, 0], b[1, :, 0])
            (True, False)

            Member 0 (ordering a, b) models a before seeing b; member 1 (b, a) conditions a
            on b.
        """
        x = x.to(torch.float64)
        n, k = x.shape[0], self.architecture.n_components
        if self._plain:  # num_index is every feature, in order
            z, log_jac = self._preprocess(x)
            zf = z.to(torch.float32)
            out = self.net(zf.unsqueeze(0).expand(self.n_members, -1, -1))
            params = out.reshape(-1, n, x.shape[1], 3 * k)
            return cond.mixture_log_prob(params, zf) + log_jac.to(torch.float32)
        out, z, log_jac, on_atom, cat = self._outputs(x)
        dn, dc, da = self._n_num, self._n_cat, self._n_atom
        terms = out.new_zeros(out.shape[0], n, self.n_features)
        if dn:
            params = out[..., : dn * 3 * k].reshape(-1, n, dn, 3 * k)
            num_terms = cond.mixture_log_prob(params, z.to(out.dtype)) + log_jac.to(out.dtype)
            if da:
                logit = out[..., dn * 3 * k : dn * 3 * k + da]
                dense = num_terms[..., self.atom_index]
                atom_terms = torch.where(on_atom, F.logsigmoid(logit), F.logsigmoid(-logit) + dense)
                num_terms = num_terms.index_copy(-1, self.atom_index, atom_terms)
            terms[..., self.num_index] = num_terms
        if dc:
            logits = out[..., dn * 3 * k + da :].reshape(-1, n, dc, self.vmax)
            terms[..., self.cat_index] = cond.categorical_log_prob(
                logits, self.cat_valid, cat, self.cat_sizes
            )
        return terms

    def _outputs(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's outputs (E, n, units) for records x (n, D) float64, with what the
        terms read beside them: z and log|dz/dx| of the numeric features, the on-atom flags
        and the categorical indices."""
        xn = x[:, self.num_index]
        z, log_jac = self._preprocess(xn)
        on_atom = self._on_atom(xn)
        if self._n_atom:  # the density's input on the atom is a constant: the flag carries it
            z = torch.where((xn == self.atom_value) & self.has_atom, 0.0, z)
        cat = x[:, self.cat_index].long()
        h = self._network_input(z, on_atom, cat)
        return self.net(h.unsqueeze(0).expand(self.n_members, -1, -1)), z, log_jac, on_atom, cat

    def member_interval_log_mass(
        self,
        x: torch.Tensor,
        features: Sequence[int],
        low: Sequence[float],
        high: Sequence[float],
    ) -> torch.Tensor:
        """Per member, log P(low_j < x_j ≤ high_j | x_<j) (E, n, J) of continuous features
        j without an atom, exactly (the mixture's normal CDFs), for records x (n, D); one
        forward pass for all J features.

        What a continuous conditional says of a small window around a value the data hits
        exactly: a density alone cannot be compared with a probability there, a window's
        mass can, so models with and without atoms can be compared on one reference measure.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
            >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).eval()
            >>> x = torch.tensor([[0.1, -0.3]], dtype=torch.float64)
            >>> whole = model.member_interval_log_mass(x, [0, 1], [-1e6, -1e6], [1e6, 1e6])
            >>> whole.shape, bool(whole.abs().max() < 1e-6)  # the whole line: probability one
            (torch.Size([1, 1, 2]), True)
            >>> narrow = model.member_interval_log_mass(x, [1], [-0.3 - 1e-4], [-0.3 + 1e-4])
            >>> density = model.member_terms(x)[..., 1:]
            >>> torch.allclose(narrow.float(), density + math.log(2e-4), atol=1e-3)
            True
        """
        for j in features:
            spec = self.schema.features[j]
            if spec.kind != FeatureKind.CONTINUOUS or spec.atom is not None:
                raise ValueError(f"feature {spec.name!r} is not a continuous feature without atom")
        positions = [int((self.num_index == j).nonzero()[0, 0]) for j in features]
        out = self._outputs(x.to(torch.float64))[0]
        k = self.architecture.n_components
        params = out[..., : self._n_num * 3 * k].reshape(*out.shape[:2], self._n_num, 3 * k)
        log_w, means, log_scales = cond.split_mixture(params[..., positions, :].to(torch.float64))
        ends = torch.zeros(2, self._n_num, dtype=torch.float64)
        ends[:, positions] = torch.tensor([list(low), list(high)], dtype=torch.float64)
        z_ends = self._preprocess(ends)[0][:, positions].unsqueeze(-1)  # monotone: intervals
        scales = log_scales.exp()
        a, b = (z_ends[0] - means) / scales, (z_ends[1] - means) / scales
        return cond.logsumexp(log_w + _log_normal_mass(a, b), dim=-1)

    def log_prob(self, x: torch.Tensor) -> LogProb:
        """log p(x) of encoded raw records (n, D), with the per-feature terms.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
            >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).eval()
            >>> lp = model.log_prob(torch.tensor([[0.1, -0.3], [1.0, 2.0]]))
            >>> torch.allclose(lp.terms.sum(dim=1), lp.total)  # one ordering: the chain rule
            True
        """
        terms = self.member_terms(x)
        if terms.shape[0] == 1:  # one ordering: the mixture is the member itself
            return LogProb(total=terms[0].sum(dim=-1), terms=terms[0])
        member_totals = terms.sum(dim=-1)  # (E, n)
        weights = torch.softmax(member_totals, dim=0).unsqueeze(-1)
        return LogProb(total=self._mixture(member_totals), terms=(weights * terms).sum(dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) alone: `log_prob` without the per-feature terms (fewer operations)."""
        member_totals = self.member_terms(x).sum(dim=-1)
        return member_totals[0] if self.n_members == 1 else self._mixture(member_totals)

    def _mixture(self, member_totals: torch.Tensor) -> torch.Tensor:
        """(E, n) members' log p -> log of their average p."""
        return cond.logsumexp(member_totals, dim=0) - math.log(self.n_members)

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n encoded records, sequentially along each sample's member ordering.

        Each sample first draws its member uniformly, then its features in that member's
        ordering; integer features come out floored onto their lattice.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> _ = torch.manual_seed(0)
            >>> schema = Schema(features=[FeatureSpec(name="n", kind=FeatureKind.INTEGER)])
            >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=4)).eval()
            >>> draws = model.sample(5, torch.Generator().manual_seed(0))
            >>> draws.shape, draws.dtype, torch.equal(draws, draws.floor())
            (torch.Size([5, 1]), torch.float64, True)
        """
        members = torch.randint(self.n_members, (n,), generator=generator)
        out = torch.zeros(n, self.n_features, dtype=torch.float64)
        for e in range(self.n_members):
            rows = (members == e).nonzero().squeeze(-1)
            if len(rows):
                out[rows] = self._sample_member(e, len(rows), generator)
        return out

    def _sample_member(self, e: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
        k, dn, da = self.architecture.n_components, self._n_num, self._n_atom
        z = torch.zeros(n, dn, dtype=torch.float64)
        on_atom = torch.zeros(n, da, dtype=torch.bool)
        cat = torch.zeros(n, len(self.cat_index), dtype=torch.long)
        num_pos = {int(j): i for i, j in enumerate(self.num_index)}
        cat_pos = {int(j): i for i, j in enumerate(self.cat_index)}
        atom_pos = {int(i): a for a, i in enumerate(self.atom_index)}
        for feature in self.orderings[e].tolist():
            h = self._network_input(z, on_atom, cat)
            out = self.net.forward_member(h, e)  # one member's pass, not E of them
            if feature in num_pos:
                i = num_pos[feature]
                params = out[:, i * 3 * k : (i + 1) * 3 * k]
                z[:, i] = cond.mixture_sample(params, generator).double()
                if i in atom_pos:
                    a = atom_pos[i]
                    p_atom = torch.sigmoid(out[:, dn * 3 * k + a].double())
                    on_atom[:, a] = torch.rand(n, generator=generator, dtype=torch.float64) < p_atom
                    z[:, i] = z[:, i] * ~on_atom[:, a]
            else:
                i = cat_pos[feature]
                start = dn * 3 * k + da + i * self.vmax
                logits = out[:, start : start + self.vmax]
                cat[:, i] = cond.categorical_sample(logits, self.cat_valid[i], generator)
        x = torch.zeros(n, self.n_features, dtype=torch.float64)
        if dn:
            raw = self._postprocess(z)
            if da:
                atoms = self.atom_value[self.atom_index].expand(n, -1)
                raw[:, self.atom_index] = torch.where(on_atom, atoms, raw[:, self.atom_index])
            x[:, self.num_index] = raw
        if len(self.cat_index):
            x[:, self.cat_index] = cat.double()
        return x


def check_orderings(orderings: torch.Tensor, n_features: int) -> None:
    """Each row must be a permutation of the features (else the masks would be wrong).

    Example:
        >>> check_orderings(torch.tensor([[0, 1, 2], [2, 0, 1]]), 3)  # valid: returns None
        >>> check_orderings(torch.tensor([[0, 0, 2]]), 3)
        Traceback (most recent call last):
            ...
        ValueError: ordering [0, 0, 2] is not a permutation of 3 features
    """
    if orderings.ndim != 2 or orderings.shape[1] != n_features or orderings.shape[0] < 1:
        raise ValueError(
            f"orderings must have shape (E, {n_features}), got {tuple(orderings.shape)}"
        )
    expected = torch.arange(n_features)
    for row in orderings:
        if not torch.equal(torch.sort(row.long()).values, expected):
            raise ValueError(
                f"ordering {row.tolist()} is not a permutation of {n_features} features"
            )


def default_orderings(n_features: int, n_orderings: int, seed: int) -> torch.Tensor:
    """The identity ordering first, then seeded random permutations.

    Example:
        >>> orderings = default_orderings(4, 3, seed=0)
        >>> orderings.shape, orderings[0].tolist()
        (torch.Size([3, 4]), [0, 1, 2, 3])
        >>> torch.equal(orderings, default_orderings(4, 3, seed=0))
        True

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
        Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
    """
    generator = torch.Generator().manual_seed(seed)
    rest = [random_ordering(n_features, generator) for _ in range(n_orderings - 1)]
    return torch.stack([identity_ordering(n_features), *rest])


def log_prob_numpy(model: DensityModel, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Total log p of encoded records in chunks, under inference mode.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> _ = torch.manual_seed(0)
        >>> schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
        >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).eval()
        >>> x = np.array([[0.1, -0.3], [1.0, 2.0], [0.0, 0.0]])
        >>> log_p = log_prob_numpy(model, x, batch_size=2)
        >>> log_p.shape, log_p.dtype
        ((3,), dtype('float64'))
        >>> np.allclose(log_p, model(torch.from_numpy(x)).detach().numpy())
        True
    """
    totals = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            totals.append(model(chunk).double().numpy())
    return np.concatenate(totals) if totals else np.empty(0)


def _log_normal_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) − Φ(a)) for a ≤ b, accurate in both tails (the upper one by symmetry)."""
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))
