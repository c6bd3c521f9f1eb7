"""Several targets at once, ``batch_size`` chunking and tuple inputs, for LRP and DeepLIFT.

* ``target`` of shape [N, T] gives attributions [N, T, ...] equal to T separate calls;
* ``batch_size`` chunking gives the same numbers as one pass;
* a two-input model (image + vector) works with tuple ``x`` (and tuple baselines).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex

DT = torch.float64
METHODS = {
    "lrp": dict(composite="epsilon_plus_flat"),
    "lrp_gamma": dict(composite="epsilon_gamma_box", low=-3.0, high=3.0),
    "deeplift": dict(baseline=0.1),
    "guided_backprop": {},
}


def _method(key):
    return key.split("_gamma")[0], METHODS[key]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 2 * 2, 6)

    def forward(self, x):
        h = F.max_pool2d(self.relu(self.bn(self.conv1(x))), 2)
        h = F.avg_pool2d(self.relu(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


class TwoInputs(nn.Module):
    """An image branch and a tabular branch, joined by torch.cat."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.dense = nn.Linear(5, 6, bias=bias)
        self.head = nn.Linear(4 + 6, 3, bias=bias)

    def forward(self, image, table):
        a = F.adaptive_avg_pool2d(F.relu(self.conv(image)), 1).flatten(1)
        b = F.relu(self.dense(table))
        return self.head(torch.cat([a, b], dim=1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = SmallCNN().to(DT)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DT)
    return model.eval(), x


@pytest.mark.parametrize("key", list(METHODS))
def test_multi_target_equals_separate_calls(key, cnn):
    model, x = cnn
    method, options = _method(key)
    targets = torch.tensor([[0, 3, 5], [1, 1, 2], [5, 4, 3], [2, 0, 1], [4, 5, 0]])
    multi = propex.explain(model, x, method, target=targets, **options)
    assert multi.attributions.shape == (5, 3, *x.shape[1:])
    assert torch.equal(multi.target, targets)
    for t in range(targets.shape[1]):
        single = propex.explain(model, x, method, target=targets[:, t], **options)
        torch.testing.assert_close(multi.attributions[:, t], single.attributions, rtol=1e-10, atol=1e-13)
        if single.delta is not None:
            torch.testing.assert_close(multi.delta[:, t], single.delta, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("key", list(METHODS))
def test_batch_size_chunking_gives_identical_results(key, cnn):
    model, x = cnn
    method, options = _method(key)
    whole = propex.explain(model, x, method, target=[0, 1, 2, 3, 4], **options)
    for batch_size in (1, 2):
        chunked = propex.explain(model, x, method, target=[0, 1, 2, 3, 4], batch_size=batch_size, **options)
        torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-12, atol=1e-14)
        if whole.delta is not None:
            torch.testing.assert_close(chunked.delta, whole.delta, rtol=1e-10, atol=1e-14)


def test_multi_target_with_chunking_and_per_sample_baseline(cnn):
    model, x = cnn
    ref = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    targets = torch.tensor([[0, 1]] * 5)
    a = propex.explain(model, x, "deeplift", target=targets, baseline=ref, batch_size=2)
    b = torch.stack([propex.explain(model, x, "deeplift", target=targets[:, t], baseline=ref).attributions
                     for t in range(2)], dim=1)
    torch.testing.assert_close(a.attributions, b, rtol=1e-10, atol=1e-13)


def _two_input_data(n=4):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 6, 6, generator=gen, dtype=DT), torch.randn(n, 5, generator=gen, dtype=DT)


def test_tuple_inputs_lrp_zero_is_gradient_times_input():
    torch.manual_seed(0)
    model = TwoInputs().to(DT).eval()
    image, table = _two_input_data()
    lrp = propex.explain(model, (image, table), "lrp", target=2, composite="zero")
    ixg = propex.explain(model, (image, table), "input_x_gradient", target=2)
    assert isinstance(lrp.attributions, tuple) and len(lrp.attributions) == 2
    for a, b in zip(lrp.attributions, ixg.attributions):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_tuple_inputs_lrp_conserves_over_both_inputs():
    torch.manual_seed(0)
    model = TwoInputs().to(DT).eval()
    image, table = _two_input_data()
    exp = propex.explain(model, (image, table), "lrp", target=0, composite="epsilon_plus", ignore_bias=True)
    total = exp.attributions[0].flatten(1).sum(1) + exp.attributions[1].flatten(1).sum(1)
    f = exp.outputs[:, 0]
    assert ((total - f).abs() <= 1e-4 * f.abs()).all()
    torch.testing.assert_close(exp.delta, total - f)


def test_tuple_inputs_deeplift():
    torch.manual_seed(0)
    model = TwoInputs().to(DT).eval()
    image, table = _two_input_data()
    refs = (0.1 * torch.ones_like(image), -0.2 * torch.ones_like(table))
    exp = propex.explain(model, (image, table), "deeplift", target=1, baseline=refs)
    with torch.no_grad():
        gap = model(image, table)[:, 1] - model(*refs)[:, 1]
    total = exp.attributions[0].flatten(1).sum(1) + exp.attributions[1].flatten(1).sum(1)
    torch.testing.assert_close(total, gap, rtol=1e-9, atol=1e-12)
    assert exp.delta.abs().max() <= 1e-10
    # bias-free ReLU network, zero reference: gradient × input, per input tensor
    model = TwoInputs(bias=False).to(DT).eval()
    dl = propex.explain(model, (image, table), "deeplift", target=1)
    ixg = propex.explain(model, (image, table), "input_x_gradient", target=1)
    for a, b in zip(dl.attributions, ixg.attributions):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # chunked and multi-target on tuple inputs
    multi = propex.explain(model, (image, table), "deeplift", target=[[0, 1]] * 4, batch_size=3)
    for k in range(2):
        assert multi.attributions[k].shape == (4, 2, *(image, table)[k].shape[1:])
        torch.testing.assert_close(multi.attributions[k][:, 1], dl.attributions[k], rtol=1e-10, atol=1e-13)
