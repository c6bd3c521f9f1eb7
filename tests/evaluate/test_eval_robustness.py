"""Robustness metrics: max-/avg-sensitivity, local Lipschitz estimate, map stability."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import propex
from propex.evaluate import avg_sensitivity, local_lipschitz, map_stability, max_sensitivity




@pytest.fixture(scope="module")
def digits64():
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data, load_digits_model
    model = load_digits_model().double()
    x = load_digits_data("test")[0][:6].double()
    return model, x, model(x).argmax(1)


def _np_saliency(model, inputs, targets, **kwargs):
    return propex.explain(model, torch.as_tensor(inputs), "saliency", torch.as_tensor(targets)).attributions.numpy()


def _quantus_noise(seed, k, shape, kind):
    """The noise Quantus draws: one global-numpy batch [N, F] per step."""
    np.random.seed(seed)
    n = shape[0]
    f = int(np.prod(shape[1:]))
    draws = [np.random.uniform(-0.2, 0.2, size=(n, f)) if kind == "uniform" else np.random.normal(0, 0.1, size=(n, f))
             for _ in range(k)]
    return torch.from_numpy(np.stack(draws)).reshape(k, *shape)


@pytest.mark.parametrize("name", ["MaxSensitivity", "AvgSensitivity", "LocalLipschitzEstimate"])
def test_matches_quantus(digits64, name, model_snapshot):
    quantus = pytest.importorskip("quantus")
    model, x, y = digits64
    snap = model_snapshot(model)
    k = 5
    a = _np_saliency(model, x.numpy(), y.numpy())
    # Quantus' settings made explicit: uniform noise in [-0.2, 0.2] (max/avg), N(0, 0.1²)
    # (Lipschitz), no normalisation (LocalLipschitzEstimate normalises by the batch-wide max by default),
    # logits, noise from the global numpy RNG with a fixed seed.
    kwargs = dict(nr_samples=k, disable_warnings=True)
    if name == "LocalLipschitzEstimate":
        kwargs["normalise"] = False
    else:
        kwargs["lower_bound"] = 0.2
    metric = getattr(quantus, name)(**kwargs)
    np.random.seed(11)
    ref = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.copy(),
                            explain_func=_np_saliency, softmax=False))
    noise = _quantus_noise(11, k, tuple(x.shape), "gaussian" if name == "LocalLipschitzEstimate" else "uniform")
    fn = {"MaxSensitivity": max_sensitivity, "AvgSensitivity": avg_sensitivity,
          "LocalLipschitzEstimate": local_lipschitz}[name]
    ours = fn(model, x, "saliency", target=y, perturbations=noise)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)
    assert ours.shape == (6,) and (ours > 0).all()
    snap.assert_unchanged()


def test_max_sensitivity_matches_captum(digits64):
    pytest.importorskip("captum")
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max
    model, x, y = digits64
    k = 4
    g = torch.Generator().manual_seed(2)
    noise = (2 * torch.rand(k, *x.shape, generator=g, dtype=x.dtype) - 1) * 0.05
    ours = max_sensitivity(model, x, "saliency", target=y, perturbations=noise, method_options={"abs": True})

    def perturb(inputs, radius):      # Captum stacks the perturbations sample-major (repeat_interleave)
        return inputs + noise.transpose(0, 1).reshape(-1, *x.shape[1:])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # Captum: "Input Tensor 0 did not already require gradients"
        ref = sensitivity_max(Saliency(model).attribute, x, perturb_func=perturb, n_perturb_samples=k, target=y)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=0)


def _linear():
    torch.manual_seed(0)
    lin = nn.Linear(12, 3)
    return lin


def test_closed_forms_on_a_linear_model():
    model = _linear()
    x = torch.randn(4, 12, dtype=torch.float32)
    w = model.weight.detach()
    target = 1
    # saliency of a linear model is constant: sensitivity 0
    assert torch.all(max_sensitivity(model, x, "saliency", target, radius=0.1) == 0)
    # grad x input: a(x + d) - a(x) = w * d; with sign noise ±r, ||w * d|| = r ||w||
    r = 0.05
    s = max_sensitivity(model, x, "input_x_gradient", target, radius=r, noise="sign", relative=False)
    torch.testing.assert_close(s, torch.full((4,), r * float(w[target].norm())), rtol=1e-5, atol=1e-7)
    rel = avg_sensitivity(model, x, "input_x_gradient", target, radius=r, noise="sign")
    torch.testing.assert_close(rel, r * float(w[target].norm()) / (w[target] * x).norm(dim=1), rtol=1e-5, atol=1e-7)
    # Lipschitz quotient with sign noise: r ||w|| / (r sqrt(F))
    lip = local_lipschitz(model, x, "input_x_gradient", target, radius=r, noise="sign")
    torch.testing.assert_close(lip, torch.full((4,), float(w[target].norm()) / 12 ** 0.5), rtol=1e-5, atol=1e-7)


def test_explanations_are_batched_and_chunk_independent(digits_model, digits_x):
    x = digits_x[:4]
    calls = []

    def counting(model, inputs, target):
        calls.append(inputs.shape[0])
        return propex.explain(model, inputs, "saliency", target).attributions

    full = max_sensitivity(digits_model, x, counting, n_samples=10, seed=3)
    assert calls == [4, 40]                     # x, then all 10 perturbations of 4 samples at once
    calls.clear()
    chunked = max_sensitivity(digits_model, x, counting, n_samples=10, seed=3, batch_size=12)
    assert calls == [4, 12, 12, 12, 4]          # 3 perturbations (12 rows) per call
    torch.testing.assert_close(full, chunked)
    calls.clear()
    max_sensitivity(digits_model, x, counting, n_samples=10, seed=3, batch_size=3)   # fewer rows than samples
    assert calls[0] == 4 and max(calls[1:]) <= 3 and sum(calls[1:]) == 40
    assert not torch.equal(full, max_sensitivity(digits_model, x, "saliency", n_samples=10, seed=4))
    # the mean is below the max
    assert torch.all(avg_sensitivity(digits_model, x, "saliency", n_samples=10, seed=3) <= full + 1e-7)


def test_target_is_frozen_on_x(digits_model, digits_x):
    x = digits_x[:3]
    seen = []

    def record(model, inputs, target):
        seen.append(target.clone())
        return propex.explain(model, inputs, "saliency", target).attributions

    max_sensitivity(digits_model, x, record, n_samples=2, radius=0.5)
    top = digits_model(x).argmax(1)
    assert torch.equal(seen[0], top) and torch.equal(seen[1], top.repeat(2))


def test_map_stability_model_independent_map_is_stable():
    model = _linear()
    x = torch.randn(3, 12)
    const = lambda m, inputs, target: m.weight[1].detach().expand_as(inputs).clone()   # noqa: E731
    for attack in ("random_sign", "topk", "center"):
        r = map_stability(model, x, const, 1, attack=attack, epsilon=0.1, k=3, n_steps=2, n_candidates=3)
        assert torch.all(r.spearman == 1) and torch.all(r.topk_intersection == 1), attack
        if attack != "random_sign":
            assert not r.changed.any()          # nothing improves the objective
            assert torch.equal(r.x_perturbed, x)


def test_map_stability_keeps_the_prediction_and_the_ball(digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)
    x = digits_x[:6]
    eps = 0.15
    base = digits_model(x).argmax(1)
    rand = map_stability(digits_model, x, "saliency", attack="random_sign", epsilon=eps, seed=1)
    topk = map_stability(digits_model, x, "saliency", attack="topk", epsilon=eps, k=0.1, n_steps=6,
                         n_candidates=6, clamp=(0.0, 1.0), seed=1)
    centre = map_stability(digits_model, x, "saliency", attack="center", epsilon=eps, n_steps=6,
                           n_candidates=6, seed=1)
    for r in (rand, topk, centre):
        assert r.spearman.shape == (6,) and r.topk_intersection.shape == (6,)
        assert (r.x_perturbed - x).abs().max() <= eps + 1e-6
        kept = digits_model(r.x_perturbed).argmax(1) == base
        assert kept.all()
        assert torch.all(r.spearman[r.changed] < 1)
    assert topk.x_perturbed.min() >= 0 and topk.x_perturbed.max() <= 1
    # random sign moves every pixel by exactly eps (where the prediction allowed it)
    moved = (rand.x_perturbed - x).abs()[rand.changed]
    assert torch.allclose(moved, torch.full_like(moved, eps))
    # the attacks reach their objective better than a random sign perturbation of the same size
    initial = 1 - _topk_mass(topk.maps, topk.maps, 0.1)
    assert torch.all(topk.objective >= initial - 1e-6) and topk.changed.any()
    assert topk.topk_intersection.mean() <= rand.topk_intersection.mean() + 1e-6
    assert torch.all(centre.objective[centre.changed] > 0)
    snap.assert_unchanged()


def _topk_mass(m0, m1, frac):
    n = m0.shape[0]
    f0, f1 = m0.reshape(n, -1), m1.reshape(n, -1)
    k = max(1, round(frac * f0.shape[1]))
    idx = torch.topk(f0, k, dim=1).indices
    return f1.gather(1, idx).sum(1) / f1.sum(1)


def test_map_stability_label_constraint_on_a_knife_edge():
    # two classes, sample 0 sits almost on the decision boundary: many sign flips change its label
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[0.01, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    ident = lambda m, inputs, target: inputs.clone()       # noqa: E731
    r = map_stability(model, x, ident, attack="random_sign", epsilon=0.1, n_samples=16, seed=0, k=2)
    assert (model(r.x_perturbed).argmax(1) == 0).all()
    assert r.changed.all()
    # with a single draw that flips the label, sample 0 gets no perturbation and NaN scores
    for seed in range(20):
        r = map_stability(model, x, ident, attack="random_sign", epsilon=0.1, n_samples=1, seed=seed, k=2)
        if not r.changed[0]:
            assert torch.isnan(r.spearman[0]) and torch.equal(r.x_perturbed[0], x[0])
            break
    else:
        pytest.fail("no seed produced a label flip")


def test_bad_input(digits_model, digits_x):
    x = digits_x[:2]
    with pytest.raises(ValueError, match="perturbations"):
        max_sensitivity(digits_model, x, "saliency", perturbations=torch.zeros(3, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="noise"):
        max_sensitivity(digits_model, x, "saliency", noise="laplace")
    with pytest.raises(TypeError, match="unknown option"):
        max_sensitivity(digits_model, x, "saliency", method_options={"n_stepz": 3})
    with pytest.raises(ValueError, match="not a known method"):
        avg_sensitivity(digits_model, x, "salency")
    with pytest.raises(ValueError, match="empty"):
        max_sensitivity(digits_model, x[:0], "saliency")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        local_lipschitz(digits_model, bad, "saliency")
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(digits_model, x, "saliency", radius=0)
    with pytest.raises(ValueError, match="attack"):
        map_stability(digits_model, x, "saliency", attack="pgd")
    with pytest.raises(ValueError, match="epsilon"):
        map_stability(digits_model, x, "saliency", epsilon=-1.0)
    with pytest.raises(ValueError, match="k must be"):
        map_stability(digits_model, x, "saliency", k=10_000)
    with pytest.raises(ValueError, match="does not match"):
        max_sensitivity(digits_model, x, lambda m, i, t: torch.zeros(i.shape[0], 5))


def test_model_left_as_found_with_a_careless_explainer(digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)

    def careless(model, inputs, target):
        model.train()                                   # a user's callable that forgets to restore
        for p in model.parameters():
            p.requires_grad_(False)
        return inputs * 2

    max_sensitivity(digits_model, digits_x[:2], careless, n_samples=2)
    map_stability(digits_model, digits_x[:2], careless, attack="topk", n_steps=1, n_candidates=2)
    snap.assert_unchanged()


def test_map_stability_explains_all_candidates_together(digits_model, digits_x):
    x = digits_x[:4]
    calls = []

    def counting(model, inputs, target):
        calls.append(inputs.shape[0])
        return propex.explain(model, inputs, "saliency", target).attributions

    map_stability(digits_model, x, counting, attack="center", n_steps=2, n_candidates=3)
    assert calls == [4, 12, 12]          # x, then 3 candidates x 4 samples per step in one call
    calls.clear()
    map_stability(digits_model, x, counting, attack="random_sign", n_samples=5)
    assert calls == [4, 4]               # the label check needs no explanation; one call for the chosen x'


def _differentiable_saliency(model, inputs, target):
    inputs = inputs if inputs.requires_grad else inputs.detach().requires_grad_()
    score = model(inputs).gather(1, target.reshape(-1, 1)).sum()
    return torch.autograd.grad(score, inputs, create_graph=True)[0]


def test_gradient_attack_of_the_paper(digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)
    x = digits_x[:8]
    base = digits_model(x).argmax(1)
    kw = dict(epsilon=0.1, clamp=(0.0, 1.0), n_steps=6)
    for attack in ("topk", "center"):
        grad = map_stability(digits_model, x, _differentiable_saliency, attack=attack, search="gradient", **kw)
        rand = map_stability(digits_model, x, _differentiable_saliency, attack=attack, n_candidates=4, **kw)
        assert (digits_model(grad.x_perturbed).argmax(1) == base).all()
        assert (grad.x_perturbed - x).abs().max() <= 0.1 + 1e-6
        assert grad.changed.all()
        # following the gradient of D through the map beats the random search (the SiLU net is smooth)
        assert grad.objective.mean() > rand.objective.mean()
        assert grad.spearman.mean() < rand.spearman.mean()
        # the reported maps are the explainer's maps at x_perturbed
        again = _differentiable_saliency(digits_model, grad.x_perturbed, base).abs().sum(1).detach()
        torch.testing.assert_close(grad.maps_perturbed, again)
    with pytest.raises(ValueError, match="differentiable"):
        map_stability(digits_model, x, "saliency", attack="topk", search="gradient")
    with pytest.raises(ValueError, match="search"):
        map_stability(digits_model, x, "saliency", attack="topk", search="bayes")
    snap.assert_unchanged()
