"""The gradient engine: chunking, memory budget, several targets, grad modes, dtypes, layers,
and the simple identities between the gradient methods."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex


class Counting(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.inner(x)


def _method_opts(refs):
    return {
        "integrated_gradients": dict(n_steps=6),
        "smoothgrad": dict(n_samples=5, seed=3),
        "vargrad": dict(n_samples=5, seed=3),
        "expected_gradients": dict(baseline=refs, n_samples=5, seed=1),
        "blur_ig": dict(n_steps=6, max_sigma=4.0),
        "guided_ig": dict(n_steps=4),
    }


def _close(a, b, tol=1e-5):
    scale = max(1.0, b.abs().max().item())
    return (a - b).abs().max().item() <= tol * scale


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "vargrad", "expected_gradients",
                                    "blur_ig", "guided_ig"])
def test_results_do_not_depend_on_batch_size(digits_model, digits_x, digits_refs, method):
    x = digits_x[:3]
    opts = _method_opts(digits_refs)[method]
    runs = {b: propex.explain(digits_model, x, method, batch_size=b, **opts) for b in (1, 7, None)}
    ref = runs[None]
    assert ref.attributions.abs().sum() > 0
    for b in (1, 7):
        assert _close(runs[b].attributions, ref.attributions), (method, b)
        assert torch.equal(runs[b].target, ref.target)
        if ref.delta is not None:
            assert _close(runs[b].delta, ref.delta, 1e-4)


def test_small_memory_budget_forces_chunks_same_result(digits_model, digits_x):
    x = digits_x[:4]
    big, small = Counting(digits_model).eval(), Counting(digits_model).eval()
    a = propex.explain(big, x, "ig", n_steps=8)
    b = propex.explain(small, x, "ig", n_steps=8, memory_budget=20_000)   # 20 kB: a few points per chunk
    n_points = 4 * 8
    assert max(big.batches) == n_points                # the default budget fits all 32 points at once
    assert max(small.batches[1:]) < n_points           # [0] is the forward pass on x itself
    assert sum(small.batches[1:]) >= n_points
    assert _close(a.attributions, b.attributions)
    c = propex.explain(digits_model, x, "ig", n_steps=8, memory_budget="20kB")
    assert _close(c.attributions, b.attributions)


def test_batch_size_bounds_every_chunk(digits_model, digits_x):
    counted = Counting(digits_model).eval()
    propex.explain(counted, digits_x[:3], "smoothgrad", n_samples=5, batch_size=4, seed=0)
    assert max(counted.batches[1:]) <= 4
    assert sum(counted.batches[1:]) == 15


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                                    "expected_gradients", "blur_ig"])
def test_several_targets_at_once(digits_model, digits_x, digits_refs, method):
    x = digits_x[:4]
    opts = _method_opts(digits_refs).get(method, {})
    targets = torch.tensor([[0, 3, 9], [1, 2, 2], [4, 4, 5], [7, 8, 0]])
    counted = Counting(digits_model).eval()
    multi = propex.explain(counted, x, method, target=targets, **opts)
    n_calls_multi = len(counted.batches)
    assert multi.attributions.shape == (4, 3, 1, 16, 16)
    assert torch.equal(multi.target, targets)
    counted.batches.clear()
    for t in range(3):
        single = propex.explain(counted, x, method, target=targets[:, t], **opts)
        assert _close(multi.attributions[:, t], single.attributions), t
        if single.delta is not None:
            assert multi.delta.shape == (4, 3)
            assert _close(multi.delta[:, t], single.delta, 1e-4)
    # T targets cost one batched pass, not T loops over the model
    assert n_calls_multi <= len(counted.batches) / 3


def test_explain_under_no_grad_and_inference_mode(digits_model, digits_x):
    x = digits_x[:3]
    ref = propex.explain(digits_model, x, "ig", n_steps=8).attributions
    with torch.no_grad():
        a = propex.explain(digits_model, x, "ig", n_steps=8).attributions
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        b = propex.explain(digits_model, x, "ig", n_steps=8).attributions
        x_inf = x.clone()
    c = propex.explain(digits_model, x_inf, "ig", n_steps=8).attributions   # an inference tensor as input
    for other in (a, b, c):
        assert torch.allclose(other, ref, atol=1e-6)


def test_float64_model(digits_model, digits_x):
    model64 = propex.models.load_digits_model().double()
    x = digits_x[:3]
    e64 = propex.explain(model64, x.double(), "ig", n_steps=64)
    e32 = propex.explain(digits_model, x, "ig", n_steps=64)
    assert e64.attributions.dtype == torch.float64 and e64.delta.dtype == torch.float64
    assert e64.delta.abs().max() < 1e-7                 # float64 removes float32's rounding floor
    assert torch.allclose(e64.attributions.float(), e32.attributions, atol=1e-4)
    s = propex.explain(model64, x.double(), "smoothgrad", n_samples=3, seed=0).attributions
    assert s.dtype == torch.float64


# ---------------------------------------------------------------- identities between methods
def test_smoothgrad_one_noiseless_sample_is_saliency(digits_model, digits_x):
    sal = propex.explain(digits_model, digits_x, "saliency").attributions
    sg = propex.explain(digits_model, digits_x, "smoothgrad", n_samples=1, noise_level=0).attributions
    assert torch.equal(sg, sal)
    model64 = propex.models.load_digits_model().double()
    vg = propex.explain(model64, digits_x.double(), "vargrad", n_samples=3, noise_level=0).attributions
    assert vg.abs().max() < 1e-12


def test_vargrad_is_never_negative_in_float32(digits_model, digits_x):
    vg = propex.explain(digits_model, digits_x, "vargrad", n_samples=3, noise_level=0).attributions
    assert vg.min() >= 0
    assert vg.max() < 1e-10


def test_input_x_gradient_is_x_times_saliency(digits_model, digits_x):
    sal = propex.explain(digits_model, digits_x, "saliency", target=2).attributions
    ixg = propex.explain(digits_model, digits_x, "input_x_gradient", target=2).attributions
    assert torch.allclose(ixg, sal * digits_x, atol=1e-7)


def test_saliency_matches_manual_autograd(digits_model, digits_x):
    x = digits_x.clone().requires_grad_()
    out = digits_model(x)
    target = out.argmax(dim=1)
    grad, = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    exp = propex.explain(digits_model, digits_x, "saliency")
    assert torch.equal(exp.target, target)
    assert torch.allclose(exp.attributions, grad, atol=1e-7)
    assert torch.allclose(propex.explain(digits_model, digits_x, "saliency", abs=True).attributions, grad.abs(), atol=1e-7)


def test_smoothgrad_with_explicit_noise_is_the_mean_gradient(digits_model, digits_x):
    x = digits_x[:3]
    noise = torch.randn(3, 4, 1, 16, 16) * 0.1
    sg = propex.explain(digits_model, x, "smoothgrad", target=5, n_samples=4, noise=noise).attributions
    grads = []
    for k in range(4):
        xk = (x + noise[:, k]).requires_grad_()
        grads.append(torch.autograd.grad(digits_model(xk)[:, 5].sum(), xk)[0])
    assert torch.allclose(sg, torch.stack(grads).mean(0), atol=1e-6)
    sq = propex.explain(digits_model, x, "smoothgrad", target=5, n_samples=4, noise=noise, squared=True).attributions
    assert torch.allclose(sq, (torch.stack(grads) ** 2).mean(0), atol=1e-7)
    vg = propex.explain(digits_model, x, "vargrad", target=5, n_samples=4, noise=noise).attributions
    # float32 one-pass variance: rounding of order eps · E[g²] (see the xfail test above)
    assert torch.allclose(vg, torch.stack(grads).var(0, unbiased=False), atol=1e-6)


def test_vargrad_of_quadratic_is_noise_variance():
    """f = Σ c x²/2 has gradient c(x + ε): VarGrad = c²σ² with σ = noise_level · (max x − min x) per sample."""
    c = 2.0
    model = _Quadratic(c).eval()
    x = torch.stack([torch.linspace(0, 1, 50), torch.linspace(-2, 2, 50)])   # ranges 1 and 4
    vg = propex.explain(model, x, "vargrad", target=0, n_samples=400, noise_level=0.1, seed=0).attributions
    sigma = torch.tensor([0.1, 0.4])
    want = c ** 2 * sigma ** 2
    got = vg.mean(dim=1)
    assert torch.allclose(got, want, rtol=0.05), (got, want)
    sg = propex.explain(model, x, "smoothgrad", target=0, n_samples=400, noise_level=0.1, seed=0).attributions
    assert torch.allclose(sg, c * x, atol=4 * c * 0.4 / 400 ** 0.5)        # E[c(x + ε)] = c x


class _Quadratic(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return (self.c * x ** 2 / 2).sum(dim=1, keepdim=True)


def test_seeds_make_noise_reproducible(digits_model, digits_x):
    x = digits_x[:2]
    a = propex.explain(digits_model, x, "smoothgrad", n_samples=3, seed=11).attributions
    b = propex.explain(digits_model, x, "smoothgrad", n_samples=3, seed=11).attributions
    c = propex.explain(digits_model, x, "smoothgrad", n_samples=3, seed=12).attributions
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_expected_gradients_of_linear_model():
    """For f = w·x + b every α gives the same gradient: EG = mean_k (x − r_{i_k})·w, exactly complete."""
    lin = nn.Linear(5, 2).eval()
    x, refs = torch.randn(3, 5), torch.randn(4, 5)
    idx = torch.tensor([[0, 1, 1], [3, 3, 3], [2, 0, 1]])
    exp = propex.explain(lin, x, "expected_gradients", target=1, baseline=refs, n_samples=3,
                         baseline_indices=idx, seed=0)
    w = lin.weight[1].detach()
    want = torch.stack([((x[i] - refs[idx[i]]) * w).mean(0) for i in range(3)])
    assert torch.allclose(exp.attributions, want, atol=1e-6)
    assert exp.delta.abs().max() < 1e-5


# ---------------------------------------------------------------- layers
def _manual_layer_grad(model, x, layer, target, use_input):
    store = {}

    def fwd(m, args, out):
        out.retain_grad()
        store["t"] = out

    def pre(m, args):
        t = args[0].detach().requires_grad_()
        store["t"] = t
        return (t,)

    handle = layer.register_forward_pre_hook(pre) if use_input else layer.register_forward_hook(fwd)
    try:
        out = model(x)
        out.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return store["t"].grad


@pytest.mark.parametrize("use_input", [False, True])
def test_layer_saliency_is_gradient_wrt_layer(use_input, digits_x):
    model = propex.models.load_digits_model()
    layer = model.features[4]
    target = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    want = _manual_layer_grad(model, digits_x, layer, target, use_input)
    got = propex.explain(model, digits_x, "saliency", target=target, layer="features.4", layer_input=use_input)
    assert got.attributions.shape == ((8, 32, 16, 16) if use_input else (8, 32, 8, 8))
    assert torch.allclose(got.attributions, want, atol=1e-7)
    by_module = propex.explain(model, digits_x, "saliency", target=target, layer=layer, layer_input=use_input)
    assert torch.equal(by_module.attributions, got.attributions)


def test_layer_ig_matches_manual_path_integral(digits_model, digits_x):
    """Layer IG: the layer's output is moved from its value on the baseline to its value on x."""
    x = digits_x[:3]
    layer = digits_model.features[5]
    target = torch.tensor([1, 2, 3])
    n = 8
    captured = {}
    h = layer.register_forward_hook(lambda m, a, o: captured.__setitem__("v", o.detach()))
    with torch.no_grad():
        digits_model(x)
        h_x = captured["v"]
        digits_model(torch.zeros_like(x))
        h_b = captured["v"]
    h.remove()
    total = torch.zeros_like(h_x)
    for k in range(n):
        alpha = (k + 0.5) / n
        point = (h_b + alpha * (h_x - h_b)).requires_grad_()
        hh = layer.register_forward_hook(lambda m, a, o, p=point: p)
        try:
            out = digits_model(x)
        finally:
            hh.remove()
        total += torch.autograd.grad(out.gather(1, target[:, None]).sum(), point)[0] / n
    want = (h_x - h_b) * total
    exp = propex.explain(digits_model, x, "ig", target=target, layer="features.5", n_steps=n,
                         integration="riemann_middle")
    assert torch.allclose(exp.attributions, want, atol=1e-5)
    # completeness in layer space: f(x) − f(baseline) as the baseline input flows through the layer
    with torch.no_grad():
        gap = (digits_model(x) - digits_model(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    assert torch.allclose(exp.attributions.sum(dim=(1, 2, 3)) - gap, exp.delta, atol=1e-4)
    assert (exp.delta.abs() / gap.abs()).max() < 0.05


class _InplaceNet(nn.Module):
    """torchvision style: the layer's output is consumed by an in-place add and an in-place ReLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        h = self.conv(x)
        h += x                                  # residual add_, in place on the layer's output
        return self.fc(self.relu(h).flatten(1))


def test_layer_followed_by_inplace_ops():
    model = _InplaceNet().eval()
    x = torch.randn(3, 1, 6, 6)
    target = torch.tensor([0, 1, 3])
    store = {}

    def hook(m, a, out):
        store["leaf"] = out.detach().clone().requires_grad_()
        return store["leaf"] * 1                 # a non-leaf the in-place ReLU may overwrite

    h = model.conv.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    want = torch.autograd.grad(out.gather(1, target[:, None]).sum(), store["leaf"])[0]
    sal = propex.explain(model, x, "saliency", target=target, layer="conv").attributions
    assert torch.allclose(sal, want, atol=1e-6)
    # the captured layer value on x is the conv output itself, not the one overwritten in place:
    # layer IG with many steps is complete, g(conv(x)) − g(conv(0)) with g(h) = fc(relu(h + x))
    ig = propex.explain(model, x, "ig", target=target, layer="conv", n_steps=256, integration="riemann_middle")
    with torch.no_grad():
        g = lambda h: model.fc(torch.relu(h + x).flatten(1)).gather(1, target[:, None])[:, 0]  # noqa: E731
        gap = g(model.conv(x)) - g(model.conv(torch.zeros_like(x)))
    assert gap.abs().min() > 0.1
    assert torch.allclose(ig.attributions.sum(dim=(1, 2, 3)), gap, atol=5e-3)
    ixg = propex.explain(model, x, "input_x_gradient", target=target, layer="conv").attributions
    with torch.no_grad():
        conv_out = model.conv(x)
    assert torch.allclose(ixg, conv_out * want, atol=1e-6)


def test_uniform_baseline_is_seeded_and_within_each_samples_range():
    lin = nn.Linear(30, 2).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.rand(2, 30) + 0.5)              # no zero weights: b = x − φ / w is recoverable
    x = torch.stack([torch.linspace(0, 1, 30), torch.linspace(-5, 3, 30)])
    a = propex.explain(lin, x, "ig", target=0, baseline="uniform", seed=5, n_steps=2).attributions
    b = propex.explain(lin, x, "ig", target=0, baseline="uniform", seed=5, n_steps=2).attributions
    c = propex.explain(lin, x, "ig", target=0, baseline="uniform", seed=6, n_steps=2).attributions
    assert torch.equal(a, b) and not torch.allclose(a, c)
    base = x - a / lin.weight[0].detach()
    assert torch.all(base[0] >= -1e-5) and torch.all(base[0] <= 1 + 1e-5)
    assert torch.all(base[1] >= -5 - 1e-5) and torch.all(base[1] <= 3 + 1e-5)
    assert base[1].std() > 1.0                                   # spread over the sample's range, not constant
