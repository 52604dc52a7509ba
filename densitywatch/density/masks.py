"""Orderings, degrees and MADE mask matrices: pure functions, no state.

A feature's *degree* is its 1-based position in the autoregressive ordering. A unit of
degree k may only see inputs of degree <= k (hidden units) or < k (outputs), which makes
output block i a function of the features that come before feature i in the ordering.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

import torch


def identity_ordering(n_features: int) -> torch.Tensor:
    """The ordering that follows the declared feature order.

    Example:
        >>> identity_ordering(4)
        tensor([0, 1, 2, 3])
    """
    return torch.arange(n_features, dtype=torch.long)


def random_ordering(n_features: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the features, from an explicit (saved) generator.

    Example:
        >>> ordering = random_ordering(5, torch.Generator().manual_seed(0))
        >>> sorted(ordering.tolist())
        [0, 1, 2, 3, 4]
        >>> torch.equal(ordering, random_ordering(5, torch.Generator().manual_seed(0)))
        True
    """
    return torch.randperm(n_features, generator=generator)


def feature_degrees(ordering: torch.Tensor) -> torch.Tensor:
    """Degree (1-based position in the ordering) of every feature, in feature order.

    Example:
        >>> feature_degrees(torch.tensor([2, 0, 1]))  # feature 2 first, feature 1 last
        tensor([2, 3, 1])
    """
    degrees = torch.empty_like(ordering)
    degrees[ordering] = torch.arange(1, len(ordering) + 1, dtype=ordering.dtype)
    return degrees


def hidden_degrees(width: int, n_features: int, spread: bool = False) -> torch.Tensor:
    """Deterministic hidden-unit degrees cycling through 1..max(D-1, 1).

    Cycling (rather than sampling, as MADE does) spreads units evenly over the degrees
    and leaves nothing to re-draw: the degrees follow from (width, D) alone. With fewer
    units than degrees, cycling uses only degrees 1..width, so a feature placed later than
    width + 1 sees only the first width features of its ordering; `spread` places the
    units evenly over 1..D-1 instead (the same degrees as cycling when width >= D - 1).

    Example:
        >>> hidden_degrees(5, n_features=3)
        tensor([1, 2, 1, 2, 1])
        >>> hidden_degrees(4, n_features=9), hidden_degrees(4, n_features=9, spread=True)
        (tensor([1, 2, 3, 4]), tensor([1, 3, 5, 8]))

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
        Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
    """
    top = max(n_features - 1, 1)
    if spread and 1 < width < top:  # from 1 to D - 1 inclusive: the last feature sees all
        return torch.arange(width, dtype=torch.long) * (top - 1) // (width - 1) + 1
    return torch.arange(width, dtype=torch.long) % top + 1


def hidden_mask(in_degrees: torch.Tensor, out_degrees: torch.Tensor) -> torch.Tensor:
    """Mask (out x in) for a layer feeding hidden units: connect when out >= in.

    Example:
        >>> hidden_mask(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))
        tensor([[1., 0., 0.],
                [1., 1., 0.]])
    """
    return (out_degrees[:, None] >= in_degrees[None, :]).to(torch.float32)


def output_mask(in_degrees: torch.Tensor, out_degrees: torch.Tensor) -> torch.Tensor:
    """Mask (out x in) for the output layer: connect when out > in (strictly).

    Example:
        >>> output_mask(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))
        tensor([[0., 0.],
                [1., 0.],
                [1., 1.]])
    """
    return (out_degrees[:, None] > in_degrees[None, :]).to(torch.float32)


def made_masks(
    input_degrees: torch.Tensor,
    hidden_widths: list[int],
    output_degrees: torch.Tensor,
    spread: bool = False,
) -> list[torch.Tensor]:
    """All masks of a MADE network, input layer first.

    `input_degrees` and `output_degrees` are per unit (a feature spanning several units,
    such as a one-hot categorical or a mixture's parameters, repeats its degree).

    Example:
        >>> degrees = torch.tensor([1, 2, 3])
        >>> masks = made_masks(degrees, [4, 4], degrees)
        >>> [tuple(m.shape) for m in masks]
        [(4, 3), (4, 4), (3, 4)]
        >>> paths = masks[2] @ masks[1] @ masks[0]  # paths[i, j]: routes from input j to output i
        >>> (paths > 0).long()  # output i sees exactly the inputs of lower degree
        tensor([[0, 0, 0],
                [1, 0, 0],
                [1, 1, 0]])

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
        Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
    """
    n_features = int(input_degrees.max().item()) if len(input_degrees) else 1
    masks: list[torch.Tensor] = []
    previous = input_degrees
    for width in hidden_widths:
        degrees = hidden_degrees(width, n_features, spread)
        masks.append(hidden_mask(previous, degrees))
        previous = degrees
    masks.append(output_mask(previous, output_degrees))
    return masks


def made_connection_counts(
    input_degrees: torch.Tensor,
    hidden_widths: list[int],
    output_degrees: torch.Tensor,
    spread: bool = False,
) -> list[int]:
    """The number of ones of each mask `made_masks` builds, without building them (a sort and
    a search per layer): what a packed artifact must hold, checked before allocating.

    Example:
        >>> ins, outs = torch.tensor([2, 1, 3]), torch.tensor([3, 3, 1, 2, 2])
        >>> made_connection_counts(ins, [4, 4], outs)
        [6, 12, 12]
        >>> [int(m.sum()) for m in made_masks(ins, [4, 4], outs)]
        [6, 12, 12]
    """
    n_features = int(input_degrees.max().item()) if len(input_degrees) else 1
    counts: list[int] = []
    previous = torch.sort(input_degrees).values
    for width in hidden_widths:
        degrees = hidden_degrees(width, n_features, spread)
        # hidden_mask connects out >= in: for each unit, the inputs of degree <= its own.
        counts.append(int(torch.searchsorted(previous, degrees, right=True).sum()))
        previous = torch.sort(degrees).values
    # output_mask connects out > in strictly: the inputs of degree < the unit's own.
    counts.append(int(torch.searchsorted(previous, output_degrees, right=False).sum()))
    return counts
