"""MADE masks: the product of the layer masks connects an output only to inputs of strictly
smaller degree, and (when every hidden layer is wide enough) to all of them."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densitywatch.density.masks import (
    feature_degrees,
    hidden_degrees,
    identity_ordering,
    made_masks,
    random_ordering,
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Per-unit input/output degrees of a random ordering, features spanning several units."""
    n_features = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    ordering = random_ordering(n_features, torch.Generator().manual_seed(seed))
    degrees = feature_degrees(ordering)
    in_units = torch.tensor(
        draw(st.lists(st.integers(1, 3), min_size=n_features, max_size=n_features))
    )
    out_units = torch.tensor(
        draw(st.lists(st.integers(1, 4), min_size=n_features, max_size=n_features))
    )
    widths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    return degrees.repeat_interleave(in_units), widths, degrees.repeat_interleave(out_units)


def connectivity(masks: list[torch.Tensor]) -> torch.Tensor:
    """(out, in) count of paths through the masked network."""
    path = masks[0]
    for mask in masks[1:]:
        path = mask @ path
    return path


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_paths_only_from_strictly_earlier_degrees(
    layout: tuple[torch.Tensor, list[int], torch.Tensor],
) -> None:
    in_deg, widths, out_deg = layout
    masks = made_masks(in_deg, widths, out_deg)
    assert [m.shape for m in masks] == [
        (w, i) for w, i in zip([*widths, len(out_deg)], [len(in_deg), *widths], strict=True)
    ]
    for mask in masks:
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    paths = connectivity(masks)
    allowed = out_deg[:, None] > in_deg[None, :]
    assert (paths[~allowed] == 0).all()


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_wide_layers_connect_every_earlier_degree(
    layout: tuple[torch.Tensor, list[int], torch.Tensor],
) -> None:
    in_deg, widths, out_deg = layout
    n_features = int(in_deg.max())
    widths = [w + n_features for w in widths]  # every degree 1..D-1 present in each layer
    paths = connectivity(made_masks(in_deg, widths, out_deg))
    allowed = out_deg[:, None] > in_deg[None, :]
    assert ((paths > 0) == allowed).all()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 64))
def test_hidden_degrees_cover_one_to_d_minus_one(n_features: int, width: int) -> None:
    degrees = hidden_degrees(width, n_features)
    top = max(n_features - 1, 1)
    assert degrees.shape == (width,)
    assert int(degrees.min()) >= 1 and int(degrees.max()) <= top
    if width >= top:
        assert set(degrees.tolist()) == set(range(1, top + 1))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_feature_degrees_invert_the_ordering(n_features: int, seed: int) -> None:
    ordering = random_ordering(n_features, torch.Generator().manual_seed(seed))
    assert sorted(ordering.tolist()) == list(range(n_features))
    degrees = feature_degrees(ordering)
    for position, feature in enumerate(ordering.tolist()):
        assert int(degrees[feature]) == position + 1


def test_identity_ordering_and_seeded_random_ordering() -> None:
    assert identity_ordering(4).tolist() == [0, 1, 2, 3]
    a = random_ordering(10, torch.Generator().manual_seed(3))
    b = random_ordering(10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_first_output_sees_nothing_and_single_feature_is_unconditional() -> None:
    masks = made_masks(torch.tensor([1]), [8, 8], torch.tensor([1, 1, 1]))
    assert connectivity(masks).sum() == 0
