"""z⁺ with an empty positive denominator: relevance is redistributed by ε instead of dropped."""
from __future__ import annotations

import torch
from torch import nn

import propex


def _bias_driven_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
        net[0].bias.fill_(2.0)          # z = -x + 2 = 1 > 0 only thanks to the bias: z⁺ (bias-free) = 0
        net[3].weight.fill_(1.0)
        net[3].bias.zero_()
    return net.eval()


def test_unit_without_positive_contribution_keeps_its_relevance():
    exp = propex.explain(_bias_driven_net(), torch.ones(1, 1, 1, 1), "lrp", target=0, composite="epsilon_plus",
                         ignore_bias=True)
    # f(x) = 1; Zennit's z⁺ drops it all (sum R = 0); the ε fallback gives x·w/z = (-1)/(-1) = 1
    assert exp.outputs[0, 0].item() == 1.0
    assert abs(exp.attributions.sum().item() - 1.0) < 1e-5
    assert abs(exp.delta.item()) < 1e-5


def test_fallback_leaves_ordinary_units_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)).eval()
    with torch.no_grad():
        net[0].weight.abs_()            # every unit has positive contributions from positive inputs
    x = torch.rand(2, 2, 4, 4) + 0.1
    exp = propex.explain(net, x, "lrp", composite="epsilon_plus", ignore_bias=True, target=0)
    # hand-computed z⁺ for the conv, ε for the dense layer
    leaf = x.clone().requires_grad_()
    h = torch.relu(nn.functional.conv2d(leaf, net[0].weight, None, padding=1) + net[0].bias.view(1, -1, 1, 1))
    z = h.flatten(1) @ net[3].weight.T
    r_h = (h.flatten(1) * net[3].weight[0] / (z[:, :1] + 1e-6) * exp.outputs[:, :1]).reshape_as(h)
    zp = nn.functional.conv2d(leaf.detach(), net[0].weight.clamp(min=0), None, padding=1)
    s = r_h / (zp + 1e-6)
    c = torch.nn.grad.conv2d_input(x.shape, net[0].weight.clamp(min=0), s, padding=1)
    torch.testing.assert_close(exp.attributions, x * c, rtol=1e-4, atol=1e-6)


def test_custom_composite_selector_that_matches_nothing_is_an_error():
    from propex.propagation import Name, rules
    net = _bias_driven_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    import pytest
    with pytest.raises(ValueError, match="matched no op"):
        propex.explain(net, torch.ones(1, 1, 1, 1), "lrp", target=0,
                       composite={Name("features.*"): rules.Epsilon(), "linear": rules.Epsilon()})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # a selector that matches works
    exp = propex.explain(net, torch.ones(1, 1, 1, 1), "lrp", target=0,
                         composite={Name("0"): rules.ZPlus(), "linear": rules.Epsilon()})
    assert torch.isfinite(exp.attributions).all()
