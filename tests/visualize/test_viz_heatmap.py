"""heatmap(): colours of known values, reductions, percentile clipping, batch vs sample scale,
upsampling, PNG round trip, bad input, and no global matplotlib state."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

from propex.visualize import Picture, colorize, heatmap, reduce_channels

PIL = pytest.importorskip("PIL.Image")

RED, BLUE, WHITE = [255, 0, 0], [0, 0, 255], [255, 255, 255]


def test_signed_colours_red_positive_blue_negative_white_zero():
    a = torch.zeros(4, 4)
    a[0, 0], a[1, 1], a[2, 2] = 2.0, -2.0, 1.0
    pic = heatmap(a, clip_percentile=100)
    assert isinstance(pic, Picture) and pic.size == (4, 4) and pic.array.dtype == np.uint8
    assert pic.array[0, 0].tolist() == RED
    assert pic.array[1, 1].tolist() == BLUE
    assert pic.array[3, 3].tolist() == WHITE
    assert pic.array[2, 2].tolist() == [255, 128, 128]          # half of full scale: 255·(1 − 0.5) rounded
    assert pic.vmax == pytest.approx(2.0)


def test_builtin_signed_map_matches_matplotlib_bwr():
    matplotlib = pytest.importorskip("matplotlib")
    v = np.linspace(-1, 1, 101)
    ours = colorize(v, "signed").astype(int)
    ref = np.round(matplotlib.colormaps["bwr"]((v + 1) / 2)[:, :3] * 255).astype(int)
    assert np.abs(ours - ref).max() <= 2                       # bwr is a 256-entry lookup table


def test_positive_and_absolute_modes():
    a = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    pos = heatmap(a, mode="positive", clip_percentile=100).array
    assert pos[0, 0].tolist() == RED and pos[0, 1].tolist() == WHITE      # negative relevance not drawn
    ab = heatmap(a, mode="absolute", clip_percentile=100).array
    assert ab[0, 1].tolist() == ab[0, 0].tolist() == RED                 # |−1| = |1|
    assert ab[1, 0].tolist() == [255, 128, 128]


def test_reductions_against_hand_computed_values():
    a = torch.zeros(2, 1, 3)
    a[0, 0, 0], a[1, 0, 0] = 3.0, -4.0
    a[0, 0, 1], a[1, 0, 1] = -1.0, -1.0
    assert reduce_channels(a, "sum")[0].tolist() == [-1.0, -2.0, 0.0]
    assert reduce_channels(a, "abs")[0].tolist() == [7.0, 2.0, 0.0]
    assert reduce_channels(a, "l2")[0].tolist() == pytest.approx([5.0, 2 ** 0.5, 0.0])
    assert reduce_channels(a, "max_abs")[0].tolist() == [4.0, 1.0, 0.0]
    # the picture uses the reduced map: sum → pixel (0,0) is −1 of max 2: light blue
    pic = heatmap(a, reduce="sum", clip_percentile=100)
    assert pic.array[0, 1].tolist() == BLUE and pic.array[0, 0].tolist() == [128, 128, 255]


def test_percentile_clipping():
    a = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)
    pic = heatmap(a, clip_percentile=90)
    assert pic.vmax == pytest.approx(float(np.percentile(np.arange(1, 101), 90)))
    assert pic.array[9, 9].tolist() == RED and pic.array[9, 0].tolist() == RED       # 91, 100 are clipped
    assert pic.array[4, 4].tolist() != RED                                             # 45 is not
    g = 255 * (1 - 45 / pic.vmax)
    assert pic.array[4, 4].tolist() == [255, round(g), round(g)]


def test_batch_scale_vs_sample_scale():
    base = torch.zeros(1, 4, 4)
    base[0, 0, 0] = 1.0
    batch = torch.stack([base, 10 * base])                      # [2, 1, 4, 4]: the second is 10× stronger
    per_sample = heatmap(batch, scale="sample", clip_percentile=100)
    assert isinstance(per_sample, list) and len(per_sample) == 2
    assert np.array_equal(per_sample[0].array, per_sample[1].array)
    shared = heatmap(batch, scale="batch", clip_percentile=100)
    assert shared[0].vmax == shared[1].vmax == pytest.approx(10.0)
    assert shared[1].array[0, 0].tolist() == RED
    faint = shared[0].array[0, 0].astype(int)
    assert faint[0] == 255 and abs(faint[1] - 229.5) <= 0.5 and faint[1] == faint[2]     # 255 · (1 − 1/10)


def test_fixed_vmax_and_all_zero_map():
    a = torch.tensor([[1.0, -3.0]])
    pic = heatmap(a, vmax=2.0)
    assert pic.array[0, 0].tolist() == [255, 128, 128] and pic.array[0, 1].tolist() == BLUE
    zero = heatmap(torch.zeros(3, 5, 5))
    assert (zero.array == 255).all() and zero.vmax == 0.0


def test_upsampling_low_resolution_maps():
    cam = torch.rand(7, 7)
    pic = heatmap(cam, size=224)
    assert pic.array.shape == (224, 224, 3)
    blocks = heatmap(torch.tensor([[1.0, -1.0]]), size=(2, 4), interpolation="nearest", clip_percentile=100)
    assert blocks.array[:, :2].reshape(-1, 3).tolist() == [RED] * 4
    assert blocks.array[:, 2:].reshape(-1, 3).tolist() == [BLUE] * 4
    const = heatmap(torch.ones(3, 3), size=(9, 12), clip_percentile=100)
    assert (const.array == np.array(RED, dtype=np.uint8)).all()           # bilinear keeps a constant map
    cubic = heatmap(torch.randn(4, 4), size=16, interpolation="bicubic")
    assert cubic.size == (16, 16)


def test_picture_png_round_trip(tmp_path):
    pic = heatmap(torch.randn(3, 6, 5))
    path = pic.save(tmp_path / "sub" / "h.png")
    with PIL.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (5, 6)
        assert np.array_equal(np.asarray(im), pic.array)
    png = pic.to_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pic._repr_png_() == png
    uri = pic.data_uri()
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png
    with PIL.open(io.BytesIO(png)) as im:
        assert np.array_equal(np.asarray(im), pic.array)
    assert pic.scaled(3).size == (15, 18)
    assert "vmax" in repr(pic)


def test_accepts_numpy_and_explanations(digits_model):
    import propex
    exp = propex.explain(digits_model, torch.rand(2, 1, 16, 16), "saliency")
    pics = heatmap(exp)
    assert len(pics) == 2 and pics[0].size == (16, 16)
    assert np.array_equal(heatmap(exp.attributions[0].numpy()).array, pics[0].array)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduce"):
        heatmap(torch.ones(3, 2, 2), reduce="mean")
    with pytest.raises(ValueError, match="mode"):
        heatmap(torch.ones(2, 2), mode="diverging")
    with pytest.raises(ValueError, match="scale"):
        heatmap(torch.ones(2, 2), scale="global")
    with pytest.raises(ValueError, match="clip_percentile"):
        heatmap(torch.ones(2, 2), clip_percentile=0)
    with pytest.raises(ValueError, match=r"\[H, W\], \[C, H, W\]"):
        heatmap(torch.ones(1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        heatmap(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="vmax"):
        heatmap(torch.ones(2, 2), vmax=-1.0)
    with pytest.raises(ValueError, match="size"):
        heatmap(torch.ones(2, 2), size=(0, 3))
    with pytest.raises(TypeError, match="attributions"):
        heatmap("not a tensor")
    with pytest.raises(ValueError, match="uint8"):
        Picture(np.zeros((2, 2, 3), dtype=np.float32))


def test_named_matplotlib_colormap():
    pytest.importorskip("matplotlib")
    a = torch.tensor([[1.0, -1.0]])
    pic = heatmap(a, cmap="seismic", clip_percentile=100)
    import matplotlib
    expected = np.round(np.asarray(matplotlib.colormaps["seismic"]([1.0, 0.0]))[:, :3] * 255)
    assert np.abs(pic.array[0].astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="seismc.*seismic"):
        heatmap(a, cmap="seismc")


def test_no_pyplot_figures_and_rcparams_untouched(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from propex.evaluate import PerturbationCurve
    from propex.visualize import attribution_grid, curves, grid, overlay, text

    figs = plt.get_fignums()
    rc = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    x = torch.rand(2, 1, 8, 8)
    maps = heatmap(torch.randn(2, 1, 8, 8), cmap="bwr")
    grid([[x[0], maps[0]], [x[1], maps[1]]], row_labels=["a", "b"], col_labels=["x", "m"], title="t")
    overlay(x[0], torch.randn(4, 4))
    attribution_grid(x, {"m": torch.randn(2, 1, 8, 8)}, tmp_path / "g.png")
    curves({"m": PerturbationCurve(torch.rand(2, 5), torch.linspace(0, 1, 5), "morf", "deletion")})
    text(["a", "b"], [1.0, -1.0])
    assert plt.get_fignums() == figs
    assert dict(matplotlib.rcParams) == rc
    assert matplotlib.get_backend() == backend
