"""Meaningful perturbation: the objective, reproducibility, batching, localisation on a model that
only reads one region, the three perturbations, errors, and the model left as found."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.baselines import blurred
from propex.perturbation.masks import upsample
from propex.perturbation.meaningful_perturbation import MeaningfulPerturbation, _tv




class RegionModel(nn.Module):
    """Two outputs: plus and minus the mean of x over rows 8:24, columns 12:28 (all channels)."""

    rows, cols = slice(8, 24), slice(12, 28)

    def forward(self, x):
        r = x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3))
        return torch.stack([r, -r], dim=1)


def region_mask():
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[RegionModel.rows, RegionModel.cols] = True
    return m


RAW = dict(output_transform=None, baseline=0.0)


def test_total_variation_matches_its_definition():
    m = torch.rand(2, 1, 5, 7, dtype=torch.float64)
    expected = ((m[:, :, 1:] - m[:, :, :-1]).abs() ** 3).mean(dim=(1, 2, 3)) \
        + ((m[:, :, :, 1:] - m[:, :, :, :-1]).abs() ** 3).mean(dim=(1, 2, 3))
    torch.testing.assert_close(_tv(m, 3.0), expected)


def test_one_iteration_is_one_adam_step_on_the_papers_objective():
    """The first Adam step moves each cell by -lr * sign(gradient) of
    l1 * mean|1 - m| + tv * TV_beta(m) + f(x * up(m) + x0 * (1 - up(m))); checked against autograd."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3)).eval()
    x = torch.randn(2, 3, 12, 12)
    kw = dict(mask_size=6, l1_weight=0.3, tv_weight=0.7, tv_beta=2.0, learning_rate=0.05, baseline="blur", seed=4)
    sal = MeaningfulPerturbation(model, iterations=1, **kw).attribute(x, target=[1, 2])
    m0 = torch.rand((2, 1, 6, 6), generator=torch.Generator().manual_seed(4), dtype=torch.float64).float()
    m = m0.clone().requires_grad_()
    x0 = blurred(x)
    up = upsample(m, (12, 12))
    probs = model(x * up + x0 * (1 - up)).softmax(dim=1)[torch.arange(2), [1, 2]]
    loss = probs.sum() + 0.3 * (1 - m).abs().mean(dim=(1, 2, 3)).sum() + 0.7 * _tv(m, 2.0).sum()
    (grad,) = torch.autograd.grad(loss, m)
    expected = (m0 - 0.05 * grad / (grad.abs() + 1e-8)).clamp(0, 1)      # Adam's first step: lr * g / (|g| + eps)
    torch.testing.assert_close(sal, 1 - upsample(expected, (12, 12)), rtol=0, atol=1e-5)


def test_same_seed_same_map_other_seed_other_map():
    x = torch.rand(2, 3, 32, 32) + 0.5
    a = MeaningfulPerturbation(RegionModel(), iterations=20, seed=1, **RAW).attribute(x, target=0)
    b = MeaningfulPerturbation(RegionModel(), iterations=20, seed=1, **RAW).attribute(x, target=0)
    c = MeaningfulPerturbation(RegionModel(), iterations=20, seed=2, **RAW).attribute(x, target=0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_mask_deletes_the_region_the_model_reads():
    """Measured with the defaults (28-cell mask on 32 px, 100 iterations): the box is fully deleted
    (mean 1.000) and holds 70 % of the map's mass for 25 % of the area; outside mean 0.14."""
    region = region_mask()
    x = torch.rand(2, 3, 32, 32) + 0.5
    sal = MeaningfulPerturbation(RegionModel(), iterations=100, seed=0, **RAW).attribute(x, target=0)
    assert sal.shape == (2, 1, 32, 32)
    for s in sal[:, 0]:
        assert float(s[region].mean()) > 0.95
        assert float(s[region].sum() / s.sum()) > 0.6
        assert float(s[~region].mean()) < 0.25


def test_the_batch_is_one_optimisation_equal_to_separate_ones_and_chunking_does_not_matter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()
    x = torch.randn(3, 1, 10, 10)
    kw = dict(iterations=15, mask_size=5, seed=7)
    batch = MeaningfulPerturbation(model, **kw).attribute(x, target=[0, 1, 2])
    chunked = MeaningfulPerturbation(model, batch_size=1, **kw).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(batch, chunked, rtol=1e-4, atol=1e-5)
    # row 0 starts from the same random mask alone or in the batch: the same optimisation
    alone = MeaningfulPerturbation(model, **kw).attribute(x[:1], target=[0])
    torch.testing.assert_close(batch[:1], alone, rtol=1e-4, atol=1e-5)
    # and the model is called once per iteration for the whole batch, not once per sample
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, inp: calls.append(inp[0].shape[0]))
    try:
        MeaningfulPerturbation(model, batch_size=3, **kw).attribute(x, target=[0, 1, 2])
    finally:
        hook.remove()
    assert calls == [3] * (1 + kw["iterations"])                # the forward on x, then one per iteration


def test_several_targets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 4)).eval()
    x = torch.randn(2, 2, 8, 8)
    exp = MeaningfulPerturbation(model, iterations=5, mask_size=4, seed=0).explain(x, target=[[0, 1], [2, 3]])
    assert exp.attributions.shape == (2, 2, 1, 8, 8)
    # rows are target-major: the first target's masks start as in a single-target run
    single = MeaningfulPerturbation(model, iterations=5, mask_size=4, seed=0).attribute(x, target=[0, 2])
    torch.testing.assert_close(exp.attributions[:, 0], single, rtol=1e-4, atol=1e-5)


def test_the_mask_destroys_the_class_on_a_real_model(digits_model, digits_x):
    """The deletion game: after optimisation the masked digit has lost its class probability while
    less than half of the image is deleted."""
    x = digits_x[:4]
    exp = MeaningfulPerturbation(digits_model, iterations=60, seed=0, baseline=0.0).explain(x)
    keep = 1 - exp.attributions
    with torch.no_grad():
        before = digits_model(x).softmax(1).gather(1, exp.target[:, None])
        after = digits_model(x * keep).softmax(1).gather(1, exp.target[:, None])
    assert float(before.min()) > 0.5 and float(after.max()) < 0.1
    assert float(exp.attributions.mean()) < 0.5


@pytest.mark.parametrize("baseline", ["blur", 0.0, "mean", "noise"])
def test_the_perturbations_blur_constant_and_noise(baseline):
    x = torch.rand(1, 3, 32, 32) + 0.5
    a = MeaningfulPerturbation(RegionModel(), iterations=30, seed=3, baseline=baseline,
                               output_transform=None).attribute(x, target=0)
    b = MeaningfulPerturbation(RegionModel(), iterations=30, seed=3, baseline=baseline,
                               output_transform=None).attribute(x, target=0)
    assert torch.equal(a, b)                                     # the noise is seeded too
    region = region_mask()
    if baseline == "mean":
        return                                                    # x0 = mean: the region's mean barely moves
    assert float(a[0, 0][region].mean()) > float(a[0, 0][~region].mean())


def test_tuple_inputs():
    class Two(nn.Module):
        def forward(self, a, b):
            return torch.stack([a.mean(dim=(1, 2, 3)) + b[:, :, :5].mean(dim=(1, 2)), a.sum(dim=(1, 2, 3))], 1)
    a, b = torch.rand(2, 3, 10, 10), torch.rand(2, 4, 20)
    maps = MeaningfulPerturbation(Two(), iterations=3, seed=0, output_transform=None).attribute((a, b), target=0)
    assert isinstance(maps, tuple) and maps[0].shape == (2, 1, 10, 10) and maps[1].shape == (2, 1, 20)


@pytest.mark.parametrize("kw, err, text", [
    (dict(iterations=0), ValueError, "iterations"),
    (dict(iterations=-3), ValueError, "iterations"),
    (dict(iterations=2.5), TypeError, "iterations"),
    (dict(learning_rate=0), ValueError, "learning_rate"),
    (dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate"),
    (dict(learning_rate="fast"), TypeError, "learning_rate"),
    (dict(l1_weight=-1), ValueError, "l1_weight"),
    (dict(tv_weight=float("nan")), ValueError, "tv_weight"),
    (dict(tv_beta=0.5), ValueError, "tv_beta"),
    (dict(mask_size=0), ValueError, "mask_size"),
    (dict(output_transform="argmax"), ValueError, "output_transform"),
    (dict(baseline="grey"), ValueError, "baseline"),
    (dict(seed="s"), TypeError, "seed"),
    (dict(iteration=5), TypeError, "iterations"),
])
def test_bad_options_raise_clear_errors(kw, err, text):
    with pytest.raises(err, match=text):
        MeaningfulPerturbation(nn.Identity(), **kw)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        MeaningfulPerturbation(nn.Linear(6, 3), iterations=2).attribute(torch.randn(2, 6))
    with pytest.raises(ValueError, match="output_transform=None"):
        MeaningfulPerturbation(lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(1), iterations=2).attribute(
            torch.rand(1, 3, 8, 8), target=0)


def test_model_is_left_as_found(digits_model, digits_x, model_snapshot):
    model = digits_model
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 0.5)            # a user's gradient stays as it was
    params[1].requires_grad_(False)                             # and mixed flags are restored
    snap = model_snapshot(model)
    try:
        exp = propex.explain(model, digits_x[:2], "meaningful_perturbation", iterations=3, seed=0)
        snap.assert_unchanged()
        assert all(p.grad is None for p in params[1:])
    finally:
        params[0].grad = None
        params[1].requires_grad_(True)
    assert exp.attributions.shape == (2, 1, 16, 16) and exp.method == "meaningful_perturbation"
    assert float(exp.attributions.min()) >= 0 and float(exp.attributions.max()) <= 1
