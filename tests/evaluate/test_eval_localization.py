"""Localisation metrics: pointing game (tolerance), relevance mass / energy pointing game,
relevance rank accuracy, bounding-box IoU at 15 % of the max, rank correlation of two maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from propex.evaluate import (bbox_iou, energy_pointing_game, pointing_game, rank_correlation, relevance_mass,
                             relevance_rank)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 16, 16, generator=g, dtype=torch.float64)
    a = torch.randn(6, 1, 16, 16, generator=g, dtype=torch.float64)
    s = torch.zeros(6, 1, 16, 16)
    for i in range(6):
        r, c = 2 + i, 3 + (i * 2) % 7
        s[i, 0, r:r + 5, c:c + 6] = 1
    return x, a, s


def _quantus_scores(metric, x, a, s):
    return np.asarray(metric(model=None, x_batch=x.numpy(), y_batch=np.zeros(len(x), dtype=int),
                             a_batch=a.numpy().copy(), s_batch=s.numpy().copy()), dtype=float)


def test_pointing_game_tolerance_closed_form():
    x = torch.zeros(1, 1, 40, 40)
    mask = torch.zeros(1, 1, 40, 40, dtype=torch.bool)
    mask[0, 0, 10:20, 10:20] = True
    a = torch.zeros(1, 1, 40, 40)
    a[0, 0, 19, 29] = 1.0            # 10 pixels right of the box (distance 10 to column 19)
    assert pointing_game(None, x, a, mask, tolerance=0).item() == 0.0
    assert pointing_game(None, x, a, mask, tolerance=9.9).item() == 0.0
    assert pointing_game(None, x, a, mask, tolerance=10).item() == 1.0
    assert pointing_game(None, x, a, mask).item() == 1.0            # paper default: 15 px
    a2 = torch.zeros(1, 1, 40, 40)
    a2[0, 0, 29, 29] = 1.0           # diagonal: Euclidean distance sqrt(10² + 10²) ≈ 14.14
    assert pointing_game(None, x, a2, mask, tolerance=14).item() == 0.0
    assert pointing_game(None, x, a2, mask, tolerance=14.2).item() == 1.0
    # ties for the maximum: a hit if any maximal point hits
    a3 = a.clone()
    a3[0, 0, 15, 15] = 1.0
    assert pointing_game(None, x, a3, mask, tolerance=0).item() == 1.0


def test_pointing_game_matches_quantus_without_tolerance(data):
    quantus = pytest.importorskip("quantus")
    x, a, s = data
    a = a.clone()
    for i in (0, 2, 4):                       # maxima inside the object for half of the samples
        rows, cols = torch.nonzero(s[i, 0], as_tuple=True)
        a[i, 0, rows[-1], cols[-1]] = 10.0
    ref = _quantus_scores(quantus.PointingGame(disable_warnings=True), x, a, s)
    ours = pointing_game(None, x, a, s, tolerance=0)
    np.testing.assert_array_equal(ours.numpy(), ref)
    assert ours.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    # Quantus has no tolerance: with the paper's 15 px every max on a 16x16 map is within reach
    assert pointing_game(None, x, a, s).sum() == 6


def test_relevance_mass_matches_quantus_and_paper(data):
    quantus = pytest.importorskip("quantus")
    x, a, s = data
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True)
    # on non-negative maps the paper (positive relevance) and Quantus (signed) coincide
    ref = _quantus_scores(metric, x, a.abs(), s)
    np.testing.assert_allclose(relevance_mass(None, x, a.abs(), s).numpy(), ref, rtol=1e-5)
    # signed maps: Quantus sums signed values = positive=False
    ref_signed = _quantus_scores(metric, x, a, s)
    np.testing.assert_allclose(relevance_mass(None, x, a, s, positive=False).numpy(), ref_signed, rtol=1e-5)
    # the paper's closed form: positive relevance only
    pos = a.clamp_min(0)
    expected = (pos * s).sum(dim=(1, 2, 3)) / pos.sum(dim=(1, 2, 3))
    assert torch.allclose(relevance_mass(None, x, a, s), expected)
    assert torch.allclose(energy_pointing_game(None, x, a, s), expected)


def test_relevance_rank_matches_quantus(data):
    quantus = pytest.importorskip("quantus")
    x, a, s = data
    ref = _quantus_scores(quantus.RelevanceRankAccuracy(disable_warnings=True), x, a, s)
    np.testing.assert_allclose(relevance_rank(None, x, a, s).numpy(), ref, rtol=1e-6)
    # closed form: a map that ranks the object first scores 1, one that ranks it last 0
    assert torch.all(relevance_rank(None, x, s.to(x.dtype) + 0.01 * x, s) == 1)
    assert torch.all(relevance_rank(None, x, -s.to(x.dtype), s) == 0)


def test_channels_and_empty_masks():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    a = torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 2:5, 2:5] = True
    # a pixel's relevance is the sum over its channels: [N, C, H, W] and the summed map agree
    for fn in (relevance_mass, relevance_rank, pointing_game):
        full, summed = fn(None, x, a, mask), fn(None, x, a.sum(1, keepdim=True), mask)
        assert torch.allclose(full[:1], summed[:1])
        assert torch.isnan(full[1]) and torch.isnan(summed[1])          # empty mask -> NaN


def test_bbox_iou_closed_form():
    x = torch.zeros(2, 1, 20, 20)
    a = torch.zeros(2, 1, 20, 20)
    a[:, 0, 2:6, 2:6] = 1.0                   # 4x4 blob
    a[:, 0, 10:18, 10:18] = 0.5               # 8x8 blob, larger, above 15 % of the max
    a[:, 0, 0, 19] = 0.1                      # below 15 % of the max: ignored
    mask = torch.zeros(2, 1, 20, 20)
    mask[0, 0, 10:18, 10:18] = 1              # the large blob's box
    mask[1, 0, 2:6, 2:10] = 1                 # 4x8 box
    largest = bbox_iou(None, x, a, mask)
    assert largest[0].item() == pytest.approx(1.0)
    assert largest[1].item() == 0.0
    every = bbox_iou(None, x, a, mask, component="all")      # box (2..17)x(2..17): 256 px
    assert every[0].item() == pytest.approx(64 / 256)
    assert every[1].item() == pytest.approx(32 / 256)
    # the threshold: at 60 % only the 4x4 blob remains
    hi = bbox_iou(None, x, a, mask, fraction=0.6)
    assert hi[1].item() == pytest.approx(16 / 32)


def test_largest_component_eight_connected():
    from propex.evaluate.localization import largest_component
    b = torch.zeros(1, 6, 6, dtype=torch.bool)
    b[0, 0, 0] = b[0, 1, 1] = b[0, 2, 2] = True   # a diagonal: 3 pixels, 8-connected
    b[0, 4, 4] = b[0, 4, 5] = True
    keep = largest_component(b)
    assert keep.sum() == 3 and keep[0, 2, 2] and not keep[0, 4, 4]


def test_rank_correlation_two_maps():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, 10, 10, generator=g)
    human = torch.rand(3, 10, 10, generator=g).round(decimals=1)   # with ties
    ours = rank_correlation(a, human)
    for i in range(3):
        ref = scipy_stats.spearmanr(a[i].sum(0).flatten().numpy(), human[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(rank_correlation(human, human), torch.ones(3))
    with pytest.raises(ValueError, match="same pixels"):
        rank_correlation(a, human[:, :5])


def test_bad_input(data):
    x, a, s = data
    with pytest.raises(ValueError, match="mask"):
        relevance_mass(None, x, a, s[:, :, :4])
    with pytest.raises(ValueError, match="does not match"):
        pointing_game(None, x, a[..., :4], s)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(None, x, a, s, tolerance=-1)
    with pytest.raises(ValueError, match="fraction"):
        bbox_iou(None, x, a, s, fraction=1.5)
    with pytest.raises(ValueError, match="component"):
        bbox_iou(None, x, a, s, component="biggest")
    with pytest.raises(ValueError, match="empty"):
        relevance_rank(None, x[:0], a[:0], s[:0])
    bad = a.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        relevance_mass(None, x, bad, s)
