"""curves(): PerturbationCurve and (x, y) inputs, AUC in the legend, PNG output."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from propex.evaluate import PerturbationCurve
from propex.visualize import Picture, curves
from propex.visualize.plots import curve_points

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")


def test_auc_of_perturbation_curves_and_arrays():
    scores = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    c = PerturbationCurve(scores, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), "morf", "deletion")
    pic = curves({"lrp": c, "line": (np.linspace(0, 1, 11), np.linspace(0, 1, 11))}, title="t")
    assert isinstance(pic, Picture)
    assert pic.info["auc"]["lrp"] == pytest.approx(float(c.auc.mean()))         # (0.5 + 0.75) / 2
    assert pic.info["auc"]["lrp"] == pytest.approx(0.625)
    assert pic.info["auc"]["line"] == pytest.approx(0.5)
    assert pic.info["legend"] == ["lrp (AUC 0.625)", "line (AUC 0.5)"]
    with PIL.open(io.BytesIO(pic.to_png())) as im:
        assert im.size == (520, 360)


def test_mean_and_standard_error_of_several_samples():
    y = np.array([[1.0, 0.0], [3.0, 2.0]])
    xs, mean, sem, auc, metric = curve_points((np.array([0.0, 1.0]), y), "a")
    assert mean.tolist() == [2.0, 1.0] and auc == pytest.approx(1.5) and metric is None
    assert sem.tolist() == pytest.approx([np.sqrt(2) / np.sqrt(2)] * 2)


def test_default_labels_from_the_metric():
    c = PerturbationCurve(torch.rand(3, 5), torch.linspace(0, 1, 5), "morf", "insertion")
    pic = curves({"a": c, "b": c}, size=(200, 300))
    assert pic.info["metric"] == "insertion" and pic.size == (300, 200)
    assert pic.info["xlabel"] == "fraction of features inserted"


def test_bad_arguments():
    with pytest.raises(TypeError, match="non-empty mapping"):
        curves({})
    with pytest.raises(TypeError, match=r"curves\['a'\]"):
        curves({"a": 3})
    with pytest.raises(ValueError, match=r"curves\['a'\]"):
        curves({"a": (np.arange(3), np.arange(4))})
