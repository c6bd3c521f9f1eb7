"""The seeds' worked examples for the propagation methods (analytic, exact answers).

* DeepLIFT on f(x) = max(0, x - 10) at x = 10 + ε (reference 0): contribution ε, where the
  gradient at the reference is 0 (the saturation example).
* o = min(i1, i2) = i1 - ReLU(i1 - i2), reference 0, i1 > i2 > 0: Rescale gives (0, i2).
* Implementation invariance (Sundararajan et al. 2017, Fig. in the IG paper): N1(x) =
  ReLU(x1 - 1 - x2) and N2(x) = ReLU(ReLU(x1 - 1) - x2) compute the same function, yet at
  x = (3, 1), reference 0, DeepLIFT-rescale and LRP-0 (biases ignored) give (1.5, -0.5) on N1
  and (2, -1) on N2; integrated gradients gives (1.5, -0.5) on both.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex

DT = torch.float64


class Saturating(nn.Module):
    def forward(self, x):
        return F.relu(x - 10)


class MinNet(nn.Module):
    """min(i1, i2) written as i1 - ReLU(i1 - i2)."""

    def forward(self, x):
        i1, i2 = x[:, :1], x[:, 1:2]
        return i1 - F.relu(i1 - i2)


def _linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight)).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=DT))
        layer.bias.copy_(torch.tensor(bias, dtype=DT))
    return layer


class N1(nn.Module):
    """ReLU(x1 - 1 - x2): one Linear(2, 1) with weights (1, -1), bias -1."""

    def __init__(self):
        super().__init__()
        self.fc = _linear([[1.0, -1.0]], [-1.0])
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc(x))


class N2(nn.Module):
    """ReLU(ReLU(x1 - 1) - x2): Linear on x1 with bias -1, ReLU, a Linear combining it with x2, ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1 = _linear([[1.0]], [-1.0])
        self.fc2 = _linear([[1.0, -1.0]], [0.0])
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.fc1(x[:, :1]))
        return self.relu(self.fc2(torch.cat([h, x[:, 1:]], dim=1)))


@pytest.mark.parametrize("eps", [1e-3, 0.5, 2.0])
def test_deeplift_saturating_relu_gives_epsilon(eps):
    x = torch.tensor([[10.0 + eps]], dtype=DT)
    exp = propex.explain(Saturating().eval(), x, "deeplift", target=0, baseline=0)
    assert exp.attributions.item() == pytest.approx(eps, rel=1e-9)
    assert abs(exp.delta.item()) < 1e-12
    # the gradient at the reference is zero: the contribution does not come from it
    grad = propex.explain(Saturating().eval(), torch.zeros(1, 1, dtype=DT), "saliency", target=0).attributions
    assert grad.item() == 0.0


@pytest.mark.parametrize("i1,i2", [(5.0, 3.0), (2.5, 0.5), (7.0, 6.999)])
def test_deeplift_rescale_min_example(i1, i2):
    x = torch.tensor([[i1, i2]], dtype=DT)
    exp = propex.explain(MinNet().eval(), x, "deeplift", target=0, baseline=0)
    torch.testing.assert_close(exp.attributions, torch.tensor([[0.0, i2]], dtype=DT), rtol=1e-9, atol=1e-12)
    assert exp.attributions.sum().item() == pytest.approx(min(i1, i2), rel=1e-12)
    assert abs(exp.delta.item()) < 1e-12


def test_n1_n2_compute_the_same_function():
    """(on non-negative inputs, the domain of the example)"""
    xs = torch.rand(256, 2, dtype=DT) * 5
    torch.testing.assert_close(N1()(xs), N2()(xs))


METHODS = {
    "deeplift": dict(baseline=0),
    "lrp": dict(composite="zero", ignore_bias=True),
    "integrated_gradients": dict(baseline=0, n_steps=256),
}
EXPECTED = {
    ("deeplift", "N1"): (1.5, -0.5), ("deeplift", "N2"): (2.0, -1.0),
    ("lrp", "N1"): (1.5, -0.5), ("lrp", "N2"): (2.0, -1.0),
    ("integrated_gradients", "N1"): (1.5, -0.5), ("integrated_gradients", "N2"): (1.5, -0.5),
}


@pytest.mark.parametrize("net", [N1, N2], ids=["N1", "N2"])
@pytest.mark.parametrize("method", list(METHODS))
def test_implementation_invariance_networks(method, net):
    model = net().eval()
    x = torch.tensor([[3.0, 1.0]], dtype=DT)
    exp = propex.explain(model, x, method, target=0, **METHODS[method])
    expected = torch.tensor([EXPECTED[(method, net.__name__)]], dtype=DT)
    # IG's path integral of a piecewise-linear function: exact up to the kink's quadrature cell
    tol = 2e-2 if method == "integrated_gradients" else 1e-9
    torch.testing.assert_close(exp.attributions, expected, rtol=0, atol=tol)
    assert exp.attributions.sum().item() == pytest.approx(1.0, abs=tol)   # f(3, 1) - f(0, 0) = 1


def test_lrp_zero_keeps_bias_relevance_out_only_when_asked():
    """With biases, LRP-0 on N1 is gradient × input (the bias −1 absorbs relevance): (3, −1)."""
    x = torch.tensor([[3.0, 1.0]], dtype=DT)
    exp = propex.explain(N1().eval(), x, "lrp", target=0, composite="zero")
    torch.testing.assert_close(exp.attributions, torch.tensor([[3.0, -1.0]], dtype=DT))
    assert exp.delta.item() == pytest.approx(1.0)          # sum R = 2 = f + 1: the bias's share
