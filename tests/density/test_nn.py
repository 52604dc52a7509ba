"""MaskedLinear / MaskedMLP: batched over ensemble members, masks respected, fold exact."""

from __future__ import annotations

import pytest
import torch

from densitywatch.density.masks import feature_degrees, random_ordering
from densitywatch.density.nn import MaskedLinear, MaskedMLP

torch.set_num_threads(1)


def _member_degrees(n_features: int, members: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [feature_degrees(random_ordering(n_features, generator)) for _ in range(members)]
    )


def test_masked_linear_is_a_per_member_masked_linear() -> None:
    torch.manual_seed(0)
    mask = (torch.rand(3, 5, 4) > 0.5).float()
    layer = MaskedLinear(mask)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 6, 4)
    out = layer(x)
    assert out.shape == (3, 6, 5)
    for e in range(3):
        expected = torch.nn.functional.linear(x[e], layer.weight[e] * mask[e], layer.bias[e, 0])
        torch.testing.assert_close(out[e], expected)


def test_masked_weights_get_no_gradient() -> None:
    torch.manual_seed(1)
    mask = (torch.rand(2, 4, 3) > 0.5).float()
    layer = MaskedLinear(mask)
    layer(torch.randn(2, 5, 3)).pow(2).sum().backward()
    assert layer.weight.grad is not None
    assert (layer.weight.grad[mask == 0] == 0).all()
    assert (layer.weight.grad[mask == 1] != 0).any()


def test_fold_gives_the_same_outputs() -> None:
    torch.manual_seed(2)
    deg = _member_degrees(4, members=3, seed=0)
    net = MaskedMLP(deg, deg.repeat_interleave(2, dim=1), [9, 9])
    x = torch.randn(3, 7, 4)
    before = net(x)
    net.fold()
    torch.testing.assert_close(net(x), before, rtol=0, atol=1e-6)
    for layer in net.layers:
        assert isinstance(layer, MaskedLinear)
        assert (layer.weight[layer.mask == 0] == 0).all()


def test_mlp_jacobian_respects_each_members_degrees() -> None:
    torch.manual_seed(3)
    n_features, members = 5, 3
    in_deg = _member_degrees(n_features, members, seed=7)
    out_deg = in_deg.repeat_interleave(3, dim=1)
    net = MaskedMLP(in_deg, out_deg, [12, 12])
    x = torch.randn(members, 1, n_features)
    jac = torch.autograd.functional.jacobian(net, x)  # (E, 1, out, E, 1, in)
    jac = jac[:, 0, :, :, 0, :]
    for e in range(members):
        for other in range(members):
            if other != e:
                assert (jac[e, :, other] == 0).all(), "members must not mix"
        allowed = out_deg[e][:, None] > in_deg[e][None, :]
        assert (jac[e, :, e][~allowed] == 0).all()
        assert (jac[e, :, e][allowed] != 0).all()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("folded", [False, True])
def test_one_member_s_pass_is_that_member_of_the_full_pass(shared: bool, folded: bool) -> None:
    """Sampling evaluates only the member it draws from: the same outputs as the full pass,
    whether weights are shared or not, folded or not."""
    torch.manual_seed(3)
    deg = _member_degrees(5, members=4, seed=1)
    net = MaskedMLP(deg, deg.repeat_interleave(3, dim=1), [8, 8], shared=shared)
    for layer in net.masked_layers():
        with torch.no_grad():
            layer.bias.normal_()
    if folded:
        net.fold()
    x = torch.randn(6, 5)
    full = net(x.expand(4, -1, -1))
    for e in range(4):
        torch.testing.assert_close(net.forward_member(x, e), full[e], rtol=0, atol=1e-6)
