"""Complexity metrics: sparseness (Gini), complexity (entropy), compressed heatmap size."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from propex.evaluate import complexity, compressed_size, sparseness


@pytest.fixture
def maps() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 1, 12, 12, generator=g, dtype=torch.float64)
    a = torch.randn(5, 1, 12, 12, generator=g, dtype=torch.float64) ** 3
    return x, a


def _quantus():
    quantus = pytest.importorskip("quantus")
    return quantus


def test_sparseness_closed_forms():
    x = torch.zeros(3, 1, 2, 2)
    a = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 5], [0, 0, 1, 1]]).reshape(3, 1, 2, 2)
    g = sparseness(None, x, a)
    # uniform -> 0; one feature of F -> (F-1)/F; two of four -> sum((2i-F-1) a_(i)) / (F sum a)
    assert torch.allclose(g, torch.tensor([0.0, 3 / 4, (3 * 1 + 5 * 1) / (4 * 2) - 0.5]), atol=1e-7)
    assert g[2] == pytest.approx(0.5)
    # scale invariant, sign ignored (abs=True), zero map -> 0
    assert torch.allclose(sparseness(None, x, -7 * a), g)
    assert sparseness(None, x[:1], torch.zeros(1, 1, 2, 2)).item() == 0.0


def test_sparseness_matches_quantus(maps):
    quantus = _quantus()
    x, a = maps
    metric = quantus.Sparseness(disable_warnings=True)     # abs=True, normalise by the batch-wide max
    ref = np.asarray(metric(model=None, x_batch=x.numpy(), y_batch=np.zeros(5, dtype=int), a_batch=a.numpy().copy()))
    ours = sparseness(None, x, a / a.abs().max(), eps=1e-7)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)
    # without Quantus' epsilon the difference stays below 1e-5 relative as well
    np.testing.assert_allclose(sparseness(None, x, a).numpy(), ref, rtol=1e-5)


def test_complexity_closed_forms():
    x = torch.zeros(3, 1, 2, 2)
    a = torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, -5], [0, 0, 1, 3]]).reshape(3, 1, 2, 2)
    c = complexity(None, x, a)
    p = torch.tensor([0.25, 0.75])
    assert torch.allclose(c, torch.tensor([math.log(4), 0.0, float(-(p * p.log()).sum())]), atol=1e-6)
    assert torch.isnan(complexity(None, x[:1], torch.zeros(1, 1, 2, 2))).all()


def test_complexity_matches_quantus(maps):
    quantus = _quantus()
    x, a = maps
    metric = quantus.Complexity(disable_warnings=True)
    ref = np.asarray(metric(model=None, x_batch=x.numpy(), y_batch=np.zeros(5, dtype=int), a_batch=a.numpy().copy()))
    np.testing.assert_allclose(complexity(None, x, a).numpy(), ref, rtol=1e-5)


def test_channel_reduced_maps_are_scored_as_given():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    m = torch.rand(2, 8, 8, generator=g)
    # a [N, H, W] map and its [N, 1, H, W] form agree; they are not repeated over the 3 channels
    assert torch.allclose(complexity(None, x, m), complexity(None, x, m[:, None]))
    assert torch.allclose(complexity(None, x, m), complexity(None, x[:, :1], m[:, None]))
    assert torch.allclose(sparseness(None, x, m), sparseness(None, x, m[:, None]))


def test_compressed_size_simple_maps_compress_better():
    pytest.importorskip("PIL")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 64, generator=g)
    a = torch.zeros(2, 1, 64, 64)
    a[0, 0, 20:40, 20:40] = 1.0                       # one blob
    a[1] = torch.randn(1, 64, 64, generator=g)        # noise
    png = compressed_size(None, x, a)
    jpeg = compressed_size(None, x, a, format="jpeg", quality=90)
    assert png.shape == (2,) and jpeg.shape == (2,)
    assert png[0] * 5 < png[1] and jpeg[0] * 2 < jpeg[1]
    # the size is that of a real PNG: decodable, with the rendered colours (white background, red blob)
    import io

    from PIL import Image

    from propex.evaluate.complexity import render_heatmap
    pixels = render_heatmap(a[0])
    assert pixels.shape == (64, 64, 3) and pixels.dtype == torch.uint8
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[30, 30].tolist() == [255, 0, 0]
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buf, format="PNG", compress_level=9)
    assert len(buf.getvalue()) == int(png[0])
    # negative relevance is blue; grey mode renders magnitudes
    assert render_heatmap(-a[0])[30, 30].tolist() == [0, 0, 255]
    assert render_heatmap(a[0], colour=False).shape == (64, 64)


def test_bad_input(maps):
    x, a = maps
    with pytest.raises(ValueError, match="does not match x"):
        sparseness(None, x, a[:, :, :6])
    with pytest.raises(ValueError, match="empty"):
        complexity(None, x[:0], a[:0])
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sparseness(None, x, bad)
    with pytest.raises(ValueError, match="format"):
        compressed_size(None, x, a, format="gif")
    with pytest.raises(ValueError, match="quality"):
        compressed_size(None, x, a, format="jpeg", quality=0)
    with pytest.raises(ValueError, match="2-D heatmaps"):
        compressed_size(None, x.reshape(5, -1), a.reshape(5, -1))
    with pytest.raises(TypeError, match="abs"):
        sparseness(None, x, a, abs="yes")
