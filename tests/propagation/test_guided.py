"""Guided Backprop and Deconvnet: parity with Captum on vgg11, and the functional-ReLU case
where Captum silently returns the plain gradient.

Guided Backprop at a ReLU: g_in = 1[x > 0] · max(g_out, 0); Deconvnet: g_in = max(g_out, 0).
Captum attaches its rule to ``nn.ReLU`` modules only, so on a model calling ``F.relu`` its
``GuidedBackprop`` is the plain gradient; propex sees the op and applies the rule
(compared with a hand-written guided backward of the same tiny model).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex

captum_attr = pytest.importorskip("captum.attr")

DT = torch.float64


def _captum(cls, model, x, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model).attribute(x.clone().requires_grad_(), target=target).detach()


@pytest.mark.parametrize("method,captum_cls", [("guided_backprop", "GuidedBackprop"),
                                               ("deconvnet", "Deconvolution")])
def test_matches_captum_on_vgg11(method, captum_cls, torchvision_model, image, relative_error):
    model = torchvision_model("vgg11")
    x = image(2, seed=7)
    target = torch.tensor([3, 917])
    expected = _captum(getattr(captum_attr, captum_cls), model, x, target)
    ours = propex.explain(model, x, method, target=target)
    assert relative_error(ours.attributions, expected) <= 1e-10


class TinyFunctional(nn.Module):
    """x → L1 → F.relu → L2 → relu (in-place) → L3; functional ReLUs only."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)

    def forward(self, x):
        h1 = F.relu(self.l1(x))
        h2 = torch.relu_(self.l2(h1))
        return self.l3(h2)


def _hand_guided(model: TinyFunctional, x: torch.Tensor, target: int, deconv: bool) -> torch.Tensor:
    z1 = model.l1(x)
    z2 = model.l2(F.relu(z1))
    g = model.l3.weight[target].expand(x.shape[0], -1)           # d out / d h2
    g = g.clamp(min=0) * (1.0 if deconv else (z2 > 0).to(g.dtype))
    g = g @ model.l2.weight                                       # d / d h1
    g = g.clamp(min=0) * (1.0 if deconv else (z1 > 0).to(g.dtype))
    return g @ model.l1.weight


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_functional_relu_gets_the_rule(method):
    torch.manual_seed(0)
    model = TinyFunctional().to(DT).eval()
    x = torch.randn(6, 5, dtype=DT)
    ours = propex.explain(model, x, method, target=1).attributions
    expected = _hand_guided(model, x, 1, deconv=method == "deconvnet")
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)


def test_captum_guided_backprop_returns_the_plain_gradient_on_functional_relu():
    torch.manual_seed(0)
    model = TinyFunctional().to(DT).eval()
    x = torch.randn(6, 5, dtype=DT)
    captum = _captum(captum_attr.GuidedBackprop, model, x, 1)
    gradient = propex.explain(model, x, "saliency", target=1).attributions
    guided = propex.explain(model, x, "guided_backprop", target=1).attributions
    torch.testing.assert_close(captum, gradient)                  # Captum: no rule applied
    assert (captum - guided).abs().max() > 1e-3 * guided.abs().max()
    torch.testing.assert_close(guided, _hand_guided(model, x, 1, deconv=False))


class ReusedInplace(nn.Module):
    """One nn.ReLU(inplace=True) module used twice, a residual add."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.relu(self.l1(x))
        out = self.l2(h)
        out += h
        return self.l3(self.relu(out))


def test_guided_backprop_on_reused_inplace_relu_and_residual():
    torch.manual_seed(0)
    model = ReusedInplace().to(DT).eval()
    x = torch.randn(4, 5, dtype=DT)
    ours = propex.explain(model, x, "guided_backprop", target=0).attributions
    z1 = model.l1(x)
    h = F.relu(z1)
    z2 = model.l2(h) + h
    g = model.l3.weight[0].expand(4, -1).clamp(min=0) * (z2 > 0)
    g_h = g @ model.l2.weight + g                                  # through l2 and the skip
    g_z1 = g_h.clamp(min=0) * (z1 > 0)
    torch.testing.assert_close(ours, g_z1 @ model.l1.weight, rtol=1e-12, atol=1e-14)


def test_guided_backprop_smooth_activation_uses_its_local_gradient():
    """For non-ReLU activations guided backprop is f'(x) · max(g, 0)."""
    torch.manual_seed(0)
    l1, l2 = nn.Linear(4, 6).to(DT), nn.Linear(6, 2).to(DT)
    model = nn.Sequential(l1, nn.SiLU(), l2).eval()
    x = torch.randn(3, 4, dtype=DT)
    ours = propex.explain(model, x, "guided_backprop", target=0).attributions
    z = l1(x).detach().requires_grad_()
    (local,) = torch.autograd.grad(F.silu(z).sum(), z)
    expected = (l2.weight[0].clamp(min=0) * local) @ l1.weight
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)


def test_deconvnet_refuses_other_activations():
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2)).eval()
    with pytest.raises(ValueError, match=r"(?i)deconvnet.*gelu"):
        propex.explain(model, torch.randn(2, 4), "deconvnet", target=0)
