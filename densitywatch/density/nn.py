"""Masked linear layers and the masked MLP (MADE), batched over an ensemble of orderings.

Every layer holds its weights for all ensemble members at once, shape (E, out, in), so an
ensemble of E orderings costs one batched matrix product per layer rather than E.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from densitywatch.density.masks import made_masks


class MaskedLinear(nn.Module):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    The mask is a non-persistent buffer: it follows from the stored orderings, so the
    artifact holds the weights alone and a loaded model derives its masks again.

    `mask` is (E, out, in): one mask per ensemble member, y_e = x_e (W_e ⊙ M_e)ᵀ + b_e.
    With `shared`, the members share one weight matrix and bias (W_e = W), as MADE's
    order-agnostic training does: an ensemble of E orderings for the parameters of one.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> layer = MaskedLinear(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))  # E=1, 2 x 2
        >>> a = layer(torch.tensor([[[1.0, 2.0]]]))
        >>> b = layer(torch.tensor([[[1.0, -5.0]]]))  # only input 1 changes
        >>> a.shape, bool(a[0, 0, 0] == b[0, 0, 0]), bool(a[0, 0, 1] == b[0, 0, 1])
        (torch.Size([1, 1, 2]), True, False)
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor, shared: bool = False) -> None:
        super().__init__()
        members, out_features, in_features = mask.shape
        copies = 1 if shared else members
        self.register_buffer("mask", mask.clone(), persistent=False)
        self.weight = nn.Parameter(torch.empty(copies, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(copies, 1, out_features))
        bound = 1.0 / math.sqrt(max(in_features, 1))
        nn.init.uniform_(self.weight, -bound, bound)
        with torch.no_grad():
            # Rescale so each unit's fan-in is the number of inputs it actually sees (on
            # average over the members that share the weights).
            fan_in = mask.sum(dim=-1, keepdim=True)
            if shared:
                fan_in = fan_in.mean(dim=0, keepdim=True)
            fan_in = fan_in.clamp(min=1.0)
            self.weight.mul_(math.sqrt(max(in_features, 1)) / fan_in.sqrt())
        self.folded = False

    def fold(self) -> None:
        """Multiply the mask into the weights once, so inference skips the masking.

        Shared weights keep their one copy (what an artifact stores) and gain a masked copy
        per member, a buffer that is never saved."""
        with torch.no_grad():
            if self.weight.shape[0] == self.mask.shape[0]:
                self.weight.mul_(self.mask)
            else:
                self.register_buffer("folded_weight", self.weight * self.mask, persistent=False)
        self.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (E, n, in) -> (E, n, out)."""
        if not self.folded:
            weight = self.weight * self.mask
        else:
            weight = getattr(self, "folded_weight", self.weight)
        return torch.baddbmm(self.bias, x, weight.transpose(1, 2))

    def forward_member(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Member `e` alone, x: (n, in) -> (n, out): what `forward` gives member e, at 1/E
        of the work (sampling draws each record from one member)."""
        copy = e if self.weight.shape[0] > 1 else 0
        folded = getattr(self, "folded_weight", None)
        if not self.folded:
            weight = self.weight[copy] * self.mask[e]
        elif folded is not None:
            weight = folded[e]
        else:
            weight = self.weight[copy]
        return torch.addmm(self.bias[copy, 0], x, weight.t())


class MaskedMLP(nn.Module):
    """MADE: a masked MLP whose output block for a feature sees only earlier features.

    Hidden layers use SiLU; the output layer is linear.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> degrees = torch.tensor([[1, 2, 3]])  # E=1 member, features in declared order
        >>> net = MaskedMLP(degrees, degrees, hidden_widths=[8])
        >>> x = torch.randn(1, 1, 3)
        >>> jac = torch.autograd.functional.jacobian(lambda v: net(v)[0, 0], x)[:, 0, 0]
        >>> (jac != 0).long()  # d out_i / d x_j is zero unless j comes before i
        tensor([[0, 0, 0],
                [1, 0, 0],
                [1, 1, 0]])

    References:
        Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
        Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
    """

    def __init__(
        self,
        input_degrees: torch.Tensor,
        output_degrees: torch.Tensor,
        hidden_widths: list[int],
        shared: bool = False,
        spread: bool = False,
    ) -> None:
        """`*_degrees`: (E, units) per ensemble member; a feature's units share its degree.
        `shared`: one set of weights for all members (see `MaskedLinear`); `spread`: hidden
        degrees spread over all positions (see `hidden_degrees`)."""
        super().__init__()
        layer_masks = [
            made_masks(input_degrees[e], hidden_widths, output_degrees[e], spread)
            for e in range(input_degrees.shape[0])
        ]
        stacked = [torch.stack(ms) for ms in zip(*layer_masks, strict=True)]
        self.layers = nn.ModuleList(MaskedLinear(m, shared) for m in stacked)

    def fold(self) -> None:
        """Fold masks into weights for inference (irreversible: do not train afterwards).

        Example:
            >>> _ = torch.manual_seed(0)
            >>> net = MaskedMLP(torch.tensor([[1, 2]]), torch.tensor([[1, 2]]), [4])
            >>> x = torch.randn(1, 5, 2)
            >>> before = net(x).detach()
            >>> net.fold()
            >>> torch.allclose(net(x), before)
            True
        """
        for layer in self.masked_layers():
            layer.fold()

    def masked_layers(self) -> list[MaskedLinear]:
        """The network's layers, input layer first (the last one emits the outputs)."""
        return [layer for layer in self.layers if isinstance(layer, MaskedLinear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (E, n, in_units) -> (E, n, out_units)."""
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):  # (slicing a ModuleList builds a new one)
            h = layer(h)
            if i < last:
                h = F.silu(h)
        return h

    def forward_member(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Member `e` alone, x: (n, in_units) -> (n, out_units), as `forward(...)[e]`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> degrees = torch.tensor([[1, 2, 3], [3, 1, 2]])  # two members
            >>> net = MaskedMLP(degrees, degrees, hidden_widths=[8])
            >>> x = torch.randn(5, 3)
            >>> full = net(x.expand(2, -1, -1))
            >>> torch.allclose(net.forward_member(x, 1), full[1])
            True
        """
        h = x
        layers = self.masked_layers()
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            h = layer.forward_member(h, e)
            if i < last:
                h = F.silu(h)
        return h
