"""Conservation: with ``ignore_bias=True`` the input relevance sums to the explained logit.

For every conserving composite — ``zero``, ``epsilon``, ``alpha1_beta0`` (z⁺), ``gamma``,
``epsilon_alpha2_beta1`` and the other presets — on torchvision ``vgg16``, ``resnet18``,
``resnet50`` and ``densenet121`` (random weights, ``torch.manual_seed(0)``, eval mode,
torchvision's initial BatchNorm), ``|sum(R) - f_y(x)| <= 1e-4 |f_y(x)|`` and ``exp.delta`` is
exactly that error. The same test body runs on every architecture (no per-architecture
code); to keep the suite fast every composite runs on resnet18 and a rotating pair of
composites on each of the heavier architectures.

Note (not a propex defect): ``ignore_bias`` divides by the bias-free pre-activations. On a
network whose biases are large against them (e.g. a ResNet whose BatchNorm shifts were
merged into the convolutions, as in any trained ResNet) these denominators get close to
zero, relevance magnitudes explode (|R| ~ 1e13 for f ~ 1 on resnet18 with random BatchNorm
statistics) and float64 cancellation alone breaks conservation. Hence the initial
BatchNorm here; ``test_lrp_parity_zennit.py`` covers random BatchNorm statistics.
"""
from __future__ import annotations

import pytest
import torch

import propex

ALL = ("zero", "epsilon", "alpha1_beta0", "gamma", "epsilon_alpha2_beta1", "epsilon_plus", "epsilon_plus_flat",
       "epsilon_gamma_box")
CASES = (
    [("resnet18", c) for c in ALL]
    + [("resnet50", "gamma"), ("resnet50", "epsilon_alpha2_beta1"), ("resnet50", "epsilon"),
       ("densenet121", "zero"), ("densenet121", "alpha1_beta0"), ("densenet121", "epsilon_gamma_box"),
       ("vgg16", "gamma"), ("vgg16", "epsilon_plus_flat")]
)
RTOL = 1e-4


@pytest.mark.parametrize("arch,composite", CASES, ids=[f"{a}-{c}" for a, c in CASES])
def test_lrp_conserves_relevance(arch, composite, torchvision_model, image, model_snapshot):
    model = torchvision_model(arch, torch.float32, random_bn=False)
    snap = model_snapshot(model)
    x = image(1, torch.float32)
    exp = propex.explain(model, x, "lrp", composite=composite, ignore_bias=True, low=-4.0, high=4.0)
    f = exp.outputs.gather(1, exp.target.reshape(-1, 1))[:, 0].double()
    total = exp.attributions.double().reshape(1, -1).sum(1)
    assert exp.attributions.shape == x.shape
    assert torch.isfinite(exp.attributions).all()
    assert (total - f).abs().item() <= RTOL * f.abs().item(), (total.item(), f.item())
    torch.testing.assert_close(exp.delta.double(), total - f, rtol=0, atol=1e-5 * f.abs().item())
    snap.assert_unchanged()
