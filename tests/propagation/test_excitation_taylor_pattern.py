"""Excitation Backprop, Deep Taylor, PatternAttribution and β-smoothing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.propagation import Patterns, fit_patterns

from conftest import rel_err
from test_lrp_parity_zennit import exact_eps_free_copy as _eps_free


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_excitation_backprop_matches_zennit(name, torchvision_model, image):
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import ExcitationBackprop as ZennitEB
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    model = _eps_free(torchvision_model(name))
    x = image(1)
    target = model(x).argmax(1)
    canonizer = ResNetCanonizer if name == "resnet18" else VGGCanonizer
    with Gradient(model=model, composite=ZennitEB(canonizers=[canonizer()])) as attributor:
        _, reference = attributor(x, lambda o: torch.nn.functional.one_hot(target, o.shape[1]).to(o))
    exp = propex.explain(model, x, "excitation_backprop", target=target)
    assert rel_err(exp.attributions, reference) < 1e-10
    assert exp.delta is None
    # a winning probability: mass 1 at the target, of which positive biases may absorb some
    assert 0.5 < exp.attributions.sum().item() <= 1.0 + 1e-6


def test_contrastive_excitation_backprop_subtracts_the_dual(torchvision_model, image):
    model = torchvision_model("vgg16")
    x = image(1)
    plain = propex.explain(model, x, "excitation_backprop", target=3).attributions
    contrastive = propex.explain(model, x, "excitation_backprop", target=3, contrastive=True).attributions
    assert contrastive.sum().item() == pytest.approx(0.0, abs=1e-4)      # 1 - 1: both are distributions
    assert rel_err(contrastive, plain) > 0.1


def test_deep_taylor_conserves_and_uses_zbox_first(torchvision_model, image):
    model = torchvision_model("vgg16", random_bn=False)
    x = image(2)
    exp = propex.explain(model, x, "deep_taylor", low=-3.0, high=3.0, ignore_bias=True)
    logits = exp.outputs.gather(1, exp.target[:, None])[:, 0]
    assert (exp.delta.abs() / logits.abs()).max() < 1e-4
    lrp = propex.explain(model, x, "lrp", composite={propex.propagation.Position("first"):
                                                      propex.propagation.rules.ZBox(-3.0, 3.0),
                                                      "linear": propex.propagation.rules.ZPlus()},
                         ignore_bias=True, target=exp.target)
    assert rel_err(exp.attributions, lrp.attributions) < 1e-12
    with pytest.raises(ValueError, match="first"):
        propex.explain(model, x, "deep_taylor", first="box")


def test_pattern_attribution_recovers_the_signal_direction_and_round_trips(tmp_path):
    torch.manual_seed(0)
    signal_dir, distractor_dir = torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0])
    s = 2 * torch.randn(20000, 1)
    d = torch.randn(20000, 1)
    data = s * signal_dir + d * distractor_dir
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, 0.5]]))           # w·signal = 1, w·distractor = 0
    model = nn.Sequential(lin).eval()
    patterns = fit_patterns(model, torch.utils.data.DataLoader(data, batch_size=5000))
    assert patterns.n_samples == 20000
    torch.testing.assert_close(patterns.patterns[0], signal_dir.reshape(1, 2), atol=0.05, rtol=0)
    x = data[:5]
    exp = propex.explain(model, x, "pattern_attribution", patterns=patterns, target=0)
    # (w ⊙ a) · y, and w·a = 1 makes the attribution conserve the output
    torch.testing.assert_close(exp.attributions.sum(1), model(x)[:, 0].detach(), rtol=1e-5, atol=1e-6)
    path = tmp_path / "patterns.pt"
    patterns.save(path)
    again = propex.explain(model, x, "pattern_attribution", patterns=str(path), target=0)
    torch.testing.assert_close(again.attributions, exp.attributions)
    assert isinstance(Patterns.load(path), Patterns)


def test_pattern_attribution_on_a_cnn_and_errors(digits_model, digits_x):
    with pytest.raises(ValueError, match="fit_patterns"):
        propex.explain(digits_model, digits_x, "pattern_attribution")
    with pytest.raises(TypeError, match="patterns"):
        propex.explain(digits_model, digits_x, "pattern_attribution", patterns=[1, 2])
    patterns = fit_patterns(digits_model, digits_x)
    assert len(patterns.patterns) == 5                                         # 3 convs + 2 dense layers
    exp = propex.explain(digits_model, digits_x, "pattern_attribution", patterns=patterns)
    assert exp.attributions.shape == digits_x.shape and torch.isfinite(exp.attributions).all()
    other = nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).eval()
    with pytest.raises(ValueError, match="refit"):
        propex.explain(other, digits_x, "pattern_attribution", patterns=patterns)


def test_beta_smoothing_gives_the_softplus_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    model.eval()
    x = torch.randn(4, 5)
    beta = 3.0
    smooth = nn.Sequential(model[0], nn.Softplus(beta), model[2], nn.Softplus(beta), model[4])
    # softplus in the forward changes the later layers' inputs, so compare the two-layer case exactly
    two = nn.Sequential(model[0], nn.ReLU(), model[2])
    two_smooth = nn.Sequential(model[0], nn.Softplus(beta), model[2])
    leaf = x.clone().requires_grad_()
    want = torch.autograd.grad(two_smooth(leaf)[:, 1].sum(), leaf)[0]
    got = propex.explain(two, x, "saliency", target=1, beta_smooth=beta).attributions
    torch.testing.assert_close(got, want)
    # β → ∞ recovers the gradient; the forward (and so the explained output) is unchanged
    plain = propex.explain(model, x, "saliency", target=1)
    sharp = propex.explain(model, x, "saliency", target=1, beta_smooth=1e5)
    torch.testing.assert_close(sharp.attributions, plain.attributions)
    torch.testing.assert_close(sharp.outputs, plain.outputs)
    assert smooth is not None
    with pytest.raises(ValueError, match="beta_smooth"):
        propex.explain(model, x, "saliency", beta_smooth=0)


def _conv_net(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()


def test_patterns_of_a_grouped_conv_are_those_of_its_groups_fitted_alone():
    """A depthwise/grouped conv's units see only their group's channels: fitting the grouped conv
    equals fitting one conv per group on its slice of the channels."""
    torch.manual_seed(0)
    grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    data = torch.randn(64, 4, 6, 6) + torch.randn(64, 1, 6, 6)        # correlated channels
    net = _conv_net(grouped)
    net(data[:1])
    pattern = fit_patterns(net, data).patterns[0]
    assert pattern.shape == grouped.weight.shape
    for g in range(2):
        alone = nn.Conv2d(2, 3, 3, padding=1)
        with torch.no_grad():
            alone.weight.copy_(grouped.weight[3 * g:3 * g + 3])
            alone.bias.copy_(grouped.bias[3 * g:3 * g + 3])
        net_g = _conv_net(alone)
        net_g(data[:1, 2 * g:2 * g + 2])
        expected = fit_patterns(net_g, data[:, 2 * g:2 * g + 2]).patterns[0]
        torch.testing.assert_close(pattern[3 * g:3 * g + 3], expected, rtol=1e-5, atol=1e-7)


def test_patterns_of_conv1d_and_same_padding_match_their_conv2d_form():
    torch.manual_seed(0)
    data = torch.randn(40, 2, 12)
    c1 = nn.Conv1d(2, 3, 3, padding="same", dilation=2)
    c2 = nn.Conv2d(2, 3, (1, 3), padding=(0, 2), dilation=(1, 2))
    with torch.no_grad():
        c2.weight.copy_(c1.weight.unsqueeze(2))
        c2.bias.copy_(c1.bias)
    n1, n2 = _conv_net(c1), _conv_net(c2)
    n1(data[:1]), n2(data[:1, :, None])
    p1 = fit_patterns(n1, data).patterns[0]
    p2 = fit_patterns(n2, data[:, :, None]).patterns[0]
    torch.testing.assert_close(p1.unsqueeze(2), p2, rtol=1e-5, atol=1e-7)
    # and PatternAttribution runs with them
    a = propex.explain(n1, data[:2], "pattern_attribution", patterns=fit_patterns(n1, data), target=0).attributions
    assert a.shape == data[:2].shape and torch.isfinite(a).all()
