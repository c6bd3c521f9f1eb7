"""Units a rule cannot place relevance on, with ``ignore_bias=True``.

* z⁺ with an empty positive denominator: the relevance is redistributed by ε (exactly, no
  stabilizer: every share is >= 0 there) instead of dropped as Zennit does;
* a unit whose inputs are all zero (active only through its bias, as after depthwise
  convolutions with merged batch norm): no proportional rule can place it; it goes to the
  receptive field by w² (flat for parameter-free maps), so conservation holds.
"""
from __future__ import annotations

import pytest
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
    s = r_h / zp                     # no stabilizer on z⁺ by default (its shares are convex)
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


def _zero_input_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]]))
        net[0].bias.copy_(torch.tensor([2.0, -1.0]))   # unit 0: relu(0 + 2) = 2, only from its bias
        net[2].weight.copy_(torch.tensor([[1.5, 1.0]]))
        net[2].bias.zero_()
    return net.eval()


@pytest.mark.parametrize("composite", ["zero", "epsilon", "alpha1_beta0", "epsilon_plus", "gamma"])
def test_unit_with_all_zero_inputs_gives_its_relevance_by_w_square(composite):
    x = torch.zeros(1, 3)
    exp = propex.explain(_zero_input_net(), x, "lrp", target=0, composite=composite, ignore_bias=True)
    # f = 1.5 * 2 = 3, all of it on unit 0, whose inputs are all 0: R_i = w_i² / Σ w² · 3
    w2 = torch.tensor([1.0, 4.0, 9.0])
    torch.testing.assert_close(exp.attributions[0], 3.0 * w2 / w2.sum(), rtol=1e-5, atol=1e-6)
    assert abs(exp.delta.item()) < 1e-5


def test_without_ignore_bias_the_bias_keeps_its_relevance():
    exp = propex.explain(_zero_input_net(), torch.zeros(1, 3), "lrp", target=0, composite="epsilon")
    assert exp.attributions.abs().max().item() == 0.0
    assert abs(exp.delta.item() + 3.0) < 1e-5          # all of f went to the bias, reported in delta


@pytest.mark.parametrize("arch", ["mobilenet_v2", "shufflenet_v2_x0_5", "mnasnet0_5"])
def test_depthwise_nets_with_random_batch_norm_conserve(arch):
    """The torchvision zoo's depthwise/grouped nets, where bias-only units are common."""
    torchvision = pytest.importorskip("torchvision")
    from propex.models.random_init import randomize_batch_norm
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    randomize_batch_norm(model)
    x = torch.randn(1, 3, 32, 32)
    exp = propex.explain(model, x, "lrp", composite="epsilon_plus", ignore_bias=True)
    f = exp.outputs.gather(1, exp.target[:, None])[:, 0]
    assert abs(exp.delta.item()) <= 1e-3 * abs(f.item()), (exp.delta.item(), f.item())
    # with Zennit's stabilizer (1e-6 everywhere) relevance is absorbed at tiny units: measurably worse
    zennit_like = propex.explain(model, x, "lrp", composite="epsilon_plus", ignore_bias=True, stabilizer=1e-6)
    assert abs(zennit_like.delta.item()) > abs(exp.delta.item())
