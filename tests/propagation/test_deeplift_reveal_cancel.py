"""DeepLIFT's RevealCancel rule (``rule="reveal_cancel"``), Shrikumar et al. 2017, §3.5.3.

Seed worked examples (seed 003): o = min(i1, i2) = i1 - ReLU(i1 - i2) with reference 0 gives
(i2/2, i2/2) for i1 > i2 (Rescale: (0, i2)); f(x) = max(0, x - 10) at 10 + ε gives ε. On the
implementation-invariance pair N1/N2 (x = (3, 1), reference 0) it gives (1.5, -0.5) on both
(worked out by hand from the rule). A one-hidden-layer network is checked against the rule
written out in matrix form; deeper networks against summation-to-delta, multi-target and
chunking consistency.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex

DT = torch.float64
RC = dict(rule="reveal_cancel")


# the seeds' networks, defined once in test_propagation_seeds
from test_propagation_seeds import MinNet, N1, N2, Saturating  # noqa: E402


@pytest.mark.parametrize("i1,i2", [(5.0, 3.0), (2.0, 0.5), (1.0, 4.0)])
def test_min_example(i1, i2):
    x = torch.tensor([[i1, i2]], dtype=DT)
    exp = propex.explain(MinNet().eval(), x, "deeplift", target=0, **RC)
    half = 0.5 * min(i1, i2)
    torch.testing.assert_close(exp.attributions, torch.tensor([[half, half]], dtype=DT), rtol=1e-12, atol=1e-12)
    assert abs(exp.delta.item()) < 1e-12
    rescale = propex.explain(MinNet().eval(), x, "deeplift", target=0).attributions
    if i1 > i2:
        torch.testing.assert_close(rescale, torch.tensor([[0.0, i2]], dtype=DT))


@pytest.mark.parametrize("eps", [1e-3, 0.5])
def test_saturating_example(eps):
    exp = propex.explain(Saturating().eval(), torch.tensor([[10.0 + eps]], dtype=DT), "deeplift", target=0, **RC)
    assert exp.attributions.item() == pytest.approx(eps, rel=1e-9)


@pytest.mark.parametrize("net", [N1, N2], ids=["N1", "N2"])
def test_implementation_invariance_pair(net):
    exp = propex.explain(net().eval(), torch.tensor([[3.0, 1.0]], dtype=DT), "deeplift", target=0, **RC)
    torch.testing.assert_close(exp.attributions, torch.tensor([[1.5, -0.5]], dtype=DT), rtol=1e-12, atol=1e-12)


def _reveal_cancel_one_hidden_layer(l1: nn.Linear, l2: nn.Linear, x, ref, target):
    """The rule in matrix form: Δh± from the sign of w·Δx, Shapley-style Δy± of the ReLU, m± = Δy±/Δh±."""
    dx = x - ref
    contrib = l1.weight.unsqueeze(0) * dx.unsqueeze(1)            # [N, hidden, in]: w_ji Δx_i
    pos, neg = contrib.clamp(min=0), contrib.clamp(max=0)
    dhp, dhn = pos.sum(2), neg.sum(2)
    h0 = l1(ref)
    f = F.relu
    dyp = 0.5 * (f(h0 + dhp) - f(h0)) + 0.5 * (f(h0 + dhn + dhp) - f(h0 + dhn))
    dyn = 0.5 * (f(h0 + dhn) - f(h0)) + 0.5 * (f(h0 + dhp + dhn) - f(h0 + dhp))
    mp = torch.where(dhp.abs() > 1e-12, dyp / torch.where(dhp == 0, 1.0, dhp), torch.zeros_like(dhp))
    mn = torch.where(dhn.abs() > 1e-12, dyn / torch.where(dhn == 0, 1.0, dhn), torch.zeros_like(dhn))
    w2 = l2.weight[target]                                         # [N, hidden]
    return ((w2 * mp).unsqueeze(2) * pos + (w2 * mn).unsqueeze(2) * neg).sum(1)


def test_matches_the_rule_in_matrix_form():
    """(The reference activations are made positive, so that no hidden unit is dead at both x and the
    reference: there the conventions differ, see ``test_stable_under_tiny_reference_changes``.)"""
    torch.manual_seed(0)
    l1, l2 = nn.Linear(6, 9).to(DT), nn.Linear(9, 3).to(DT)
    model = nn.Sequential(l1, nn.ReLU(), l2).eval()
    x, ref = torch.randn(5, 6, dtype=DT), 0.5 * torch.randn(5, 6, dtype=DT)
    with torch.no_grad():
        l1.bias.sub_(l1(ref).min(0).values - 0.1)                  # every reference pre-activation > 0
    target = torch.tensor([0, 1, 2, 1, 0])
    exp = propex.explain(model, x, "deeplift", target=target, baseline=ref, **RC)
    with torch.no_grad():
        expected = _reveal_cancel_one_hidden_layer(l1, l2, x, ref, target)
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-9, atol=1e-12)


# Was a bug: a unit dead at both x and the reference has dy+ = -dy-, so its total difference is
# 0 or +-1e-17 by rounding, and the next linear op's split flipped with that last bit (2-13 % of
# the max attribution). The split now treats totals below 1e-9 of the parts as zero.
def test_stable_under_tiny_reference_changes():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1)).to(DT).eval()
    x, ref = torch.randn(8, 6, dtype=DT), 0.5 * torch.randn(8, 6, dtype=DT)
    a = propex.explain(model, x, "deeplift", target=0, baseline=ref, **RC).attributions
    b = propex.explain(model, x, "deeplift", target=0, baseline=ref * (1 + 1e-12), **RC).attributions
    assert (a - b).abs().max() <= 1e-6 * a.abs().max()


class DeepCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 10), nn.Linear(10, 4)

    def forward(self, x):
        h = F.max_pool2d(self.relu(self.bn(self.conv1(x))), 2)
        h = self.relu(self.conv2(h)) + h
        return self.fc2(F.silu(self.fc1(h.flatten(1))))


@pytest.fixture(scope="module")
def deep():
    torch.manual_seed(0)
    model = DeepCNN().to(DT)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=DT)
    ref = 0.3 * torch.randn(4, 3, 8, 8, generator=gen, dtype=DT)
    return model.eval(), x, ref


def test_summation_to_delta_and_differs_from_rescale(deep, model_snapshot):
    model, x, ref = deep
    snap = model_snapshot(model)
    exp = propex.explain(model, x, "deeplift", target=[0, 1, 2, 3], baseline=ref, **RC)
    with torch.no_grad():
        gap = (model(x) - model(ref))[torch.arange(4), torch.arange(4)]
    total = exp.attributions.flatten(1).sum(1)
    torch.testing.assert_close(total, gap, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(exp.delta, total - gap, rtol=0, atol=1e-10)
    torch.testing.assert_close(exp.outputs, model(x).detach())
    rescale = propex.explain(model, x, "deeplift", target=[0, 1, 2, 3], baseline=ref).attributions
    assert (rescale - exp.attributions).abs().max() > 1e-4 * rescale.abs().max()
    snap.assert_unchanged()


def test_multi_target_and_chunking(deep):
    model, x, ref = deep
    targets = torch.tensor([[0, 3], [1, 2], [2, 1], [3, 0]])
    multi = propex.explain(model, x, "deeplift", target=targets, baseline=ref, batch_size=3, **RC)
    assert multi.attributions.shape == (4, 2, 3, 8, 8)
    for t in range(2):
        single = propex.explain(model, x, "deeplift", target=targets[:, t], baseline=ref, **RC)
        torch.testing.assert_close(multi.attributions[:, t], single.attributions, rtol=1e-10, atol=1e-13)


def test_resnet18_summation_to_delta(torchvision_model, image):
    model = torchvision_model("resnet18")
    x, ref = image(1, seed=8), 0.3 * image(1, seed=9)
    exp = propex.explain(model, x, "deeplift", baseline=ref, **RC)
    with torch.no_grad():
        gap = (model(x) - model(ref)).gather(1, exp.target.reshape(-1, 1))[:, 0]
    total = exp.attributions.flatten(1).sum(1)
    assert ((total - gap).abs() <= 1e-4 * gap.abs()).all()
