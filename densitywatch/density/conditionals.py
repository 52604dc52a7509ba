"""Per-feature conditionals: log-probabilities and samplers from network outputs.

- Continuous: a K-component Gaussian mixture on the standardised value; the network
  emits K logits, K means and K log-scales per feature.
- Categorical: a softmax over the vocabulary (padded to the largest vocabulary, padding
  masked out) mixed with a fixed "unseen" slot of mass `UNSEEN_MASS`, so an unseen value
  is very improbable but never an error, and the probabilities still sum to 1.

References:
    Bishop. Mixture Density Networks. Technical report NCRG/94/004, Aston University, 1994.

    Uria, Murray, Larochelle. RNADE: The Real-valued Neural Autoregressive
    Density-estimator. NeurIPS 2013. https://arxiv.org/abs/1306.0186
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

UNSEEN_MASS = 1e-6
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 4.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.logsumexp; without gradients, the same arithmetic minus its guard against
    infinite maxima (bit-identical for finite inputs, three fewer tensor operations, which
    matters at small batch sizes). Every caller here passes finite values: standardised
    inputs and log scales are clamped.

    Example:
        >>> x = torch.tensor([[0.0, math.log(3.0)]])
        >>> logsumexp(x, dim=1)  # log(1 + 3)
        tensor([1.3863])
        >>> torch.equal(logsumexp(x, dim=1), torch.logsumexp(x, dim=1))
        True
    """
    if x.requires_grad:  # training keeps torch's own backward
        return torch.logsumexp(x, dim=dim)
    top = x.amax(dim=dim, keepdim=True)
    return (x - top).exp().sum(dim=dim).log() + top.squeeze(dim)


def split_mixture(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3K) -> log weights, means, log scales, each (..., K).

    The log scales are clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX].

    Example:
        >>> log_w, means, log_scales = split_mixture(torch.tensor([0.0, 0.0, -1, 1, 0, 9]))
        >>> log_w.exp(), means, log_scales
        (tensor([0.5000, 0.5000]), tensor([-1.,  1.]), tensor([0., 4.]))
    """
    logits, means, raw_scale = params.chunk(3, dim=-1)
    log_scales = raw_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    return F.log_softmax(logits, dim=-1), means, log_scales


def mixture_log_prob(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Log density of z (...,) under the mixture with params (..., 3K).

    log Σ_k softmax(a)_k N(z; μ_k, σ_k) = logsumexp_k(a_k + log N_k) − logsumexp_k(a_k):
    two reductions instead of a log_softmax over the weights (about 2x faster on CPU).

    Example:
        >>> mixture_log_prob(torch.tensor([0.0, 0.0, 0.0]), torch.tensor(0.0))  # N(0; 0, 1)
        tensor(-0.9189)
        >>> params = torch.tensor([0.0, 0.0, -1.0, 1.0, 0.0, 0.0])  # ½ N(-1, 1) + ½ N(1, 1)
        >>> mixture_log_prob(params, torch.tensor([0.0, 1.0]))
        tensor([-1.4189, -1.4852])

    References:
        Bishop. Mixture Density Networks. Technical report NCRG/94/004, Aston University,
        1994.
    """
    logits, means, raw_scale = params.chunk(3, dim=-1)
    log_scales = raw_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    u = (z.unsqueeze(-1) - means) * torch.exp(-log_scales)
    joint = logsumexp(logits - 0.5 * u * u - log_scales, dim=-1)
    return joint - logsumexp(logits, dim=-1) - _HALF_LOG_2PI


def mixture_sample(params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of params (n, 3K): a component, then a Gaussian draw from it.

    Example:
        >>> params = torch.tensor([[0.0, 5.0, -7.0]]).repeat(3, 1)  # K=1: mean 5, σ ≈ 1e-3
        >>> mixture_sample(params, torch.Generator().manual_seed(0)).round()
        tensor([5., 5., 5.])
    """
    log_w, means, log_scales = split_mixture(params)
    k = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
    rows = torch.arange(params.shape[0])
    noise = torch.randn(params.shape[0], generator=generator, dtype=params.dtype)
    return means[rows, k] + torch.exp(log_scales[rows, k]) * noise


def categorical_log_probs(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (..., V+1) over padded vocabulary slots plus the unseen slot.

    `valid` (..., V) is True for real vocabulary slots; padding gets -inf.

    Example:
        >>> valid = torch.tensor([True, True, False])  # a vocabulary of 2, padded to 3
        >>> categorical_log_probs(torch.zeros(3), valid).exp()  # the last slot is "unseen"
        tensor([5.0000e-01, 5.0000e-01, 0.0000e+00, 1.0000e-06])
    """
    masked = logits.masked_fill(~valid, float("-inf"))
    seen = F.log_softmax(masked, dim=-1) + math.log1p(-UNSEEN_MASS)
    unseen = torch.full_like(seen[..., :1], math.log(UNSEEN_MASS))
    return torch.cat([seen, unseen], dim=-1)


def categorical_log_prob(
    logits: torch.Tensor, valid: torch.Tensor, index: torch.Tensor, sizes: torch.Tensor
) -> torch.Tensor:
    """Log-probability of each index (...,); an index equal to its vocabulary size is unseen.

    logits (..., F, V), valid (F, V), index (..., F) long, sizes (F,) vocabulary sizes.

    Example:
        >>> logits = torch.zeros(3, 1, 3)  # 3 records, 1 feature, slots padded to 3
        >>> valid, sizes = torch.tensor([[True, True, False]]), torch.tensor([2])
        >>> index = torch.tensor([[0], [1], [2]])  # index 2 == size: unseen
        >>> categorical_log_prob(logits, valid, index, sizes).exp().squeeze(-1)
        tensor([5.0000e-01, 5.0000e-01, 1.0000e-06])
    """
    log_p = categorical_log_probs(logits, valid.expand_as(logits))
    vmax = logits.shape[-1]
    # Map "unseen" (== size) to the extra last slot, whatever the padding.
    slot = torch.where(index >= sizes, torch.full_like(index, vmax), index)
    slot = slot.expand(logits.shape[:-1])
    return log_p.gather(-1, slot.unsqueeze(-1)).squeeze(-1)


def categorical_sample(
    logits: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One vocabulary index per row of logits (n, V); the unseen slot is never drawn.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0, 9.0]]).repeat(100, 1)
        >>> valid = torch.tensor([True, True, False])  # slot 2 is padding
        >>> draws = categorical_sample(logits, valid, torch.Generator().manual_seed(0))
        >>> sorted(set(draws.tolist()))
        [0, 1]
    """
    probs = F.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
