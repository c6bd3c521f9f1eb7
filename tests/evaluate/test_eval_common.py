"""The shared validation and explainer resolution of propex.evaluate."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from propex.evaluate._common import (check_attributions, check_fraction, check_inputs, hashed_normal,
                                     hashed_uniform, resolve_explainer)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 4)).eval()


def test_check_attributions_shapes():
    x = torch.rand(2, 3, 6, 6)
    for shape in [(2, 3, 6, 6), (2, 1, 6, 6), (2, 6, 6)]:
        a = check_attributions(torch.rand(shape), x)
        assert a.shape == x.shape
    assert check_attributions(np.ones((2, 6, 6), dtype=np.float32), x, broadcast=False).shape == (2, 1, 6, 6)
    for shape in [(2, 2, 6, 6), (3, 3, 6, 6), (2, 36), (2, 1, 5, 6)]:
        with pytest.raises(ValueError, match="does not match x"):
            check_attributions(torch.rand(shape), x)
    with pytest.raises(ValueError, match="1 NaN"):
        check_attributions(torch.tensor([[float("nan")] + [0.0] * 35]).reshape(1, 6, 6), x[:1])
    with pytest.raises(ValueError, match="empty batch"):
        check_inputs(x[:0])
    with pytest.raises(ValueError, match="Inf"):
        check_inputs(torch.full((1, 3), float("inf")))
    with pytest.raises(TypeError, match="floating-point"):
        check_inputs(torch.ones(2, 3, dtype=torch.long))
    assert check_fraction(1, "fraction") == 1.0
    for bad in (0, 1.01, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="fraction"):
            check_fraction(bad, "fraction")


def test_resolve_explainer_forms():
    model = _model()
    x = torch.rand(2, 3, 6, 6)
    by_name = resolve_explainer("ig", n_steps=8)
    a = by_name(model, x, torch.tensor([0, 1]))
    assert a.shape == x.shape
    from propex.api import get_method
    by_class = resolve_explainer(get_method("integrated_gradients"), n_steps=8)
    torch.testing.assert_close(by_class(model, x, torch.tensor([0, 1])), a)
    inst = get_method("saliency")(model)
    assert resolve_explainer(inst)(model, x, 1).shape == x.shape

    def mine(m, inputs, target, scale=1.0):
        return scale * inputs
    f = resolve_explainer(mine, scale=2.0)
    torch.testing.assert_close(f(model, x, None), 2 * x)
    assert resolve_explainer(lambda m, i, t: i.numpy())(model, x, None).shape == x.shape
    with pytest.raises(TypeError, match="n_stepz"):
        resolve_explainer("ig", n_stepz=8)
    with pytest.raises(ValueError, match="not a known method"):
        resolve_explainer("no_such_method")
    with pytest.raises(TypeError, match="must return a tensor"):
        resolve_explainer(lambda m, i, t: "map")(model, x, None)
    with pytest.raises(TypeError, match="callable"):
        resolve_explainer(3)


def test_hashed_random_numbers():
    rows = torch.arange(64)
    u = hashed_uniform(0, rows, 512)
    assert u.shape == (64, 512) and 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    torch.testing.assert_close(hashed_uniform(0, rows[10:20], 512), u[10:20])    # depends on the row id only
    assert not torch.equal(hashed_uniform(1, rows, 512), u)
    g = hashed_normal(0, rows, 4096)
    assert abs(float(g.mean())) < 0.01 and abs(float(g.std()) - 1) < 0.01
