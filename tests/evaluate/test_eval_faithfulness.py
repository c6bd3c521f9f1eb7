"""Faithfulness metrics: pixel flipping, region perturbation, insertion/deletion, AOPC, infidelity,
faithfulness correlation, sensitivity-n. Reference parity (Quantus 0.6, Captum), closed forms on
a linear model, the demo model's "better than random" check, and bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import propex
import propex.evaluate as ev


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data, load_digits_model
    model = load_digits_model()
    x = load_digits_data("test")[0][:16].clone()
    return model, x


def _linear_model(d_in=(2, 5, 5), seed=0):
    torch.manual_seed(seed)
    f = int(np.prod(d_in))
    lin = nn.Linear(f, 3)
    return nn.Sequential(nn.Flatten(), lin).eval(), lin


def _small_rgb_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


# --------------------------------------------------------------------------- Quantus parity
def _quantus():
    quantus = pytest.importorskip("quantus")
    warnings.filterwarnings("ignore")
    return quantus


def test_pixel_flipping_matches_quantus(demo):
    quantus = _quantus()
    model, x = demo
    x = x[:6]
    y = model(x).argmax(1)
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    # Quantus: softmax=True by default, attributions normalised by the batch-wide max (a positive
    # scale: the ranking is unchanged), baseline "black" = per-sample minimum, no k = 0 point
    q = quantus.PixelFlipping(features_in_step=4, normalise=True, perturb_baseline="black", disable_warnings=True)
    ref = np.array(q(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                     softmax=True))
    c = ev.pixel_flipping(model, x, a, y, step=4, baseline="min", softmax=True)
    assert c.scores.shape == (6, 65) and ref.shape == (6, 64)
    np.testing.assert_allclose(c.scores[:, 1:].numpy(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c.scores[:, 0], torch.softmax(model(x), 1)[torch.arange(6), y])


def test_pixel_flipping_matches_quantus_rgb_full_channel_maps():
    quantus = _quantus()
    model = _small_rgb_model()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1])
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    q = quantus.PixelFlipping(features_in_step=8, disable_warnings=True)
    ref = np.array(q(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                     softmax=False))
    c = ev.pixel_flipping(model, x, a, y, step=8, baseline="min")
    np.testing.assert_allclose(c.scores[:, 1:].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert c.fractions[-1] == 1.0 and c.fractions[1] == pytest.approx(8 / 192)


@pytest.mark.parametrize("patch,order", [(4, "morf"), (5, "lerf"), (3, "morf")])
def test_region_perturbation_matches_quantus(demo, patch, order):
    quantus = _quantus()
    model, x = demo
    x = x[:5]
    y = model(x).argmax(1)
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    q = quantus.RegionPerturbation(patch_size=patch, order=order, regions_evaluation=10, disable_warnings=True)
    ref = np.array(q(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                     softmax=True))
    c = ev.region_perturbation(model, x, a, y, patch=patch, order=order, n_regions=10, baseline="min",
                               softmax=True)
    # Quantus returns f(x) − f(x^(k)) for k = 1..K (no k = 0 point): propex's .drops
    np.testing.assert_allclose(c.drops.numpy(), ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- Captum parity
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum(demo, normalize):
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x = demo
    x = x[:5]
    y = model(x).argmax(1)
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    k = 7
    pert = 0.1 * torch.randn(5, k, *x.shape[1:], generator=torch.Generator().manual_seed(6))

    def perturb_func(inputs):   # Captum repeats each sample K times in place (row s * K + k)
        i = pert.reshape(5 * k, *x.shape[1:])
        return i, inputs - i

    ref = captum_metrics.infidelity(model, perturb_func, x, a, target=y, n_perturb_samples=k, normalize=normalize)
    mine = ev.infidelity(model, x, a, y, perturbation=pert, normalize=normalize)
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-7)
    # the callable form gives the same numbers
    mine2 = ev.infidelity(model, x, a, y, perturbation=lambda rows, kk, ss: pert[ss, kk], n_perturbations=k,
                          normalize=normalize, batch_size=4)
    torch.testing.assert_close(mine2, mine, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- closed forms
def test_pixel_flipping_linear_model_is_cumulative_sum_of_sorted_contributions():
    model, lin = _linear_model()
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 1])
    w = lin.weight[target].reshape(4, 2, 5, 5).detach()
    gxi = propex.explain(model, x, "input_x_gradient", target).attributions
    torch.testing.assert_close(gxi, w * x)
    contrib = (w * x).reshape(4, -1)
    f_x = model(x).detach()[torch.arange(4), target]
    for order, descending in (("morf", True), ("lerf", False)):
        c = ev.pixel_flipping(model, x, gxi, target, order=order, baseline="zeros")
        sorted_c = contrib.sort(dim=1, descending=descending).values
        expected = f_x[:, None] - torch.cat([torch.zeros(4, 1), sorted_c.cumsum(dim=1)], dim=1)
        torch.testing.assert_close(c.scores, expected, rtol=1e-5, atol=1e-5)
        assert c.scores.shape == (4, 51) and torch.allclose(c.fractions, torch.arange(51) / 50, atol=0, rtol=0)
        torch.testing.assert_close(c.aopc, (f_x[:, None] - expected).mean(1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c.auc, torch.trapezoid(expected, torch.arange(51) / 50.0, dim=1),
                                   rtol=1e-5, atol=1e-5)
    # insertion from a zero baseline: the bias plus the most relevant contributions first
    ins = ev.insertion(model, x, gxi, target, baseline="zeros", softmax=False, step=1)
    bias = lin.bias.detach()[target]
    expected = bias[:, None] + torch.cat([torch.zeros(4, 1), contrib.sort(1, descending=True).values.cumsum(1)], 1)
    torch.testing.assert_close(ins.scores, expected, rtol=1e-5, atol=1e-5)


def test_sensitivity_n_and_faithfulness_correlation_are_one_for_a_linear_model():
    model, lin = _linear_model()
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    gxi = propex.explain(model, x, "input_x_gradient", 1).attributions
    s = ev.sensitivity_n(model, x, gxi, 1, n=[1, 5, 20], n_subsets=30)
    assert s.shape == (3, 3)
    torch.testing.assert_close(s, torch.ones(3, 3), atol=1e-5, rtol=0)
    fc = ev.faithfulness_correlation(model, x, gxi, 1, subset_size=10, n_subsets=30)
    torch.testing.assert_close(fc, torch.ones(3), atol=1e-5, rtol=0)
    # a random map is far from 1
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert ev.faithfulness_correlation(model, x, r, 1, subset_size=10, n_subsets=30).abs().max() < 0.9


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model():
    model, lin = _linear_model()
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    grad = lin.weight[2].detach().reshape(1, 2, 5, 5).expand(3, -1, -1, -1)
    # Iᵀ∇f = f(x) − f(x − I) exactly for a linear f, whatever I
    for kw in ({"perturbation": "noise", "sigma": 0.3}, {"perturbation": "square", "patch": 2, "baseline": "mean"}):
        inf = ev.infidelity(model, x, grad, 2, n_perturbations=6, **kw)
        assert inf.shape == (3,) and float(inf.max()) < 1e-9
    # a wrong map is not
    assert float(ev.infidelity(model, x, -grad, 2).min()) > 1e-3


def test_explanations_beat_random_on_aopc(demo):
    model, x = demo
    maps = {
        "integrated_gradients": propex.explain(model, x, "integrated_gradients", n_steps=16).attributions,
        "lrp": propex.explain(model, x, "lrp").attributions,
        "occlusion": propex.explain(model, x, "occlusion", window=2, stride=2).attributions,
    }
    rand = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    random_aopc = float(ev.aopc(model, x, rand, y, patch=2).mean())
    for name, a in maps.items():
        value = float(ev.aopc(model, x, a, y, patch=2).mean())
        # measured (16 test digits, logits): IG ≈ 15, LRP ≈ 12, occlusion ≈ 14, random ≈ 7
        assert value > random_aopc + 3.0, (name, value, random_aopc)
        # and on deletion AUC (probabilities, 100 steps): lower than random
        assert float(ev.deletion(model, x, a, y).auc.mean()) < float(ev.deletion(model, x, rand, y).auc.mean()) - 0.2


# --------------------------------------------------------------------------- curve object and options
def test_curve_options_and_chunking(demo, model_snapshot):
    model, x = demo
    x = x[:4]
    a = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    snap = model_snapshot(model)
    c1 = ev.pixel_flipping(model, x, a, n_steps=10, baseline="max")
    c2 = ev.pixel_flipping(model, x, a[:, None], n_steps=10, baseline="max", batch_size=3)
    snap.assert_unchanged()
    torch.testing.assert_close(c1.scores, c2.scores)
    assert c1.scores.shape == (4, 11) and c1.fractions.shape == (11,)
    torch.testing.assert_close(c1.fractions, (torch.arange(11) * 256 // 10) / 256)
    # the last point: every pixel at the per-sample maximum
    full = x.reshape(4, -1).amax(1).reshape(4, 1, 1, 1).expand_as(x)
    y = model(x).argmax(1)
    torch.testing.assert_close(c1.scores[:, -1], model(full).detach()[torch.arange(4), y])
    # fraction stops the curve early; LeRF / random orders; other baselines run
    c3 = ev.pixel_flipping(model, x, a, step=8, fraction=0.25)
    assert c3.scores.shape == (4, 9) and float(c3.fractions[-1]) == 0.25
    for baseline in ("zeros", "mean", "blur", "noise", "uniform", 0.5, torch.zeros(1, 16, 16)):
        c = ev.pixel_flipping(model, x, a, step=64, baseline=baseline, order="lerf")
        assert c.scores.shape == (4, 5) and torch.isfinite(c.scores).all()
    r1 = ev.pixel_flipping(model, x, a, step=64, order="random", seed=3).scores
    r2 = ev.pixel_flipping(model, x, a, step=64, order="random", seed=3, batch_size=2).scores
    torch.testing.assert_close(r1, r2)
    # softmax scores are probabilities
    p = ev.deletion(model, x, a, n_steps=5).scores
    assert p.shape == (4, 6) and float(p.min()) >= 0 and float(p.max()) <= 1
    ins = ev.insertion(model, x, a, n_steps=5)
    torch.testing.assert_close(ins.scores[:, -1], torch.softmax(model(x), 1).detach()[torch.arange(4), y])
    assert "pixel_flipping" in repr(c1)


def test_scalar_metrics_are_seeded_and_chunk_independent(demo, model_snapshot):
    model, x = demo
    x = x[:3]
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    snap = model_snapshot(model)
    for fn, kw in ((ev.infidelity, {}), (ev.infidelity, {"perturbation": "square"}),
                   (ev.faithfulness_correlation, {"n_subsets": 20}), (ev.sensitivity_n, {"n": 8, "n_subsets": 20})):
        v1 = fn(model, x, a, seed=1, **kw)
        v2 = fn(model, x, a, seed=1, batch_size=5, **kw)
        v3 = fn(model, x, a, seed=2, **kw)
        assert v1.shape == (3,)
        torch.testing.assert_close(v1, v2)
        assert not torch.allclose(v1, v3)
    snap.assert_unchanged()


# --------------------------------------------------------------------------- bad input
def test_bad_input(demo):
    model, x = demo
    x = x[:2]
    a = torch.randn(x.shape)
    with pytest.raises(ValueError, match="does not match x"):
        ev.pixel_flipping(model, x, torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match x"):
        ev.infidelity(model, x, torch.randn(3, 1, 16, 16))
    with pytest.raises(ValueError, match="empty batch"):
        ev.pixel_flipping(model, x[:0], a[:0])
    bad = a.clone()
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ev.faithfulness_correlation(model, x, bad)
    for fraction in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"fraction must be a fraction in \(0, 1\]"):
            ev.pixel_flipping(model, x, a, fraction=fraction)
    with pytest.raises(ValueError, match="order"):
        ev.region_perturbation(model, x, a, order="best")
    with pytest.raises(ValueError, match="not both"):
        ev.pixel_flipping(model, x, a, step=2, n_steps=3)
    with pytest.raises(ValueError, match="larger than the image"):
        ev.region_perturbation(model, x, a, patch=32)
    with pytest.raises(ValueError, match="step must be"):
        ev.pixel_flipping(model, x, a, step=0)
    with pytest.raises(ValueError, match="not a known baseline"):
        ev.pixel_flipping(model, x, a, baseline="black")
    with pytest.raises(ValueError, match="perturbation"):
        ev.infidelity(model, x, a, perturbation="gauss")
    with pytest.raises(ValueError, match=r"\[N, K, ...\]"):
        ev.infidelity(model, x, a, perturbation=torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="subset_size"):
        ev.faithfulness_correlation(model, x, a, subset_size=1000)
    with pytest.raises(ValueError, match="target"):
        ev.pixel_flipping(model, x, a, target=12)
    with pytest.raises(TypeError, match="softmax"):
        ev.deletion(model, x, a, softmax="yes")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ev.pixel_flipping(model, x.numpy(), a)


def test_random_subsets_have_exactly_the_requested_size():
    # f(x) = Σ x on x = 1 with a zero baseline: the score drop is |S|, so a constant drop (an
    # undefined, NaN correlation) shows that every subset had exactly the requested size
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 1, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    x = torch.ones(2, 20)
    a = torch.randn(2, 20, generator=torch.Generator().manual_seed(0))
    for n in (3, 18, [3, 18]):
        s = ev.sensitivity_n(model, x, a, lambda out: out[:, 0], n=n, n_subsets=25, batch_size=7)
        assert torch.isnan(s).all(), n
    # and the attribution sums are those of the chosen subsets: a = 1 gives sums |S| too
    model_x = nn.Sequential(nn.Flatten(), nn.Linear(20, 1, bias=False))
    with torch.no_grad():
        model_x[1].weight.copy_(torch.arange(20.0)[None])
    xs = torch.rand(2, 20, generator=torch.Generator().manual_seed(1))
    gxi = model_x[1].weight.detach() * xs
    for n in (3, 18, [3, 18]):
        s = ev.sensitivity_n(model_x, xs, gxi, lambda out: out[:, 0], n=n, n_subsets=25)
        torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)
