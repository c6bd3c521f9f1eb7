"""The axioms Integrated Gradients claims (Sundararajan et al. 2017), on small synthetic
functions with analytic expectations, and completeness on the shipped demo model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex


class Fn(nn.Module):
    """Wrap a function of the rows ``x [N, D] -> [N]`` as a one-output model ``[N, 1]``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x).unsqueeze(1)


def f1(x):
    return torch.tanh(x[:, 0] * x[:, 1]) + torch.sin(x[:, 2]) * x[:, 3]


def f2(x):
    return torch.sigmoid(x[:, 0] - 2 * x[:, 3]) * x[:, 1] ** 2 + 0.5 * x[:, 2] ** 3


def ig(model, x, **kw):
    kw.setdefault("n_steps", 32)
    return propex.explain(model.eval(), x, "integrated_gradients", target=0, **kw)


@pytest.fixture
def x4():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 4, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- dummy
def test_dummy_feature_gets_exactly_zero(x4):
    """f ignores feature 3 entirely; x and baseline differ there, yet its attribution is 0."""
    model = Fn(lambda x: torch.tanh(x[:, 0] * x[:, 1]) + x[:, 2] ** 2)
    baseline = torch.full_like(x4, -0.7)
    exp = ig(model, x4, baseline=baseline)
    assert torch.all(exp.attributions[:, 3] == 0)
    assert (x4[:, 3] - baseline[:, 3]).abs().min() > 0
    assert exp.attributions[:, :3].abs().sum() > 0.1        # the others are not trivially zero
    assert exp.delta.abs().max() < 1e-6


def test_dummy_input_tensor_of_a_tuple_gets_zero():
    """A second input tensor the model never reads is a dummy as a whole."""
    class TwoIn(nn.Module):
        def forward(self, a, b):
            return (a ** 2).sum(dim=1, keepdim=True)

    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    ga, gb = ig(TwoIn(), (a, b)).attributions
    assert torch.all(gb == 0)
    assert torch.allclose(ga, a ** 2, atol=1e-10)            # ∫ 2αa·a dα = a²


# ---------------------------------------------------------------- linearity
@pytest.mark.parametrize("a,b", [(2.0, -3.0), (0.5, 1.0)])
def test_linearity(x4, a, b):
    base = torch.full_like(x4, 0.3)
    ig1 = ig(Fn(f1), x4, baseline=base).attributions
    ig2 = ig(Fn(f2), x4, baseline=base).attributions
    igc = ig(Fn(lambda x: a * f1(x) + b * f2(x)), x4, baseline=base).attributions
    assert torch.allclose(igc, a * ig1 + b * ig2, atol=1e-10, rtol=1e-10)
    assert (ig1 - ig2).abs().max() > 0.1                     # the two parts are genuinely different


def test_linearity_of_two_outputs_of_one_network(x4):
    """IG of the target c1·out[0] + c2·out[1] (a callable target) = c1·IG(out[0]) + c2·IG(out[1])."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()
    opts = dict(n_steps=16, baseline=0.2)
    i0 = propex.explain(model, x4, "ig", target=0, **opts).attributions
    i1 = propex.explain(model, x4, "ig", target=1, **opts).attributions
    ic = propex.explain(model, x4, "ig", target=lambda out: 3 * out[:, 0] - out[:, 1], **opts).attributions
    assert torch.allclose(ic, 3 * i0 - i1, atol=1e-10)


# ---------------------------------------------------------------- symmetry
def test_symmetry_preserving(x4):
    """f symmetric in features 0 and 1; where x0 = x1 and x'0 = x'1, their attributions are equal."""
    model = Fn(lambda x: torch.sigmoid(x[:, 0] * x[:, 1] + x[:, 0] + x[:, 1]) * x[:, 2] + x[:, 3])
    x = x4.clone()
    x[:, 1] = x[:, 0]
    base = torch.randn_like(x)
    base[:, 1] = base[:, 0]
    attr = ig(model, x, baseline=base).attributions
    assert torch.allclose(attr[:, 0], attr[:, 1], atol=1e-12)
    assert attr[:, 0].abs().min() > 1e-4
    # not symmetric in (0, 2): the attributions differ there
    assert (attr[:, 0] - attr[:, 2]).abs().max() > 1e-2


# ---------------------------------------------------------------- sensitivity
def test_sensitivity_a(x4):
    """x and baseline differ only in feature 2 and f(x) ≠ f(x'): feature 2 is non-zero, gets all of
    f(x) − f(x') (completeness) and every other feature gets 0."""
    model = Fn(f1)
    base = x4.clone()
    base[:, 2] = x4[:, 2] + 1.5
    exp = ig(model, x4, baseline=base)
    with torch.no_grad():
        diff = f1(x4) - f1(base)
    assert diff.abs().min() > 1e-3
    assert torch.all(exp.attributions[:, [0, 1, 3]] == 0)
    assert exp.attributions[:, 2].abs().min() > 1e-3
    assert torch.allclose(exp.attributions[:, 2], diff, atol=1e-6)


def test_sensitivity_relu_case_where_gradient_fails():
    """Sensitivity fails for the gradient on f = 1 − ReLU(1 − x) at x = 2; IG is non-zero."""
    model = Fn(lambda x: 1 - torch.relu(1 - x[:, 0]))
    x = torch.tensor([[2.0]])
    assert propex.explain(model.eval(), x, "saliency", target=0).attributions.item() == 0
    assert ig(model, x, n_steps=64, integration="riemann_middle").attributions.item() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- linear models
def test_ig_of_linear_model_is_x_minus_baseline_times_w():
    torch.manual_seed(3)
    lin = nn.Linear(6, 3).eval()
    x = torch.randn(4, 6)
    b = torch.randn(4, 6)
    for target in (0, 2):
        attr = propex.explain(lin, x, "ig", target=target, baseline=b, n_steps=3).attributions
        assert torch.allclose(attr, (x - b) * lin.weight[target].detach(), atol=1e-5)


class TwoInputLinear(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.wa = nn.Parameter(torch.randn(2, 3, 4, generator=g))
        self.wb = nn.Parameter(torch.randn(2, 5, generator=g))

    def forward(self, a, b):
        return torch.einsum("nij,cij->nc", a, self.wa) + b @ self.wb.T + 1.0


def test_ig_linear_tuple_inputs_and_several_baselines_averaged():
    model = TwoInputLinear().eval()
    a, b = torch.randn(3, 3, 4), torch.randn(3, 5)
    b1 = (torch.randn(1, 3, 4), torch.randn(1, 5))            # [1, ...] broadcasts over N
    b2 = (0.5, torch.randn(5))                                # a number; a tensor shaped x.shape[1:]
    exp = propex.explain(model, (a, b), "ig", target=1, baseline=[b1, b2], n_steps=4)
    assert isinstance(exp.attributions, tuple) and len(exp.attributions) == 2
    wa, wb = model.wa[1].detach(), model.wb[1].detach()
    want_a = ((a - b1[0]) * wa + (a - 0.5) * wa) / 2
    want_b = ((b - b1[1]) * wb + (b - b2[1]) * wb) / 2
    assert torch.allclose(exp.attributions[0], want_a, atol=1e-5)
    assert torch.allclose(exp.attributions[1], want_b, atol=1e-5)
    assert exp.delta.abs().max() < 1e-4


# ---------------------------------------------------------------- completeness on the demo model
def _f(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target.reshape(-1, 1))[:, 0].double()


def test_completeness_on_demo_model(digits_model, digits_x):
    exp = propex.explain(digits_model, digits_x, "integrated_gradients", integration="gausslegendre", n_steps=64)
    want = _f(digits_model, digits_x, exp.target) - _f(digits_model, torch.zeros_like(digits_x), exp.target)
    got = exp.attributions.double().sum(dim=(1, 2, 3))
    rel = ((got - want).abs() / want.abs())
    assert rel.max() < 1e-3, rel
    assert want.abs().min() > 1.0                             # a meaningful difference to explain
    # the reported delta is this very gap
    assert torch.allclose(exp.delta.double(), got - want, atol=1e-3 * want.abs().max().item())


def test_completeness_error_shrinks_with_steps(digits_model, digits_x):
    x = digits_x[:4]
    errs = []
    for n in (8, 16, 32):
        exp = propex.explain(digits_model, x, "ig", integration="gausslegendre", n_steps=n)
        want = _f(digits_model, x, exp.target) - _f(digits_model, torch.zeros_like(x), exp.target)
        errs.append(((exp.attributions.double().sum(dim=(1, 2, 3)) - want).abs() / want.abs()).max().item())
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 1e-3


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_completeness_riemann_rules_with_nonzero_baseline(digits_model, digits_x, rule):
    """Every rule's error shrinks from 16 to 128 steps, with a constant baseline of 0.5."""
    x = digits_x[:3]
    gaps = [propex.explain(digits_model, x, "ig", baseline=0.5, integration=rule, n_steps=n).delta.abs().max().item()
            for n in (16, 128)]
    target = propex.explain(digits_model, x, "saliency").target
    scale = (_f(digits_model, x, target) - _f(digits_model, torch.full_like(x, 0.5), target)).abs().min().item()
    assert gaps[1] < gaps[0]
    assert gaps[1] < 0.05 * scale
