"""RISE: the masks, the estimator against a direct implementation of the paper's formula,
reproducibility, localisation on a model that only looks at one region, errors, model left as found."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.perturbation.masks import RiseMasks
from propex.perturbation.rise import RISE




class RegionModel(nn.Module):
    """Two outputs: plus and minus the mean of x over rows 8:24, columns 12:28 (all channels)."""

    rows, cols = slice(8, 24), slice(12, 28)

    def forward(self, x):
        r = x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3))
        return torch.stack([r, -r], dim=1)


def region_mask(h=32, w=32):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[RegionModel.rows, RegionModel.cols] = True
    return m


# ----------------------------------------------------------------------------------- masks
def test_masks_are_smooth_shifted_crops_with_mean_p():
    gen = torch.Generator().manual_seed(0)
    masks = RiseMasks(3000, (40, 30), (5, 5), 0.3, gen, torch.device("cpu"))
    m = masks.get(torch.arange(3000))
    assert m.shape == (3000, 1, 40, 30)
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert abs(float(m.mean()) - 0.3) < 0.01                    # E[M] = p: the normalisation's premise
    assert masks.cell == (8, 6) and masks.up_size == (48, 36)   # cell = ceil(size / grid), (s + 1) * cell
    assert 0 <= int(masks.shifts.min()) and int(masks.shifts[:, 0].max()) == 7 and int(masks.shifts[:, 1].max()) == 5
    # not binary: bilinear upsampling makes intermediate values
    assert float(((m > 0.01) & (m < 0.99)).float().mean()) > 0.2


def test_mask_k_does_not_depend_on_which_masks_are_asked_together():
    masks = RiseMasks(50, (17, 23), (4, 6), 0.5, torch.Generator().manual_seed(1), torch.device("cpu"))
    all_ = masks.get(torch.arange(50))
    some = masks.get(torch.tensor([7, 3, 7, 49]))
    assert torch.equal(some, all_[[7, 3, 7, 49]])


def test_one_dimensional_masks():
    masks = RiseMasks(10, (30,), (5,), 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert masks.get(torch.arange(10)).shape == (10, 1, 30)


# ----------------------------------------------------------------------------------- the estimator
def test_rise_equals_the_papers_formula_with_the_same_masks():
    """S = sum_i f(x * M_i + b * (1 - M_i)) M_i / (N p), computed mask by mask."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 12 * 10, 4)).eval()
    x = torch.randn(3, 2, 12, 10)
    n_masks, p, baseline = 60, 0.3, 0.25
    sal = RISE(model, n_masks=n_masks, grid=(3, 4), p=p, baseline=baseline, output_transform="softmax",
               seed=11).attribute(x, target=[0, 2, 3])
    masks = RiseMasks(n_masks, (12, 10), (3, 4), p, torch.Generator().manual_seed(11), torch.device("cpu"))
    expected = torch.zeros(3, 1, 12, 10)
    with torch.no_grad():
        for i in range(n_masks):
            m = masks.get(torch.tensor([i]))
            probs = model(x * m + baseline * (1 - m)).softmax(dim=1)
            expected += probs[torch.arange(3), [0, 2, 3]].reshape(3, 1, 1, 1) * m
    expected /= n_masks * p
    assert sal.shape == (3, 1, 12, 10)
    torch.testing.assert_close(sal, expected, rtol=1e-5, atol=1e-6)


def test_result_does_not_depend_on_the_chunk_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)).eval()
    x = torch.randn(3, 3, 16, 16)
    a = RISE(model, n_masks=50, grid=4, seed=3).attribute(x)
    b = RISE(model, n_masks=50, grid=4, seed=3, batch_size=7).attribute(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_several_targets_match_single_target_runs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 8, 4)).eval()
    x = torch.randn(2, 1, 8, 8)
    both = RISE(model, n_masks=40, grid=3, seed=0, output_transform=None).explain(x, target=[[0, 3], [1, 2]])
    assert both.attributions.shape == (2, 2, 1, 8, 8)
    one = RISE(model, n_masks=40, grid=3, seed=0, output_transform=None).attribute(x, target=[3, 2])
    torch.testing.assert_close(both.attributions[:, 1], one, rtol=1e-5, atol=1e-6)


def test_tuple_inputs_get_one_map_each():
    class Two(nn.Module):
        def forward(self, a, b):
            return torch.stack([a.mean(dim=(1, 2, 3)) + 2 * b.mean(dim=(1, 2)), a.sum(dim=(1, 2, 3))], 1)
    a, b = torch.rand(2, 3, 10, 10), torch.rand(2, 4, 20)
    maps = RISE(Two(), n_masks=30, grid=2, seed=0, output_transform=None).attribute((a, b), target=0)
    assert isinstance(maps, tuple) and maps[0].shape == (2, 1, 10, 10) and maps[1].shape == (2, 1, 20)


# ----------------------------------------------------------------------------------- reproducibility
def test_same_seed_same_map_other_seed_other_map():
    x = torch.rand(2, 3, 32, 32) + 0.5
    kw = dict(n_masks=100, grid=4, output_transform=None)
    a = RISE(RegionModel(), seed=5, **kw).attribute(x, target=0)
    b = RISE(RegionModel(), seed=5, **kw).attribute(x, target=0)
    c = RISE(RegionModel(), seed=6, **kw).attribute(x, target=0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# ----------------------------------------------------------------------------------- localisation
def test_rise_puts_most_of_its_mass_on_the_region_the_model_reads():
    """The model reads only a 16x16 box (25 % of the image). RISE's map is on the scale of the score
    (pixels the model ignores get about the mean score), so mass is measured above the map's minimum.
    Measured: 54 % of that mass in the box (the masks' 8-px cells blur its border), 92 % of the
    box-sized top pixels inside it."""
    region = region_mask()
    x = torch.rand(2, 3, 32, 32) + 0.5
    sal = RISE(RegionModel(), n_masks=2000, grid=4, p=0.2, output_transform=None, seed=1).attribute(x, target=0)
    for s in sal[:, 0]:
        excess = s - s.min()
        assert float(excess[region].sum() / excess.sum()) > 0.5
        top = s.flatten().topk(int(region.sum())).indices
        assert float(region.flatten()[top].float().mean()) > 0.85


# ----------------------------------------------------------------------------------- errors and the model
@pytest.mark.parametrize("kw, err, text", [
    (dict(n_masks=0), ValueError, "n_masks"),
    (dict(n_masks=-5), ValueError, "n_masks"),
    (dict(n_masks=2.5), TypeError, "n_masks"),
    (dict(n_masks=True), TypeError, "n_masks"),
    (dict(p=0.0), ValueError, "p must be"),
    (dict(p=1.0), ValueError, "p must be"),
    (dict(p=1.5), ValueError, r"\(0, 1\)"),
    (dict(p=-0.1), ValueError, "p must be"),
    (dict(p=float("nan")), ValueError, "p must be"),
    (dict(p="half"), TypeError, "p must be a number"),
    (dict(grid=0), ValueError, "grid"),
    (dict(grid=(3, 0)), ValueError, "grid"),
    (dict(output_transform="softmin"), ValueError, "output_transform"),
    (dict(baseline="gray"), ValueError, "baseline"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(n_mask=10), TypeError, "n_masks"),          # typo: unknown option with a suggestion
])
def test_bad_options_raise_clear_errors(kw, err, text):
    with pytest.raises(err, match=text):
        RISE(nn.Identity(), **kw)


def test_bad_inputs_raise_clear_errors():
    lin = nn.Linear(6, 3)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        RISE(lin, n_masks=4).attribute(torch.randn(2, 6))
    with pytest.raises(ValueError, match="grid must be an int or 2 ints"):
        RISE(RegionModel(), n_masks=4, grid=(2, 2, 2)).attribute(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="output_transform=None"):
        RISE(lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(1), n_masks=4).attribute(torch.rand(1, 3, 8, 8), target=0)


def test_model_is_left_as_found(digits_model, digits_x, model_snapshot):
    model = digits_model
    first = next(model.parameters())
    first.grad = torch.ones_like(first)
    flags = [p.requires_grad for p in model.parameters()]
    snap = model_snapshot(model)
    try:
        exp = propex.explain(model, digits_x[:3], "rise", n_masks=40, grid=4, seed=0)
        snap.assert_unchanged()
    finally:
        first.grad = None
    assert [p.requires_grad for p in model.parameters()] == flags
    assert exp.attributions.shape == (3, 1, 16, 16) and exp.method == "rise" and exp.delta is None
    assert torch.isfinite(exp.attributions).all()


def test_center_subtracts_the_mean_score_over_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    plain = propex.explain(model, x, "rise", target=0, n_masks=50, grid=2, seed=3).attributions
    centered = propex.explain(model, x, "rise", target=0, n_masks=50, grid=2, seed=3, center=True).attributions
    shift = plain - centered                         # constant per sample: the mean score over the 50 masks
    assert torch.allclose(shift, shift.flatten(1)[:, :1].reshape(2, 1, 1, 1).expand_as(shift), atol=1e-6)
    assert 0 < shift.flatten(1)[:, 0].min() and shift.flatten(1)[:, 0].max() < 1    # softmax probabilities
    with pytest.raises(TypeError, match="center"):
        propex.explain(model, x, "rise", center="yes")
