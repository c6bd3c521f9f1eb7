"""ROAD: the noisy linear imputation against the ROAD authors' imputer (as shipped in
pytorch-grad-cam), exactness on linear ramps, noise, and the ROAD curve."""
from __future__ import annotations

import pytest
import torch

import propex
import propex.evaluate as ev
from propex.evaluate.road import noisy_linear_impute


@pytest.mark.parametrize("shape,fraction", [((2, 3, 16, 16), 0.3), ((1, 3, 12, 20), 0.9), ((2, 1, 9, 7), 0.5)])
def test_imputer_matches_the_road_authors_imputer(shape, fraction):
    road_ref = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    removed = torch.rand(shape[0], *shape[2:], generator=g) < fraction
    mine = noisy_linear_impute(x, removed, noise=0.0)
    # the reference's mask is 1 for kept pixels, 0 for the ones to impute
    ref = torch.stack([road_ref.NoisyLinearImputer(noise=0.0)(x[i], (~removed[i]).float())
                       for i in range(shape[0])])
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(mine[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_imputer_reproduces_a_linear_ramp_at_interior_holes():
    h, w = 20, 18
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = torch.stack([0.3 * i - 0.7 * j + 2.0, -1.1 * i + 0.2 * j]).unsqueeze(0)     # [1, 2, H, W]
    removed = torch.zeros(1, h, w, dtype=torch.bool)
    removed[0, 4:12, 3:15] = True          # a large interior hole
    removed[0, 15, 15] = True              # a single pixel
    removed[0, 2:18:3, 16] = True          # a dotted column
    out = noisy_linear_impute(ramp, removed, noise=0.0)
    torch.testing.assert_close(out, ramp, rtol=0, atol=1e-8)
    # a non-linear image is not reproduced (the check has teeth)
    bowl = ramp ** 2
    assert (noisy_linear_impute(bowl, removed, noise=0.0) - bowl).abs().max() > 0.1


def test_imputer_noise():
    x = torch.zeros(1, 2, 32, 32)
    removed = torch.zeros(1, 32, 32, dtype=torch.bool)
    removed[0, 4:28, 4:28] = True
    out = noisy_linear_impute(x, removed, noise=0.05, seed=1)
    vals = out[:, :, 4:28, 4:28]
    assert abs(float(vals.std()) - 0.05) < 0.005 and abs(float(vals.mean())) < 0.005
    assert torch.equal(out[:, :, :4], x[:, :, :4])
    torch.testing.assert_close(noisy_linear_impute(x, removed, noise=0.05, seed=1), out)


def test_road_curve(model_snapshot):
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data, load_digits_model
    model = load_digits_model()
    x = load_digits_data("test")[0][:8]
    ig = propex.explain(model, x, "integrated_gradients", n_steps=16).attributions
    snap = model_snapshot(model)
    morf = ev.road(model, x, ig, fractions=[0.1, 0.3, 0.5], order="morf")
    lerf = ev.road(model, x, ig, fractions=[0.1, 0.3, 0.5], order="lerf")
    snap.assert_unchanged()
    assert morf.scores.shape == (8, 4)
    torch.testing.assert_close(morf.fractions, torch.tensor([0.0, 26 / 256, 77 / 256, 128 / 256]))
    torch.testing.assert_close(morf.scores[:, 0], torch.softmax(model(x), 1).max(1).values.detach())
    assert lerf.order == "lerf" and lerf.scores.shape == (8, 4)
    # removing IG's most relevant pixels hurts more than removing random pixels
    rand = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    morf_rand = ev.road(model, x, rand, fractions=[0.1, 0.3, 0.5], order="morf")
    assert float(morf.auc.mean()) < float(morf_rand.auc.mean()) - 0.05
    # the noise is seeded per (fraction, sample): the result does not depend on the chunking
    again = ev.road(model, x, ig, fractions=[0.1, 0.3, 0.5], order="morf", batch_size=5)
    torch.testing.assert_close(again.scores, morf.scores)
    # without noise, the curve is the model on the deterministic imputation
    plain = ev.road(model, x[:2], ig[:2], fractions=[0.3], noise=0.0, target=[1, 2], softmax=False)
    rank = ig[:2].sum(1).reshape(2, -1).argsort(dim=1, descending=True, stable=True)
    removed = torch.zeros(2, 256, dtype=torch.bool)
    removed.scatter_(1, rank[:, :77], True)
    imputed = noisy_linear_impute(x[:2], removed.reshape(2, 16, 16), noise=0.0)
    torch.testing.assert_close(plain.scores[:, 1], model(imputed).detach()[[0, 1], [1, 2]])


def test_road_bad_input():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    x = torch.rand(2, 3, 4, 4)
    a = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="fraction"):
        ev.road(model, x, a, fractions=[0.5, 1.2])
    with pytest.raises(ValueError, match="order"):
        ev.road(model, x, a, order="random")
    with pytest.raises(ValueError, match="images"):
        ev.road(model, x.reshape(2, 48), a.reshape(2, 16))
    with pytest.raises(ValueError, match="does not match x"):
        ev.road(model, x, torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="mask of shape"):
        noisy_linear_impute(x, torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="noise"):
        ev.road(model, x, a, noise=-1.0)


def test_road_on_rgb_evaluates_every_sample():
    # Quantus 0.6's ROAD raises on 3-channel inputs and averages only its first batch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 5)).eval()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    c = ev.road(model, x, a, target=2, fractions=[0.25, 0.5], noise=0.0, softmax=False, batch_size=3)
    rank = a.sum(1).reshape(5, -1).argsort(dim=1, descending=True, stable=True)
    for j, count in enumerate((16, 32), start=1):
        removed = torch.zeros(5, 64, dtype=torch.bool)
        removed.scatter_(1, rank[:, :count], True)
        imputed = noisy_linear_impute(x, removed.reshape(5, 8, 8), noise=0.0)
        torch.testing.assert_close(c.scores[:, j], model(imputed).detach()[:, 2], rtol=1e-5, atol=1e-6)
