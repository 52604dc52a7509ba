"""Per-feature conditionals: log-probabilities and samplers from network outputs.

- Continuous: a K-component Gaussian mixture on the standardised value; the network
  emits K logits, K means and K log-scales per feature.
- Categorical: a softmax over the vocabulary (padded to the largest vocabulary, padding
  masked out) mixed with a fixed "unseen" slot of mass `UNSEEN_MASS`, so an unseen value
  is very improbable but never an error, and the probabilities still sum to 1.
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
    """
    if x.requires_grad:  # training keeps torch's own backward
        return torch.logsumexp(x, dim=dim)
    top = x.amax(dim=dim, keepdim=True)
    return (x - top).exp().sum(dim=dim).log() + top.squeeze(dim)


def split_mixture(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3K) -> log weights, means, log scales, each (..., K)."""
    logits, means, raw_scale = params.chunk(3, dim=-1)
    log_scales = raw_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    return F.log_softmax(logits, dim=-1), means, log_scales


def mixture_log_prob(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Log density of z (...,) under the mixture with params (..., 3K).

    log Σ_k softmax(a)_k N(z; μ_k, σ_k) = logsumexp_k(a_k + log N_k) − logsumexp_k(a_k):
    two reductions instead of a log_softmax over the weights (about 2x faster on CPU).
    """
    logits, means, raw_scale = params.chunk(3, dim=-1)
    log_scales = raw_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    u = (z.unsqueeze(-1) - means) * torch.exp(-log_scales)
    joint = logsumexp(logits - 0.5 * u * u - log_scales, dim=-1)
    return joint - logsumexp(logits, dim=-1) - _HALF_LOG_2PI


def mixture_sample(params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of params (n, 3K)."""
    log_w, means, log_scales = split_mixture(params)
    k = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
    rows = torch.arange(params.shape[0])
    noise = torch.randn(params.shape[0], generator=generator, dtype=params.dtype)
    return means[rows, k] + torch.exp(log_scales[rows, k]) * noise


def categorical_log_probs(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (..., V+1) over padded vocabulary slots plus the unseen slot.

    `valid` (..., V) is True for real vocabulary slots; padding gets -inf.
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
    """One vocabulary index per row of logits (n, V); the unseen slot is never drawn."""
    probs = F.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
