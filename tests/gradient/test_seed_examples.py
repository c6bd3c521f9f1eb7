"""The worked examples of the seed lectures, as exact checks.

Both examples are piecewise-linear along the straight path x' + α(x − x'), with kinks
at α = 1/2 (and 1/3 for N2). With ``integration="riemann_middle"`` and an even
``n_steps`` the nodes α_k = (k + ½)/n never fall on a kink and exactly half of them lie
on each side of α = 1/2, so the Riemann sum of the piecewise-constant gradient is the
exact integral (up to float rounding): no 1e-3 fudge is needed, we assert to 1e-6.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex


class SaturatingReLU(nn.Module):
    """f(x) = 1 − ReLU(1 − x): the identity up to 1, then flat (the 'gradient saturation' slide)."""

    def forward(self, x):
        return (1 - torch.relu(1 - x)).sum(dim=1, keepdim=True)


class N1(nn.Module):
    """N1(x) = ReLU(x1 − 1 − x2)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
            self.lin.bias.fill_(-1.0)

    def forward(self, x):
        return torch.relu(self.lin(x))


class N2(nn.Module):
    """N2(x) = ReLU(ReLU(x1 − 1) − x2): a different network computing the same function for x2 ≥ 0."""

    def __init__(self):
        super().__init__()
        self.h = nn.Linear(1, 1)
        with torch.no_grad():
            self.h.weight.fill_(1.0)
            self.h.bias.fill_(-1.0)

    def forward(self, x):
        return torch.relu(torch.relu(self.h(x[:, :1])) - x[:, 1:2])


EXACT = dict(n_steps=64, integration="riemann_middle")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturation_example_gradient_is_zero_ig_is_one(dtype):
    f = SaturatingReLU().eval()
    x = torch.tensor([[2.0]], dtype=dtype)
    assert f(x).item() == 1.0 and f(torch.zeros_like(x)).item() == 0.0
    grad = propex.explain(f, x, "saliency", target=0)
    gxi = propex.explain(f, x, "input_x_gradient", target=0)
    ig = propex.explain(f, x, "integrated_gradients", target=0, baseline=0, **EXACT)
    assert grad.attributions.item() == 0.0
    assert gxi.attributions.item() == 0.0
    assert ig.attributions.item() == pytest.approx(1.0, abs=1e-6)
    assert ig.delta.abs().item() < 1e-6
    assert ig.attributions.dtype == dtype


def test_saturation_example_gausslegendre_converges_to_one():
    """The default rule is not exact at a kink, but it does converge to the seed's value."""
    f = SaturatingReLU().eval()
    x = torch.tensor([[2.0]])
    errs = [abs(propex.explain(f, x, "ig", target=0, n_steps=n).attributions.item() - 1.0) for n in (16, 256)]
    assert errs[1] < 1e-2
    assert errs[1] < errs[0] or errs[0] < 1e-6


def test_implementation_invariance_networks_compute_the_same_function():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(500, 2, generator=g) * torch.tensor([8.0, 4.0]) - torch.tensor([4.0, 0.0])  # x2 >= 0
    assert torch.allclose(N1().eval()(pts), N2().eval()(pts), atol=1e-6)


@pytest.mark.parametrize("net", [N1, N2])
def test_implementation_invariance_ig_gives_seed_values(net):
    model = net().eval()
    x = torch.tensor([[3.0, 1.0]])
    exp = propex.explain(model, x, "integrated_gradients", target=0, baseline=0, **EXACT)
    assert torch.allclose(exp.attributions, torch.tensor([[1.5, -0.5]]), atol=1e-6)
    assert exp.delta.abs().item() < 1e-6                    # f(x) − f(0) = 1 − 0
    assert exp.attributions.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_implementation_invariance_both_nets_agree_with_default_rule():
    """With the default Gauss–Legendre rule the two networks still get identical attributions."""
    x = torch.tensor([[3.0, 1.0], [2.5, 0.25]])
    a1 = propex.explain(N1().eval(), x, "ig", target=0, n_steps=32).attributions
    a2 = propex.explain(N2().eval(), x, "ig", target=0, n_steps=32).attributions
    assert torch.allclose(a1, a2, atol=1e-6)
    # and close to the analytic values; second sample: path ReLU(2.5α − 1 − 0.25α) has its kink at α = 4/9
    want = torch.tensor([[1.5, -0.5], [2.5 * 5 / 9, -0.25 * 5 / 9]])
    assert torch.allclose(a1, want, atol=0.05)


def test_saliency_on_both_networks():
    """At x = (3, 1) both networks are in their linear piece x1 − 1 − x2: gradient (1, −1)."""
    x = torch.tensor([[3.0, 1.0]])
    for net in (N1().eval(), N2().eval()):
        assert torch.equal(propex.explain(net, x, "saliency", target=0).attributions, torch.tensor([[1.0, -1.0]]))
