"""Tests for the packaged digits demo model and data loader."""

from __future__ import annotations

import importlib.util
import sys
from importlib.resources import files

import numpy as np
import pytest
import torch

from propex.models import (
    DIGITS_INPUT_SHAPE,
    DigitsCNN,
    load_digits_data,
    load_digits_model,
)
from propex.models.digits import DIGITS_CLASSES, preprocess_digits

requires_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn (propex[demo])"
)


@pytest.fixture(scope="module")
def model() -> DigitsCNN:
    return load_digits_model()


@pytest.fixture(scope="module")
def digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    pytest.importorskip("sklearn")
    return load_digits_data("test")


def test_packaged_model_loads_in_eval_mode(model: DigitsCNN) -> None:
    assert isinstance(model, DigitsCNN)
    assert not model.training
    assert all(not m.training for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_packaged_model_accuracy(model: DigitsCNN, digits_test_split) -> None:
    x, y = digits_test_split
    with torch.no_grad():
        acc = (model(x).argmax(dim=1) == y).float().mean().item()
    assert acc >= 0.97


def test_model_forward_shape(model: DigitsCNN) -> None:
    x = torch.rand(5, *DIGITS_INPUT_SHAPE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, len(DIGITS_CLASSES))
    assert torch.isfinite(out).all()


def test_named_layers_and_activations(model: DigitsCNN) -> None:
    names = dict(model.named_modules())
    assert isinstance(names["features.4"], torch.nn.AvgPool2d)
    assert isinstance(names["features.6"], torch.nn.SiLU)
    acts = [m for m in model.modules() if isinstance(m, torch.nn.SiLU)]
    assert len(acts) == len({id(m) for m in acts}) == 4
    

@requires_sklearn
@pytest.mark.parametrize("split, n", [("train", 1347), ("test", 450), ("all", 1797)])
def test_data_shapes_dtypes_range(split: str, n: int) -> None:
    x, y = load_digits_data(split)
    assert x.shape == (n, *DIGITS_INPUT_SHAPE)
    assert x.dtype == torch.float32
    assert y.shape == (n,)
    assert y.dtype == torch.int64
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert set(y.tolist()) == set(DIGITS_CLASSES)


def test_data_deterministic(digits_test_split) -> None:
    x2, y2 = load_digits_data("test")
    assert torch.equal(digits_test_split[0], x2)
    assert torch.equal(digits_test_split[1], y2)


def test_splits_partition_all(digits_test_split) -> None:
    x_tr, y_tr = load_digits_data("train")
    x_te, y_te = digits_test_split
    x_all, y_all = load_digits_data("all")
    assert len(x_tr) + len(x_te) == len(x_all)

    # Same multiset of images and labels: train + test is a permutation of all.
    def keys(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
        return sorted(zip(y.tolist(), map(tuple, x.flatten(1).tolist())))

    assert keys(torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te])) == keys(x_all, y_all)


@requires_sklearn
def test_bad_split_raises() -> None:
    with pytest.raises(ValueError, match="split") as info:
        load_digits_data("validation")
    assert "validation" in str(info.value)


def test_preprocess_range_and_shape() -> None:
    images = np.stack([np.zeros((8, 8)), np.full((8, 8), 16.0)])
    x = preprocess_digits(images)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.zeros(1, 16, 16))
    assert torch.allclose(x[1], torch.ones(1, 16, 16))


def test_weights_file_small() -> None:
    resource = files("propex.models").joinpath("digits_cnn.pt")
    assert resource.is_file()
    assert len(resource.read_bytes()) < 1_000_000


def test_missing_weights_path(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_digits_model(missing)


def test_explicit_weights_path(tmp_path, model: DigitsCNN) -> None:
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = load_digits_model(path)
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_missing_sklearn_names_demo_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"propex\[demo\]"):
        load_digits_data("test")


def test_import_does_not_load_sklearn() -> None:
    import subprocess

    code = "import sys, propex.models; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_demo_returns_model_and_test_split() -> None:
    pytest.importorskip("sklearn")
    from propex.models import load_demo, load_digits_data

    model, x, y = load_demo()
    x_test, y_test = load_digits_data("test")
    assert not model.training
    assert torch.equal(x, x_test) and torch.equal(y, y_test)
    assert (model(x).argmax(1) == y).float().mean() >= 0.97
