"""Images from tensors, overlay (incl. upsampling a 7×7 CAM), and the labelled grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from propex.visualize import Picture, grid, heatmap, overlay, to_picture
from propex.visualize.compose import to_rgb

PIL = pytest.importorskip("PIL.Image")


def test_to_rgb_conversions():
    grey = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])                  # [1, 2, 2] in [0, 1]: kept
    rgb = to_rgb(grey)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [0.5] * 3
    normalised = torch.tensor([[[-2.0, 2.0]]]).expand(3, 1, 2)         # outside [0, 1]: min-max scaled
    assert to_rgb(normalised)[0].tolist() == [[0.0] * 3, [1.0] * 3]
    hwc = np.zeros((3, 4, 3), dtype=np.uint8)
    hwc[..., 0] = 255
    assert to_rgb(hwc)[0, 0].tolist() == [1.0, 0.0, 0.0]
    pil = PIL.fromarray(hwc)
    assert np.array_equal(to_picture(pil).array, hwc)
    assert to_picture(torch.rand(3, 5, 7)).size == (7, 5)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_rgb(torch.rand(5, 4, 4))
    with pytest.raises(TypeError, match="image"):
        to_rgb("a.png")


def test_overlay_blends_by_relevance_and_leaves_zero_relevance_alone():
    img = torch.full((3, 8, 8), 0.5)
    a = torch.zeros(8, 8)
    a[0, 0] = 1.0
    out = overlay(img, a, alpha=0.6, clip_percentile=100)
    assert out.size == (8, 8)
    assert out.array[4, 4].tolist() == [128, 128, 128]                 # no relevance: the image
    # full relevance: (1 − α)·0.5 + α·red
    expected = np.round(255 * (0.4 * 0.5 + 0.6 * np.array([1.0, 0.0, 0.0]))).astype(int).tolist()
    assert out.array[0, 0].tolist() == expected
    flat = overlay(img, a, alpha=0.6, weighted=False, clip_percentile=100)
    white = np.round(255 * (0.4 * 0.5 + 0.6 * 1.0))
    assert flat.array[4, 4].tolist() == [white] * 3                     # α everywhere: white tint at 0


def test_overlay_upsamples_a_cam_to_the_image():
    img = torch.rand(3, 224, 224)
    cam = torch.zeros(7, 7)
    cam[0, 0] = 1.0
    out = overlay(img, cam, alpha=1.0, interpolation="nearest", clip_percentile=100)
    assert out.array.shape == (224, 224, 3)
    assert out.array[:32, :32].reshape(-1, 3).tolist() == [[255, 0, 0]] * (32 * 32)   # one CAM cell = 32 px
    assert np.array_equal(out.array[40:, 40:], to_picture(img).array[40:, 40:])
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, cam, alpha=1.5)
    with pytest.raises(TypeError, match="size"):
        overlay(img, cam, size=10)


def test_grid_layout_cells_and_labels():
    red = heatmap(torch.ones(16, 16), clip_percentile=100)
    blue = heatmap(-torch.ones(16, 16), clip_percentile=100)
    pic = grid([[red, blue], [blue, None]], pad=4)
    cell = 96                                                             # 16 px enlarged ×6 to >= 96
    assert pic.size == (4 + 2 * (cell + 4), 4 + 2 * (cell + 4))
    c = 4 + cell // 2
    assert pic.array[c, c].tolist() == [255, 0, 0]
    assert pic.array[c, c + cell + 4].tolist() == [0, 0, 255]
    assert pic.array[c + cell + 4, c + cell + 4].tolist() == [255, 255, 255]       # the empty cell
    labelled = grid([[red, blue], [blue, red]], row_labels=["sample 0", "sample 1"],
                    col_labels=["saliency", "lrp"], title="digits")
    w, h = labelled.size
    assert w > pic.size[0] and h > pic.size[1]                          # room for labels and the title
    ink = labelled.array[: h - 2 * (cell + 4)].min(axis=2)              # the label band above the cells
    assert (ink < 100).any()                                            # some dark text was drawn


def test_grid_mixed_inputs_and_cell_size():
    pic = grid([[torch.rand(1, 8, 8), np.zeros((4, 4, 3), dtype=np.uint8)]], cell_size=(20, 30))
    assert pic.size == (4 + 2 * 34, 4 + 24)
    with pytest.raises(ValueError, match="row_labels"):
        grid([[torch.rand(1, 4, 4)]], row_labels=["a", "b"])
    with pytest.raises(ValueError, match="col_labels"):
        grid([[torch.rand(1, 4, 4)]], col_labels=["a", "b"])
    with pytest.raises(TypeError, match="rows"):
        grid(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"rows\[0\]\[0\]"):
        grid([[torch.rand(7, 4, 4)]])


def test_attribution_grid_uses_grid(tmp_path):
    x = torch.rand(2, 3, 8, 8)
    path = tmp_path / "g.png"
    out = __import__("propex.visualize", fromlist=["attribution_grid"]).attribution_grid(
        x, {"a": torch.ones(2, 3, 8, 8)}, path, row_labels=["s0", "s1"])
    with PIL.open(out) as im:
        arr = np.asarray(im)
    assert isinstance(to_picture(arr), Picture)
    assert (arr.reshape(-1, 3) == [255, 0, 0]).all(axis=1).any()        # the all-positive map is red
