"""Composites: presets, ``depth_schedule`` and custom composites built from selectors
(``Name``, ``Position("first")``, ``Position("last")``, ``Position(i)``, ``All``, module types,
op classes). Each selector must put its rule exactly where expected:

* a recording rule logs which layers it was applied to (by the layer's weight shape);
* ``depth_schedule`` with γ = 0 everywhere equals the ``epsilon`` preset with ε = the
  stabiliser, and a depth schedule equals the same γ's given layer by layer with ``Position(i)``;
* changing the rule of the last layer only changes the relevance entering the rest of the
  network: the input relevance equals the body's LRP (run with one target per hidden unit)
  applied to the hand-computed relevance of the last layer.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.propagation import All, Composite, Name, Position, depth_schedule, preset, rules

DT = torch.float64


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
            nn.Conv2d(5, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.body = nn.Sequential(nn.Linear(24, 10), nn.ReLU())
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc(self.body(self.features(x).flatten(1)))


SHAPES = {"features.0": (4, 3, 3, 3), "features.3": (5, 4, 3, 3), "features.5": (6, 5, 3, 3),
          "body.0": (10, 24), "fc": (3, 10)}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Net().to(DT).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DT)
    return model, x


class Recording(rules.Epsilon):
    """LRP-ε that records the weight shape of every layer it is applied to."""

    def __init__(self, log: list, epsilon: float = 1e-6):
        super().__init__(epsilon)
        self.log = log

    def apply(self, call):
        if call.weight is not None:            # (a rule for linear ops may also be given parameter-free pooling)
            self.log.append(tuple(call.weight.shape))
        return super().apply(call)


def _applied(model, x, selector, *, rest=None) -> list:
    log: list = []
    composite = [(selector, Recording(log))] + ([("linear", rest)] if rest is not None else [])
    propex.explain(model, x, "lrp", target=0, composite=composite)
    return log


@pytest.mark.parametrize("selector,expected", [
    (Position("first"), ["features.0"]),
    (Position("last"), ["fc"]),
    (Position(2), ["features.5"]),
    (Name("features.3"), ["features.3"]),
    (Name("features.[03]"), ["features.0", "features.3"]),
    (Name(re=r"body\.0|fc"), ["body.0", "fc"]),
    (nn.Linear, ["body.0", "fc"]),
    (nn.Conv2d, ["features.0", "features.3", "features.5"]),
    ("conv", ["features.0", "features.3", "features.5"]),
    ("dense", ["body.0", "fc"]),
    (All(Position("first"), "conv"), ["features.0"]),
    (All(Position("first"), "dense"), []),
    (All(Name("features.*"), Position("last")), []),
], ids=repr)
def test_selector_applies_rule_where_expected(selector, expected, net):
    model, x = net
    if not expected:   # a selector that selects nothing is a user error, reported by name
        with pytest.raises(ValueError, match="matched no op"):
            _applied(model, x, selector, rest=rules.ZPlus())
        return
    log = _applied(model, x, selector, rest=rules.ZPlus())
    assert sorted(log) == sorted(SHAPES[name] for name in expected)


@pytest.mark.parametrize("selector", [Name("features.*"), Name(re=r"body\..*|fc")], ids=repr)
def test_glob_selector_over_a_block_applies_linear_rules_to_its_linear_layers(selector, net):
    """A conv/dense rule selected by a glob over a block goes to the block's convs, not its ReLUs
    (this raised TypeError on the ReLUs before the lead added ``applies_to``)."""
    model, x = net
    log = _applied(model, x, selector, rest=rules.ZPlus())
    expected = ["features.0", "features.3", "features.5"] if selector.pattern else ["body.0", "fc"]
    assert sorted(log) == sorted(SHAPES[name] for name in expected)


def test_selector_order_first_match_wins(net):
    model, x = net
    first, second = [], []
    composite = [(Position("last"), Recording(first)), ("dense", Recording(second)), ("conv", rules.ZPlus())]
    propex.explain(model, x, "lrp", target=0, composite=composite)
    assert first == [SHAPES["fc"]] and second == [SHAPES["body.0"]]


def test_depth_schedule_with_zero_gamma_is_the_epsilon_preset(net):
    model, x = net
    schedule = propex.explain(model, x, "lrp", target=1, composite=depth_schedule(lambda i, n: 0.0, stabilizer=1e-3))
    eps = propex.explain(model, x, "lrp", target=1, composite="epsilon", epsilon=1e-3)
    torch.testing.assert_close(schedule.attributions, eps.attributions, rtol=1e-10, atol=1e-14)


def test_depth_schedule_equals_gamma_per_position(net):
    model, x = net
    seen = []

    def gammas(i, n):
        seen.append((i, n))
        return 0.25 if i < n / 3 else (0.1 if i < 2 * n / 3 else 0.0)
    schedule = propex.explain(model, x, "lrp", target=2, composite=depth_schedule(gammas))
    assert sorted(set(seen)) == [(i, 5) for i in range(5)]
    by_hand = Composite([(Position(i), rules.Gamma(gammas(i, 5))) for i in range(5)])
    manual = propex.explain(model, x, "lrp", target=2, composite=by_hand)
    torch.testing.assert_close(schedule.attributions, manual.attributions, rtol=1e-12, atol=1e-15)
    # γ > 0 somewhere really changes the result
    flat = propex.explain(model, x, "lrp", target=2, composite=depth_schedule(lambda i, n: 0.0))
    assert (flat.attributions - schedule.attributions).abs().max() > 1e-6 * flat.attributions.abs().max()


def test_name_and_position_select_the_same_first_layer(net):
    model, x = net
    a = propex.explain(model, x, "lrp", target=0, composite={Name("features.0"): rules.Flat(), "linear": rules.ZPlus()})
    b = propex.explain(model, x, "lrp", target=0, composite={Position("first"): rules.Flat(), "linear": rules.ZPlus()})
    c = propex.explain(model, x, "lrp", target=0, composite="epsilon_plus_flat")
    torch.testing.assert_close(a.attributions, b.attributions, rtol=0, atol=0)
    # epsilon_plus_flat differs only by using ε (not z⁺) on the dense layers
    d = propex.explain(model, x, "lrp", target=0, composite={Position("first"): rules.Flat(), "conv": rules.ZPlus(),
                                                              "dense": rules.Epsilon(1e-6)})
    torch.testing.assert_close(c.attributions, d.attributions, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("last_rule", [rules.Epsilon(0.0), rules.AlphaBeta(2.0, 1.0), rules.Gamma(1.0)], ids=repr)
def test_position_last_changes_only_the_last_layer(last_rule, net):
    """input relevance = body's LRP applied to the last layer's relevance (computed by hand).
    (Rules whose relevance is proportional to the layer input, so that dead units get none.)"""
    model, x = net
    below = rules.ZPlus()
    exp = propex.explain(model, x, "lrp", target=1, composite=[(Position("last"), last_rule), ("linear", below)])

    # relevance at the input of the last layer, by hand, for the rules under test
    body = nn.Sequential(model.features, nn.Flatten(), model.body).eval()
    h = body(x).detach()                                           # [N, 10], the last layer's input
    last = nn.Sequential(model.fc).eval()
    r_h = propex.explain(last, h, "lrp", target=1, composite={"linear": last_rule}).attributions
    # LRP through the body, started from R_k = h_k for every hidden unit k (one target each)
    per_unit = propex.explain(body, x, "lrp", target=torch.arange(10).expand(3, 10),
                              composite={"linear": below}).attributions          # [N, 10, ...]
    scale = torch.where(h == 0, torch.zeros_like(h), r_h / torch.where(h == 0, torch.ones_like(h), h))
    expected = (per_unit * scale.reshape(3, 10, 1, 1, 1)).sum(1)
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-9, atol=1e-12)


def test_presets_and_their_repr():
    for name in ("zero", "epsilon", "gamma", "alpha1_beta0", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                 "epsilon_alpha2_beta1", "epsilon_alpha1_beta0"):
        comp = preset(name)
        assert isinstance(comp, Composite) and name in repr(comp)
    assert "gamma=0.5" in repr(preset("gamma", gamma=0.5))
    assert "low=-2.0" in repr(preset("epsilon_gamma_box", low=-2.0, high=2.0))


def test_gamma_option_reaches_the_rules(net):
    model, x = net
    a = propex.explain(model, x, "lrp", target=0, composite="gamma", gamma=0.5).attributions
    b = propex.explain(model, x, "lrp", target=0, composite={"linear": rules.Gamma(0.5)}).attributions
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_custom_composites():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError, match="convolution|conv"):
        propex.explain(model, torch.rand(1, 3), "lrp", composite={"convolution": rules.Epsilon()})
    with pytest.raises(TypeError, match="selector"):
        propex.explain(model, torch.rand(1, 3), "lrp", composite={42: rules.Epsilon()})
    with pytest.raises(TypeError, match="composite"):
        propex.explain(model, torch.rand(1, 3), "lrp", composite=3.5)
