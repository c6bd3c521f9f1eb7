"""Blur IG (Xu et al. 2020) and Guided IG (Kapishnikov et al. 2021).

Guided IG is checked against ``guided_ig_reference`` below: a slow, readable NumPy
implementation written from the paper's description (Algorithm 1 with the bounded path
of its Section 3), with the gradient of a tiny tanh MLP computed by hand.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import propex

ndimage = pytest.importorskip("scipy.ndimage")


def scipy_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return a.copy()
    return ndimage.gaussian_filter(a, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=4.0)


def _target_values(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target.reshape(-1, 1))[:, 0].double()


# ===================================================================== Blur IG
def test_blur_ig_completeness_on_demo_model(digits_model, digits_x):
    """sum(φ) ≈ f(x) − f(x blurred with σ_max); the gap is the left-Riemann error of the σ path.

    Measured on these 8 digits with the defaults (100 steps, σ_max = 50): |delta| / |f(x) − f(x(σ_max))|
    is 2 % on average and 5 % at most; with 200 steps about 1 %, with 400 steps below 0.1 %.
    """
    exp = propex.explain(digits_model, digits_x, "blur_ig")
    x_max_blur = torch.from_numpy(scipy_blur(digits_x.double().numpy(), 50.0)).float()
    gap = _target_values(digits_model, digits_x, exp.target) - _target_values(digits_model, x_max_blur, exp.target)
    total = exp.attributions.double().sum(dim=(1, 2, 3))
    assert torch.allclose(exp.delta.double(), total - gap, atol=1e-4)      # delta is the completeness gap
    rel = (total - gap).abs() / gap.abs()
    assert gap.abs().min() > 5                                              # a sizeable difference to explain
    assert rel.mean() < 0.05 and rel.max() < 0.1, rel


def test_blur_ig_completeness_improves_with_steps(digits_model, digits_x):
    x = digits_x[:2]
    rel = []
    for n in (25, 100, 200):
        exp = propex.explain(digits_model, x, "blur_ig", n_steps=n)
        gap = exp.attributions.double().sum(dim=(1, 2, 3)) - exp.delta.double()
        rel.append((exp.delta.double().abs() / gap.abs()).max().item())
    assert rel[0] > rel[1] > rel[2], rel
    assert rel[2] < 0.02


def test_blur_ig_sqrt_schedule_is_no_longer_degenerate(digits_model, digits_x):
    """With the paper's finite-difference σ-derivative, the sqrt schedule's first (largest) step sat at
    σ = 0 where that derivative vanishes: ~90 % completeness error at 100 steps. With exact path
    increments it is ~18 % (its first step, 0 → 5 px, is coarse on 16 px digits) and shrinks with n."""
    x = digits_x[:2]
    rel = []
    for n in (25, 400):
        exp = propex.explain(digits_model, x, "blur_ig", n_steps=n, schedule="sqrt")
        gap = exp.attributions.double().sum(dim=(1, 2, 3)) - exp.delta.double()
        rel.append((exp.delta.double().abs() / gap.abs()).max().item())
    assert rel[1] < rel[0] and rel[1] < 0.25, rel


class IgnoresRightHalf(nn.Module):
    """A non-linear model that only reads columns 0..7 of a 16×16 image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16 * 8, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x[..., :8])).flatten(1))


def test_blur_ig_ignored_region_gets_zero():
    model = IgnoresRightHalf().eval()
    x = torch.rand(3, 1, 16, 16)
    exp = propex.explain(model, x, "blur_ig", target=2, n_steps=20, max_sigma=8.0)
    assert torch.all(exp.attributions[..., 8:] == 0)
    assert exp.attributions[..., :8].abs().sum(dim=(1, 2, 3)).min() > 1e-3


@pytest.mark.parametrize("schedule", ["linear", "sqrt"])
def test_blur_ig_linear_model_closed_form(schedule):
    """For f = w·x the gradient is w everywhere and the exact path increments telescope:
    φ = w ⊙ (x − x(σ_max)) with x(σ) from scipy, for any number of steps and either schedule."""
    torch.manual_seed(0)
    w = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    model = lambda x: (x * w).sum(dim=(1, 2, 3)).unsqueeze(1)            # noqa: E731
    x = torch.rand(3, 2, 6, 7, dtype=torch.float64)
    for n in (3, 30):
        exp = propex.explain(model, x, "blur_ig", target=0, n_steps=n, max_sigma=6.0, schedule=schedule)
        want = w.numpy() * (x.numpy() - scipy_blur(x.numpy(), 6.0))
        np.testing.assert_allclose(exp.attributions.numpy(), want, atol=1e-10)
        assert exp.delta.abs().max() < 1e-10


# ===================================================================== Guided IG
def test_guided_ig_linear_model_is_x_minus_baseline_times_w():
    """For f = w·x every path gives (x − x')·w: exact whatever fraction/max_dist pick."""
    torch.manual_seed(0)
    lin = nn.Linear(20, 3).eval()
    x, base = torch.randn(4, 20), torch.randn(4, 20)
    x[:, :3] = base[:, :3]                                 # features that do not move at all
    for fraction, max_dist, n in ((0.25, 0.02, 16), (0.1, 1.0, 7), (1.0, 0.0, 5)):
        exp = propex.explain(lin, x, "guided_ig", target=1, baseline=base, n_steps=n,
                             fraction=fraction, max_dist=max_dist)
        assert torch.allclose(exp.attributions, (x - base) * lin.weight[1].detach(), atol=1e-5)
        assert exp.delta.abs().max() < 1e-4


def test_guided_ig_linear_tuple_inputs():
    model = lambda a, b: (a * 2.0).sum(1, keepdim=True) - (b * torch.arange(3.0)).sum(1, keepdim=True)  # noqa: E731
    a, b = torch.randn(2, 4), torch.randn(2, 3)
    ga, gb = propex.explain(model, (a, b), "guided_ig", target=0, n_steps=8).attributions
    assert torch.allclose(ga, 2 * a, atol=1e-5)
    assert torch.allclose(gb, -b * torch.arange(3.0), atol=1e-5)


def test_guided_ig_completeness_on_demo_model(digits_model, digits_x):
    """Measured: |delta| / |f(x) − f(0)| ≈ 2 % at 16 steps, 1.2 % at 32, 0.6 % at 64."""
    x = digits_x[:2]
    exp = propex.explain(digits_model, x, "guided_ig", n_steps=32)
    gap = _target_values(digits_model, x, exp.target) - _target_values(digits_model, torch.zeros_like(x), exp.target)
    total = exp.attributions.double().sum(dim=(1, 2, 3))
    assert torch.allclose(exp.delta.double(), total - gap, atol=1e-4)
    rel = (total - gap).abs() / gap.abs()
    assert rel.max() < 0.03, rel
    # Guided IG really takes a different path than IG
    ig = propex.explain(digits_model, x, "ig", n_steps=32).attributions
    assert (exp.attributions - ig).abs().max() > 0.01


def test_guided_ig_one_target_per_sample_only(digits_model, digits_x):
    with pytest.raises(ValueError, match="one target per sample"):
        propex.explain(digits_model, digits_x[:2], "guided_ig", target=[[1, 2], [3, 4]], n_steps=2)


# ---------------------------------------------------------------- the independent reference
def guided_ig_reference(x, baseline, grad_fn, n_steps, fraction, max_dist):
    """Guided IG for one sample, from Kapishnikov et al. (CVPR 2021), Algorithm 1 + bounded path.

    The path starts at the baseline. Step t = 1..T aims at α = t/T: the L1 distance to x must shrink
    to (1 − α)·‖x − x'‖₁. The gradient g is taken once, at the point where the step starts. Within the
    step, repeatedly:
      * a feature may not lag more than ``max_dist`` behind the straight line (its progress
        (z_i − x'_i)/(x_i − x'_i) ≥ α − max_dist: laggards jump to that bound), nor run more than
        ``max_dist`` ahead of it (upper bound α + max_dist);
      * from the features not yet at their upper bound, the ones whose |g_i| is within the lowest
        ``fraction`` of all features (those at the bound counting as +∞) move towards their upper
        bound — all the way, or, if that would overshoot the step's L1 target, the same fraction γ
        of their remaining way so that the target is met exactly;
      * every move adds g_i·Δz_i to feature i's attribution.
    """
    x, baseline = np.asarray(x, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    span = x - baseline
    d_total = np.abs(span).sum()
    z = baseline.copy()
    attr = np.zeros_like(x)
    k_lowest = int(np.floor(fraction * (x.size - 1)))       # index of the fraction-quantile ("lower")
    for t in range(1, n_steps + 1):
        alpha = t / n_steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        lower_bound, upper_bound = baseline + lo * span, baseline + hi * span
        d_target = (1 - alpha) * d_total
        g = grad_fn(z)
        at_bound = np.zeros(x.size, dtype=bool)
        while True:
            z_before = z.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                progress = np.where(span != 0, (z - baseline) / span, hi)
            laggards = progress < lo
            z[laggards] = lower_bound[laggards]
            d_now = np.abs(z - x).sum()
            if abs(d_now - d_target) <= 1e-9 * max(1.0, d_target):
                attr += g * (z - z_before)
                break
            at_bound |= z == upper_bound
            magnitude = np.where(at_bound, np.inf, np.abs(g))
            threshold = np.sort(magnitude)[k_lowest]
            chosen = (magnitude <= threshold) & ~at_bound
            remaining = np.abs(upper_bound - z)[chosen].sum()
            gamma = (d_now - d_target) / remaining if remaining > 0 else np.inf
            if gamma > 1:
                z[chosen] = upper_bound[chosen]
            else:
                z[chosen] = z[chosen] + gamma * (upper_bound[chosen] - z[chosen])
            attr += g * (z - z_before)
            if not chosen.any():
                break
    return attr


class TinyMLP:
    """f_c(x) = V_c · tanh(W x + b) + c_c, with its hand-written gradient."""

    def __init__(self, d_in=12, d_hidden=9, d_out=3, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(d_hidden, d_in)) / np.sqrt(d_in)
        self.b = rng.normal(size=d_hidden) * 0.1
        self.V = rng.normal(size=(d_out, d_hidden))
        self.c = rng.normal(size=d_out)

    def value(self, x, cls):
        return self.V[cls] @ np.tanh(self.W @ x + self.b) + self.c[cls]

    def grad(self, x, cls):
        return self.W.T @ (self.V[cls] * (1 - np.tanh(self.W @ x + self.b) ** 2))

    def torch_module(self):
        net = nn.Sequential(nn.Linear(self.W.shape[1], self.W.shape[0]), nn.Tanh(),
                            nn.Linear(self.W.shape[0], self.V.shape[0])).double().eval()
        with torch.no_grad():
            net[0].weight.copy_(torch.from_numpy(self.W))
            net[0].bias.copy_(torch.from_numpy(self.b))
            net[2].weight.copy_(torch.from_numpy(self.V))
            net[2].bias.copy_(torch.from_numpy(self.c))
        return net


def test_reference_implementation_is_sane():
    """The reference itself: linear f gives (x − x')·w; on the MLP it is complete for many steps."""
    rng = np.random.default_rng(1)
    x, base, w = rng.normal(size=10), rng.normal(size=10), rng.normal(size=10)
    np.testing.assert_allclose(guided_ig_reference(x, base, lambda z: w, 9, 0.3, 0.05), (x - base) * w, atol=1e-10)
    mlp = TinyMLP()
    x = rng.normal(size=12)
    attr = guided_ig_reference(x, np.zeros(12), lambda z: mlp.grad(z, 1), 400, 0.25, 0.02)
    assert abs(attr.sum() - (mlp.value(x, 1) - mlp.value(np.zeros(12), 1))) < 1e-2


@pytest.mark.parametrize("fraction,max_dist,n_steps,baseline", [
    (0.25, 0.02, 16, "zeros"),
    (0.1, 0.1, 12, "random"),
    (0.5, 1.0, 8, "random"),
    (1.0, 0.0, 6, "zeros"),                # degenerates to the straight line: IG with right Riemann sums
])
def test_guided_ig_matches_reference(fraction, max_dist, n_steps, baseline):
    mlp = TinyMLP()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 12))
    base = rng.normal(size=(4, 12)) if baseline == "random" else np.zeros((4, 12))
    x[:, 0] = base[:, 0]                   # one feature that never moves
    target = np.array([0, 1, 2, 1])
    exp = propex.explain(mlp.torch_module(), torch.from_numpy(x), "guided_ig", target=torch.from_numpy(target),
                         baseline=torch.from_numpy(base), n_steps=n_steps, fraction=fraction, max_dist=max_dist)
    want = np.stack([guided_ig_reference(x[i], base[i], lambda z, c=target[i]: mlp.grad(z, c), n_steps,
                                         fraction, max_dist) for i in range(4)])
    assert exp.attributions.dtype == torch.float64
    np.testing.assert_allclose(exp.attributions.numpy(), want, atol=1e-8, rtol=1e-7)
    assert np.abs(want).max() > 0.1
    if fraction == 1.0 and max_dist == 0.0:
        # every feature moves to α = t/T each step with the gradient taken at (t − 1)/T: left-Riemann IG
        ig = propex.explain(mlp.torch_module(), torch.from_numpy(x), "ig", target=torch.from_numpy(target),
                            baseline=torch.from_numpy(base), n_steps=n_steps, integration="riemann_left")
        np.testing.assert_allclose(exp.attributions.numpy(), ig.attributions.numpy(), atol=1e-10)
