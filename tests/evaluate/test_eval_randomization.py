"""Randomisation sanity checks (Adebayo et al. 2018) and the random-target check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex
from propex.evaluate import random_target_check, randomization_check
from propex.evaluate._stats import hog, hog_similarity, pearson, rankdata, spearman, ssim, topk_intersection




@pytest.fixture(scope="module")
def digits16():
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data, load_digits_model
    return load_digits_model(), load_digits_data("test")[0][:16].clone()


def _input_itself(model, inputs, target):
    return inputs.clone()


def _edges(model, inputs, target):
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=inputs.dtype)
    gx = F.conv2d(inputs, k.reshape(1, 1, 3, 3), padding=1)
    gy = F.conv2d(inputs, k.T.reshape(1, 1, 3, 3), padding=1)
    return torch.hypot(gx, gy)


def test_cascading_randomisation_tells_gradients_from_model_independent_maps(digits16, model_snapshot):
    model, x = digits16
    snap = model_snapshot(model)
    before = propex.explain(model, x, "saliency").attributions
    grad = randomization_check(model, x, "saliency", order="cascading", seed=0)
    names = grad["layers"]
    assert names == ["classifier.3", "classifier.1", "features.5", "features.2", "features.0"]   # output down
    for key in ("spearman", "spearman_abs", "ssim", "hog"):
        assert grad[key].shape == (5, 16)
    # after full randomisation the gradient map no longer resembles the trained model's
    assert grad["spearman"][-1].mean() < 0.2
    assert grad["spearman_abs"][-1].mean() < 0.2
    assert grad["ssim"][-1].mean() < 0.2
    # maps that ignore the model stay identical at every layer: the check tells them apart
    for fn in (_input_itself, _edges):
        fixed = randomization_check(model, x, fn, order="cascading", seed=0)
        assert fixed["layers"] == names
        for key in ("spearman", "spearman_abs", "ssim", "hog"):
            assert torch.allclose(fixed[key], torch.ones(5, 16, dtype=fixed[key].dtype), atol=1e-6), key
    snap.assert_unchanged()       # randomised on a deep copy
    # the model still gives the same explanation as before
    assert torch.equal(propex.explain(model, x, "saliency").attributions, before)


def test_independent_randomisation_and_determinism(digits16, model_snapshot):
    model, x = digits16
    snap = model_snapshot(model)
    casc = randomization_check(model, x[:6], "saliency", order="cascading", seed=3)
    ind = randomization_check(model, x[:6], "saliency", order="independent", seed=3)
    # the first row randomises the same single layer in both orders
    torch.testing.assert_close(casc["spearman"][0], ind["spearman"][0])
    # independent randomisation of the first conv layer alone leaves more of the map than the cascade
    assert ind["spearman"][-1].mean() > casc["spearman"][-1].mean()
    again = randomization_check(model, x[:6], "saliency", order="independent", seed=3)
    torch.testing.assert_close(again["ssim"], ind["ssim"])
    other = randomization_check(model, x[:6], "saliency", order="independent", seed=4)
    assert not torch.equal(other["spearman"], ind["spearman"])
    snap.assert_unchanged()


def test_layers_option_and_guided_backprop(digits16):
    model, x = digits16
    r = randomization_check(model, x[:8], "guided_backprop", layers=["classifier.3"])
    assert r["layers"] == ["classifier.3"] and r["spearman"].shape == (1, 8)
    # Guided Backprop barely reacts to randomising the output layer (Adebayo et al.'s finding)
    assert r["spearman"].mean() > 0.6


def test_random_target_check(digits16):
    model, x = digits16
    grad = random_target_check(model, x, "saliency", seed=0)
    top = model(x).argmax(1)
    assert grad["random_target"].shape == (16,) and torch.all(grad["random_target"] != top)
    assert grad["spearman"].mean() < 0.5
    fixed = random_target_check(model, x, _input_itself)
    assert torch.allclose(fixed["spearman"], torch.ones(16))


def test_stats_match_references():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 30), generator=g).double()       # many ties
    b = torch.randn(5, 30, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rankdata(a), torch.from_numpy(scipy_stats.rankdata(a.numpy(), axis=1)))
    for i in range(5):
        assert spearman(a, b)[i].item() == pytest.approx(scipy_stats.spearmanr(a[i], b[i]).statistic, abs=1e-12)
        assert pearson(a, b)[i].item() == pytest.approx(scipy_stats.pearsonr(a[i], b[i]).statistic, abs=1e-12)
    assert torch.isnan(spearman(torch.ones(1, 5), torch.arange(5.0).reshape(1, 5))).all()
    assert topk_intersection(torch.tensor([[4.0, 3, 2, 1]]), torch.tensor([[4.0, 1, 2, 3]]), 2).item() == 0.5
    assert topk_intersection(torch.tensor([[4.0, 3, 2, 1]]), torch.tensor([[4.0, 1, 2, 3]]), 0.5).item() == 0.5


def test_ssim_and_hog_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    feature = pytest.importorskip("skimage.feature")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 20, 24, generator=g, dtype=torch.float64)
    y = 0.7 * x + 0.3 * torch.rand(3, 20, 24, generator=g, dtype=torch.float64)
    ours = ssim(x, y)
    plain = ssim(x, y, gaussian=False)
    for i in range(3):
        rng = float(torch.cat([x[i], y[i]]).max() - torch.cat([x[i], y[i]]).min())
        ref = metrics.structural_similarity(x[i].numpy(), y[i].numpy(), gaussian_weights=True,
                                            use_sample_covariance=False, data_range=rng)
        assert ours[i].item() == pytest.approx(ref, abs=1e-10)
        ref = metrics.structural_similarity(x[i].numpy(), y[i].numpy(), data_range=rng)
        assert plain[i].item() == pytest.approx(ref, abs=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=x.dtype))
    # maps smaller than the 11-tap window use the largest window that fits (7 taps on 8x8)
    small, noisy = x[:, :8, :8], y[:, :8, :8]
    assert torch.allclose(ssim(small, small), torch.ones(3, dtype=x.dtype))
    assert torch.all(ssim(small, noisy) < 1)
    z = torch.rand(2, 32, 40, generator=g, dtype=torch.float64)
    for opts in ({}, {"pixels_per_cell": (5, 5), "cells_per_block": (2, 2), "orientations": 8}):
        ours = hog(z, **opts)
        for i in range(2):
            ref = torch.from_numpy(feature.hog(z[i].numpy(), **opts))
            torch.testing.assert_close(ours[i], ref, rtol=0, atol=1e-6)
    assert torch.allclose(hog_similarity(z, z), torch.ones(2, dtype=z.dtype))


def test_bad_input(digits16):
    model, x = digits16
    with pytest.raises(ValueError, match="order"):
        randomization_check(model, x[:2], "saliency", order="bottom_up")
    with pytest.raises(TypeError, match="nn.Module"):
        randomization_check(lambda t: model(t), x[:2], "saliency")
    with pytest.raises(ValueError, match="no module named"):
        randomization_check(model, x[:2], "saliency", layers=["features.9"])
    with pytest.raises(ValueError, match="no parameters"):
        randomization_check(model, x[:2], "saliency", layers=["features.1"])
    with pytest.raises(ValueError, match="empty"):
        randomization_check(model, x[:0], "saliency")
    with pytest.raises(TypeError, match="unknown option"):
        randomization_check(model, x[:2], "saliency", method_options={"absolute": True})
    with pytest.raises(ValueError, match="does not match"):
        randomization_check(model, x[:2], lambda m, i, t: i[:, :, :4])
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="fewer than one block"):
        hog(torch.rand(1, 8, 8))
    with pytest.raises(ValueError):
        ssim(torch.rand(2, 8, 8), torch.rand(2, 8, 9))
    with pytest.raises(TypeError, match="nn.Module"):
        randomization_check(object(), x[:2])
    lin = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="classes"):
        random_target_check(lin, torch.rand(2, 3), "saliency", target=0)


def test_norm_layers_are_randomised_on_the_copy(model_snapshot):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 12 * 12, 3)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.1, 0.1)
    snap = model_snapshot(net)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    r = randomization_check(net, x, "saliency", order="independent")
    assert r["layers"] == ["4", "1", "0"]
    # randomising the batch norm's scale and shift (constant 1 and 0 at init) changes the map
    assert torch.all(r["spearman"][1] < 0.999)
    assert torch.isfinite(r["ssim"]).all() and torch.isfinite(r["hog"]).all()
    snap.assert_unchanged()
