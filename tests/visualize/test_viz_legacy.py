"""Heatmaps and the attribution grid."""
from __future__ import annotations

import pytest
import torch

from propex.visualize import attribution_grid, to_heatmap


def test_to_heatmap_sums_channels_and_scales_to_unit_range():
    a = torch.zeros(3, 4, 4)
    a[0, 0, 0] = 2.0
    a[1, 0, 0] = 2.0      # channel sum 4 at (0, 0)
    a[2, 1, 1] = -2.0
    h = to_heatmap(a, clip_percentile=100)
    assert h.shape == (4, 4)
    assert h[0, 0] == pytest.approx(1.0)
    assert h[1, 1] == pytest.approx(-0.5)
    assert to_heatmap(a, reduce="abs", clip_percentile=100)[1, 1] == pytest.approx(0.5)
    assert to_heatmap(a, reduce="max_abs", clip_percentile=100)[0, 0] == pytest.approx(1.0)


def test_to_heatmap_clips_outliers_and_handles_zero():
    a = torch.ones(1, 10, 10)
    a[0, 0, 0] = 1000.0
    h = to_heatmap(a, clip_percentile=50)
    assert h.max() == 1.0 and h[0, 1] == pytest.approx(1.0)
    assert torch.equal(to_heatmap(torch.zeros(2, 3, 3)), torch.zeros(3, 3))


def test_to_heatmap_bad_input():
    with pytest.raises(ValueError, match="reduce"):
        to_heatmap(torch.ones(3, 2, 2), reduce="mean")
    with pytest.raises(ValueError, match="attribution must be"):
        to_heatmap(torch.ones(2, 2, 2, 2))
    with pytest.raises(ValueError, match="clip_percentile"):
        to_heatmap(torch.ones(2, 2), clip_percentile=0)


def test_attribution_grid_writes_png_with_one_column_per_method(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    x = torch.rand(2, 3, 8, 8)
    maps = {"a": torch.randn(2, 3, 8, 8), "b": torch.randn(2, 3, 8, 8)}
    path = attribution_grid(x, maps, tmp_path / "sub" / "g.png", row_labels=["s0", "s1"], dpi=50)
    img = mpimg.imread(path)
    wide = img.shape[1]
    path1 = attribution_grid(x, {"a": maps["a"]}, tmp_path / "g1.png", dpi=50)
    assert mpimg.imread(path1).shape[1] < wide        # fewer methods, narrower grid
    with pytest.raises(ValueError, match="attributions\\['a'\\]"):
        attribution_grid(x, {"a": torch.randn(3, 3, 8, 8)}, tmp_path / "bad.png")
