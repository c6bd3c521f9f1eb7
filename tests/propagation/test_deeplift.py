"""DeepLIFT (Rescale): gradient × input on bias-free ReLU networks, parity with Captum, and
summation-to-delta where Captum cannot run.

* With a zero baseline on a bias-free ReLU network every reference activation is 0, so each
  secant equals the gradient and DeepLIFT is gradient × input (max pooling included).
* Captum's ``DeepLift`` (rescale) on torchvision ``vgg11`` and on a small CNN with
  overlapping max pooling: <= 1e-5 relative, in float64, for zero and random baselines.
* Captum raises on ``resnet18`` (one ReLU module reused per block); propex's DeepLIFT
  holds summation-to-delta (<= 1e-4 relative) there, on ``mobilenet_v3_small`` (hardswish,
  squeeze-excitation gating) and on an MLP with GELU / SiLU.
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
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients",
                                        "ignore:Setting forward, backward hooks and attributes on non-linear",
                                        "ignore:.*Attempting to compute the Jacobian")


class BiasFreeCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.relu = nn.ReLU()                         # reused
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.fc1 = nn.Linear(8 * 2 * 2, 10, bias=False)
        self.fc2 = nn.Linear(10, 4, bias=False)

    def forward(self, x):
        h = F.max_pool2d(self.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h), inplace=True), 3, stride=2, padding=1)   # overlapping windows
        h = self.relu(self.fc1(h.flatten(1)))
        return self.fc2(h)


class PoolCNN(nn.Module):
    """A small CNN with max pooling that Captum handles correctly: nn.ReLU modules used once, and
    no hooked nonlinearity feeding another directly (see ``test_captum_deeplift_breaks_...``)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.relu2 = nn.Linear(8 * 5 * 5, 12), nn.ReLU()
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        h = self.pool(self.conv2(self.relu1(self.conv1(x))))
        return self.fc2(self.relu2(self.fc1(h.flatten(1))))


class ReluPool(nn.Module):
    """conv → ReLU → max pooling (overlapping windows) → linear: the VGG pattern."""

    def __init__(self, kernel: int = 2, stride: int = 2):
        super().__init__()
        self.conv, self.relu, self.pool = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(kernel, stride)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class ActMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = F.gelu(self.l1(x))
        h = F.silu(self.l2(h))
        h = nn.functional.gelu(self.l3(h), approximate="tanh")
        return self.l4(h * torch.sigmoid(h))            # a hand-written SiLU: a product of two activations


def _seeded(cls) -> nn.Module:
    torch.manual_seed(0)
    return cls().to(DT).eval()


def test_deeplift_is_gradient_times_input_on_bias_free_relu_networks(model_snapshot):
    model = _seeded(BiasFreeCNN)
    snap = model_snapshot(model)
    x = torch.randn(3, 3, 8, 8, dtype=DT)
    dl = propex.explain(model, x, "deeplift", target=[0, 2, 3])
    ixg = propex.explain(model, x, "input_x_gradient", target=[0, 2, 3])
    torch.testing.assert_close(dl.attributions, ixg.attributions, rtol=1e-6, atol=1e-12)
    assert dl.delta.abs().max() <= 1e-10 * dl.outputs.abs().max()
    snap.assert_unchanged()


def _captum_deeplift(model, x, target, baseline):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return captum_attr.DeepLift(model).attribute(x.clone().requires_grad_(), baselines=baseline,
                                                     target=target).detach()


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("arch,baseline", [("vgg11", "zeros"), ("pool_cnn", "zeros"), ("pool_cnn", "random")])
def test_deeplift_matches_captum(arch, baseline, torchvision_model):
    """vgg11 only with the zero baseline: torchvision initialises its biases to 0, so every reference
    activation is 0 and Captum's ReLU→MaxPool defect (next test) has no effect."""
    if arch == "pool_cnn":
        model = _seeded(PoolCNN)
        x = torch.randn(2, 3, 12, 12, dtype=DT)
    else:
        model = torchvision_model(arch)
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=DT)
    ref = torch.zeros_like(x) if baseline == "zeros" else 0.5 * torch.randn_like(x)
    target = model(x).argmax(1)
    expected = _captum_deeplift(model, x, target, ref)
    exp = propex.explain(model, x, "deeplift", target=target, baseline=ref)
    assert _rel(exp.attributions, expected) <= 1e-5
    gap = (model(x) - model(ref)).gather(1, target[:, None])[:, 0]
    assert (exp.delta.abs() <= 1e-4 * gap.abs()).all()


def _manual_relu_pool_deeplift(model: ReluPool, x, ref, target):
    """DeepLIFT-rescale of ReluPool written out by hand: linear multipliers, ReLU secants, and for
    max pooling Δy routed to the maxima of x and of the reference (cross maximum), accumulated."""
    conv, pool, W = model.conv, model.pool, model.fc.weight[target]
    h1, h0 = conv(x), conv(ref)
    a1, a0 = F.relu(h1), F.relu(h0)
    p1, i1 = F.max_pool2d(a1, pool.kernel_size, pool.stride, return_indices=True)
    p0, i0 = F.max_pool2d(a0, pool.kernel_size, pool.stride, return_indices=True)
    m_p = W.reshape(p1.shape)
    top = torch.maximum(p1, p0)

    def unpool(v, idx):
        out = torch.zeros(a1.shape[0], a1.shape[1], a1[0, 0].numel(), dtype=v.dtype)
        out.scatter_add_(2, idx.flatten(2), v.flatten(2))
        return out.reshape(a1.shape)
    routed = unpool(m_p * (top - p0), i1) + unpool(m_p * (p1 - top), i0)      # = m_a * Δa
    da = a1 - a0
    m_a = torch.where(da.abs() < 1e-10, torch.zeros_like(da), routed / torch.where(da == 0, 1.0, da))
    dh = h1 - h0
    m_h = m_a * torch.where(dh.abs() < 1e-10, (h1 > 0).to(dh.dtype), (a1 - a0) / torch.where(dh == 0, 1.0, dh))
    xx = x.clone().requires_grad_()
    (m_x,) = torch.autograd.grad(conv(xx), xx, m_h)
    return m_x * (x - ref)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2)], ids=["pool2", "pool3s2_overlapping"])
def test_captum_deeplift_breaks_on_relu_then_maxpool(kernel, stride):
    """Captum 0.9 loses summation-to-delta when a hooked ReLU feeds a hooked MaxPool (the VGG
    pattern) with a non-trivial reference, and with overlapping pooling windows (max_unpool assigns
    instead of accumulating). propex matches a hand-written DeepLIFT and sums to the delta."""
    model = _seeded(lambda: ReluPool(kernel, stride))
    size = 8 if kernel == 2 else 9
    x = torch.randn(2, 3, size, size, dtype=DT)
    ref = 0.5 * torch.randn_like(x)
    target = torch.tensor([0, 2])
    with torch.no_grad():
        gap = (model(x) - model(ref)).gather(1, target[:, None])[:, 0]
    exp = propex.explain(model, x, "deeplift", target=target, baseline=ref)
    manual = _manual_relu_pool_deeplift(model, x, ref, target)
    torch.testing.assert_close(exp.attributions, manual, rtol=1e-9, atol=1e-12)
    assert (exp.attributions.flatten(1).sum(1) - gap).abs().max() <= 1e-10
    captum = _captum_deeplift(model, x, target, ref)
    captum_error = (captum.flatten(1).sum(1) - gap).abs().max()
    assert captum_error > 1e-3 * gap.abs().max(), "Captum's ReLU→MaxPool DeepLIFT seems fixed: compare directly"


def test_captum_deeplift_raises_on_resnet18_reused_relu(torchvision_model, image):
    model = torchvision_model("resnet18")
    x = image(1)
    with pytest.raises(RuntimeError, match="used more than once"):
        _captum_deeplift(model, x, 0, torch.zeros_like(x))


def _summation_to_delta(model, x, baseline, target=None):
    exp = propex.explain(model, x, "deeplift", target=target, baseline=baseline)
    ref = torch.zeros_like(x) if isinstance(baseline, (int, float)) else baseline
    with torch.no_grad():
        gap = (model(x) - model(ref)).gather(1, exp.target.reshape(-1, 1))[:, 0]
    total = exp.attributions.reshape(x.shape[0], -1).sum(1)
    assert torch.isfinite(exp.attributions).all()
    assert ((total - gap).abs() <= 1e-4 * gap.abs()).all(), (total, gap)
    torch.testing.assert_close(exp.delta, total - gap, rtol=0, atol=1e-6 * gap.abs().max().item())
    return exp


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_deeplift_summation_to_delta_where_captum_breaks(arch, torchvision_model, image, model_snapshot):
    model = torchvision_model(arch)
    snap = model_snapshot(model)
    x = image(2, seed=2)
    for baseline in (0, 0.3 * image(2, seed=3)):
        _summation_to_delta(model, x, baseline)
    snap.assert_unchanged()


def test_deeplift_summation_to_delta_gelu_silu_mlp():
    model = _seeded(ActMLP)
    x = torch.randn(5, 10, dtype=DT)
    exp = _summation_to_delta(model, x, 0.1 * torch.randn(5, 10, dtype=DT))
    # the secants differ from the gradient: DeepLIFT is not gradient x input here
    ixg = propex.explain(model, x, "input_x_gradient", target=exp.target).attributions
    assert _rel(exp.attributions, ixg) > 1e-3


def test_deeplift_gradient_where_delta_x_vanishes():
    """Where x equals the reference the secant is undefined: the gradient is used, and inputs equal
    to their reference get zero contribution."""
    model = _seeded(ActMLP)
    x = torch.randn(2, 10, dtype=DT)
    ref = x.clone()
    ref[:, :4] = 0.0                                      # only the first four inputs differ
    exp = propex.explain(model, x, "deeplift", target=0, baseline=ref)
    assert torch.isfinite(exp.attributions).all()
    assert (exp.attributions[:, 4:] == 0).all()
    assert exp.delta.abs().max() <= 1e-8
